"""ARM ``Microsoft.MachineLearning/webServices`` routes (bearer tokens from the emulator's authority)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.arm import PROVIDER_PATH
from emulator.routes.common import base_url, call, emulator, json_body

SERVICE = "/subscriptions/{subscription}/resourceGroups/{resource_group}" + PROVIDER_PATH + "/webServices/{name}"
LOCATION = "/subscriptions/{subscription}" + PROVIDER_PATH + "/locations/{location}"
router = APIRouter()


def _authorize(request: Request, subscription: str) -> None:
    emulator(request).arm.authorize(
        request.query_params.get("api-version"), request.headers.get("authorization"), subscription
    )


@router.get(SERVICE, name="arm.webservice.get")
async def get_web_service(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.get, subscription, resource_group, name, base_url(request)))


@router.put(SERVICE, name="arm.webservice.put")
async def put_web_service(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    body = await json_body(request, arm=True)
    status, document, headers = await call(
        emulator(request).arm.put, subscription, resource_group, name, body, base_url(request)
    )
    return JSONResponse(document, status_code=status, headers=headers)


@router.patch(SERVICE, name="arm.webservice.patch")
async def patch_web_service(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    body = await json_body(request, arm=True)
    document, headers = await call(
        emulator(request).arm.patch, subscription, resource_group, name, body, base_url(request)
    )
    return JSONResponse(document, headers=headers)


@router.delete(SERVICE, name="arm.webservice.delete")
async def delete_web_service(request: Request, subscription: str, resource_group: str, name: str) -> Response:
    _authorize(request, subscription)
    headers = await call(emulator(request).arm.delete, subscription, resource_group, name, base_url(request))
    return Response(status_code=202, headers=headers)


@router.get(SERVICE + "/listKeys", name="arm.webservice.listkeys")
async def list_keys(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.list_keys, subscription, resource_group, name))


@router.get(
    "/subscriptions/{subscription}/resourceGroups/{resource_group}" + PROVIDER_PATH + "/webServices",
    name="arm.webservices.list",
)
async def list_in_group(request: Request, subscription: str, resource_group: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.list, subscription, resource_group, base_url(request)))


@router.get("/subscriptions/{subscription}" + PROVIDER_PATH + "/webServices", name="arm.webservices.list")
async def list_in_subscription(request: Request, subscription: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.list, subscription, None, base_url(request)))


@router.get(LOCATION + "/operationsStatus/{operation_id}", name="arm.asyncop.get")
async def get_operation(request: Request, subscription: str, location: str, operation_id: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.operation, subscription, operation_id))


@router.get(LOCATION + "/operationResults/{operation_id}", name="arm.asyncop.result")
async def get_operation_result(request: Request, subscription: str, location: str, operation_id: str) -> Response:
    _authorize(request, subscription)
    status, document, headers = await call(
        emulator(request).arm.operation_result, subscription, operation_id, base_url(request)
    )
    if document is None:
        return Response(status_code=status, headers=headers)
    return JSONResponse(document, status_code=status, headers=headers)
