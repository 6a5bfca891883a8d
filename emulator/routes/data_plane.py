"""BES and RRS (api-version 2.0) for classic endpoints and new (ARM) web services.

Classic: ``/workspaces/{ws}/services/{id}/...``; new: ``/subscriptions/{guid}/services/{id}/...``.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.backend import DataPlaneService, bearer, matches_any
from emulator.errors import api_error
from emulator.routes.common import base_url, call, emulator, json_body
from emulator.swagger import swagger_document

API_VERSION = "2.0"
router = APIRouter()


def _service(
    request: Request, scope: Literal["workspace", "subscription"], owner: str, service_id: str
) -> DataPlaneService:
    service = emulator(request).backend.data_plane(scope, owner, service_id)
    if not matches_any(bearer(request.headers.get("authorization")), service.keys):
        raise api_error("ScoreRequestUnauthorized", "Invalid credentials provided.")
    version = request.query_params.get("api-version")
    if version != API_VERSION:
        raise api_error("BadVersionCall", f"The api-version '{version}' is not supported; use '{API_VERSION}'.")
    return service


def _add_routes(prefix: str, scope: Literal["workspace", "subscription"]) -> None:
    base = prefix + "/{owner}/services/{service_id}"

    @router.post(base + "/jobs", name="bes.submit")
    async def submit(request: Request, owner: str, service_id: str) -> JSONResponse:
        service = _service(request, scope, owner, service_id)
        job_id = await call(emulator(request).batch.submit, service, await json_body(request))
        return JSONResponse(job_id)  # a JSON string: the quoted job id

    @router.post(base + "/jobs/{job_id}/start", name="bes.start")
    async def start(request: Request, owner: str, service_id: str, job_id: str) -> Response:
        service = _service(request, scope, owner, service_id)
        await call(emulator(request).batch.start, service, job_id)
        return Response(status_code=200)

    @router.get(base + "/jobs/{job_id}", name="bes.status")
    async def status(request: Request, owner: str, service_id: str, job_id: str) -> JSONResponse:
        service = _service(request, scope, owner, service_id)
        return JSONResponse(await call(emulator(request).batch.status, service, job_id))

    @router.delete(base + "/jobs/{job_id}", name="bes.delete")
    async def delete(request: Request, owner: str, service_id: str, job_id: str) -> Response:
        service = _service(request, scope, owner, service_id)
        await call(emulator(request).batch.cancel, service, job_id)
        return Response(status_code=200)

    @router.post(base + "/execute", name="rrs.execute")
    async def execute(request: Request, owner: str, service_id: str) -> JSONResponse:
        service = _service(request, scope, owner, service_id)
        query = request.query_params
        swagger = query.get("format", "").lower() == "swagger"
        details = query.get("details", "").lower() == "true"
        body = await json_body(request)
        return JSONResponse(
            await call(emulator(request).scoring.execute, service, body, swagger=swagger, details=details)
        )

    @router.get(base + "/swagger.json", name="dataplane.swagger")
    async def swagger(request: Request, owner: str, service_id: str) -> JSONResponse:
        backend = emulator(request).backend
        service = backend.data_plane(scope, owner, service_id)
        model = backend.model(service.model_id) if service.model_id else None
        return JSONResponse(swagger_document(service, backend.data_plane_url(service, base_url(request)), model))


_add_routes("/workspaces", "workspace")
_add_routes("/subscriptions", "subscription")
