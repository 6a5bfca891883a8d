"""ARM ``Microsoft.MachineLearning/webServices`` routes (bearer tokens from the emulator's authority)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.routes.common import call, emulator, json_body

PROVIDER = "/providers/Microsoft.MachineLearning"
SERVICE = "/subscriptions/{subscription}/resourceGroups/{resource_group}" + PROVIDER + "/webServices/{name}"
router = APIRouter()


def _authorize(request: Request, subscription: str) -> None:
    emulator(request).arm.authorize(
        request.query_params.get("api-version"), request.headers.get("authorization"), subscription
    )


@router.get(SERVICE, name="arm.webservice.get")
async def get_web_service(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.get, subscription, resource_group, name))


@router.put(SERVICE, name="arm.webservice.put")
async def put_web_service(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    body = await json_body(request, arm=True)
    status, document, operation_url = await call(emulator(request).arm.put, subscription, resource_group, name, body)
    return JSONResponse(document, status_code=status, headers={"Azure-AsyncOperation": operation_url})


@router.patch(SERVICE, name="arm.webservice.patch")
async def patch_web_service(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    body = await json_body(request, arm=True)
    document, operation_url = await call(emulator(request).arm.patch, subscription, resource_group, name, body)
    return JSONResponse(document, headers={"Azure-AsyncOperation": operation_url})


@router.delete(SERVICE, name="arm.webservice.delete")
async def delete_web_service(request: Request, subscription: str, resource_group: str, name: str) -> Response:
    _authorize(request, subscription)
    return Response(status_code=await call(emulator(request).arm.delete, subscription, resource_group, name))


@router.get(SERVICE + "/listKeys", name="arm.webservice.listkeys")
async def list_keys(request: Request, subscription: str, resource_group: str, name: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.list_keys, subscription, resource_group, name))


@router.get(
    "/subscriptions/{subscription}/resourceGroups/{resource_group}" + PROVIDER + "/webServices",
    name="arm.webservices.list",
)
async def list_in_group(request: Request, subscription: str, resource_group: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.list, subscription, resource_group))


@router.get("/subscriptions/{subscription}" + PROVIDER + "/webServices", name="arm.webservices.list")
async def list_in_subscription(request: Request, subscription: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.list, subscription, None))


@router.get(
    "/subscriptions/{subscription}" + PROVIDER + "/locations/{location}/operationsStatus/{operation_id}",
    name="arm.asyncop.get",
)
async def get_operation(request: Request, subscription: str, location: str, operation_id: str) -> JSONResponse:
    _authorize(request, subscription)
    return JSONResponse(await call(emulator(request).arm.operation, subscription, operation_id))
