"""Classic management plane: ``/workspaces/{ws}/webservices[/{id}[/endpoints[/{name}[/refresh]]]]``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.routes.common import call, emulator, json_body

BASE = "/workspaces/{workspace_id}/webservices"
router = APIRouter()


def _auth(request: Request) -> str | None:
    return request.headers.get("authorization")


@router.get(BASE, name="mgmt.webservices.list")
async def list_web_services(request: Request, workspace_id: str) -> JSONResponse:
    return JSONResponse(await call(emulator(request).management.list_web_services, workspace_id, _auth(request)))


@router.get(BASE + "/{service_id}", name="mgmt.webservice.get")
async def get_web_service(request: Request, workspace_id: str, service_id: str) -> JSONResponse:
    management = emulator(request).management
    return JSONResponse(await call(management.get_web_service, workspace_id, service_id, _auth(request)))


@router.delete(BASE + "/{service_id}", name="mgmt.webservice.delete")
async def delete_web_service(request: Request, workspace_id: str, service_id: str) -> Response:
    await call(emulator(request).management.delete_web_service, workspace_id, service_id, _auth(request))
    return Response(status_code=200)


@router.get(BASE + "/{service_id}/endpoints", name="mgmt.endpoints.list")
async def list_endpoints(request: Request, workspace_id: str, service_id: str) -> JSONResponse:
    management = emulator(request).management
    return JSONResponse(await call(management.list_endpoints, workspace_id, service_id, _auth(request)))


@router.get(BASE + "/{service_id}/endpoints/{name}", name="mgmt.endpoint.get")
async def get_endpoint(request: Request, workspace_id: str, service_id: str, name: str) -> JSONResponse:
    management = emulator(request).management
    return JSONResponse(await call(management.get_endpoint, workspace_id, service_id, name, _auth(request)))


@router.put(BASE + "/{service_id}/endpoints/{name}", name="mgmt.endpoint.put")
async def put_endpoint(request: Request, workspace_id: str, service_id: str, name: str) -> JSONResponse:
    body = await json_body(request)
    management = emulator(request).management
    return JSONResponse(await call(management.put_endpoint, workspace_id, service_id, name, body or {}, _auth(request)))


@router.patch(BASE + "/{service_id}/endpoints/{name}", name="mgmt.endpoint.patch")
async def patch_endpoint(request: Request, workspace_id: str, service_id: str, name: str) -> Response:
    body = await json_body(request)
    await call(emulator(request).management.patch_endpoint, workspace_id, service_id, name, body, _auth(request))
    return Response(status_code=200)


@router.delete(BASE + "/{service_id}/endpoints/{name}", name="mgmt.endpoint.delete")
async def delete_endpoint(request: Request, workspace_id: str, service_id: str, name: str) -> Response:
    await call(emulator(request).management.delete_endpoint, workspace_id, service_id, name, _auth(request))
    return Response(status_code=200)


@router.post(BASE + "/{service_id}/endpoints/{name}/refresh", name="mgmt.endpoint.refresh")
async def refresh_endpoint(request: Request, workspace_id: str, service_id: str, name: str) -> Response:
    body = await json_body(request)
    management = emulator(request).management
    changed = await call(management.refresh_endpoint, workspace_id, service_id, name, body, _auth(request))
    return Response(status_code=200 if changed else 304)
