"""The ASGI application: every plane's routes, the error envelope, fault injection, request log."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.arm import ArmService
from emulator.authority import Authority
from emulator.backend import Backend, stored_model_uri
from emulator.batch import BatchService
from emulator.control import Control, FaultAction
from emulator.errors import EmulatorError, aad_error, api_error, arm_error, is_arm_path
from emulator.management import ManagementService
from emulator.routes import admin, arm, authority, data_plane, management
from emulator.scoring import ScoringService

log = logging.getLogger("emulator.access")

# Route scoped names -> plane, for the envelope of injected errors.
_ARM = "arm."
_AUTHORITY = "authority."
_ADMIN = "admin."


@dataclass
class Emulator:
    """Everything the routes reach through ``request.app.state.emulator``."""

    backend: Backend
    control: Control
    batch: BatchService
    scoring: ScoringService
    management: ManagementService
    arm: ArmService
    authority: Authority
    cert_path: Path
    data_dir: Path | None

    @classmethod
    def build(cls, backend: Backend, cert_path: Path, data_dir: Path | None) -> Emulator:
        authority_service = Authority(backend)
        return cls(
            backend=backend,
            control=backend.control,
            batch=BatchService(backend),
            scoring=ScoringService(backend),
            management=ManagementService(backend),
            arm=ArmService(backend, authority_service),
            authority=authority_service,
            cert_path=cert_path,
            data_dir=data_dir,
        )

    def reset(self) -> None:
        self.batch.cancel_all()
        self.backend.reset()
        self.control.reset()

    def shutdown(self) -> None:
        self.batch.shutdown()
        self.arm.shutdown()
        self.backend.save()

    def state_dump(self) -> dict[str, Any]:
        """Seeded ids, URLs and keys for developers and tests (an admin route: it may show keys)."""
        backend = self.backend
        public = backend.urls.public
        with backend.lock:
            state = backend.state.model_copy(deep=True)
        workspaces = []
        for workspace in state.workspaces.values():
            services = []
            for service in workspace.web_services.values():
                management_url = f"{public}/workspaces/{workspace.id}/webservices/{service.id}"
                endpoints = [
                    {
                        "name": endpoint.name,
                        "service_id": endpoint.service_id,
                        "api_location": f"{public}/workspaces/{workspace.id}/services/{endpoint.service_id}",
                        "management_url": f"{management_url}/endpoints/{endpoint.name}",
                        "primary_key": endpoint.primary_key,
                        "secondary_key": endpoint.secondary_key,
                        "model_id": endpoint.model_id,
                    }
                    for endpoint in service.endpoints.values()
                ]
                services.append(
                    {
                        "id": service.id,
                        "name": service.name,
                        "kind": service.kind.value,
                        "experiment": service.experiment,
                        "trained_model_resource": backend.experiment(service.experiment).trained_model_resource,
                        "management_url": management_url,
                        "endpoints": endpoints,
                    }
                )
            workspaces.append(
                {
                    "id": workspace.id,
                    "name": workspace.name,
                    "authorization_token": workspace.authorization_token,
                    "web_services": services,
                }
            )
        arm_services = [
            {
                "subscription": s.subscription,
                "resource_group": s.resource_group,
                "name": s.name,
                "kind": s.kind.value,
                "experiment": s.experiment,
                "resource_url": f"{public}{s.resource_id}",
                "data_plane_id": s.data_plane_id,
                "api_location": f"{public}/subscriptions/{s.subscription}/services/{s.data_plane_id}",
                "primary_key": s.primary_key,
                "secondary_key": s.secondary_key,
                "storage_account": s.storage_account_name,
                "provisioning_state": s.provisioning_state,
                "model_id": s.model_id,
                "model_uri": stored_model_uri(s.model_id) if s.model_id else None,
            }
            for s in state.arm_services.values()
        ]
        tenants = [
            {
                "id": tenant.id,
                "authority": backend.urls.tls,
                "service_principals": [p.model_dump() for p in tenant.service_principals],
            }
            for tenant in backend.seed.tenants
        ]
        experiments = {
            key: {
                "title": e.title,
                "task": e.task.value,
                "dataset": e.dataset,
                "features": e.feature_names,
                "label": e.label,
                "classes": list(e.classes) if e.classes else None,
                "learner": e.learner.value,
                "global_parameters": [p.model_dump() for p in e.global_parameters],
                "input": e.input_name,
                "outputs": {"model": e.model_output, "evaluation": e.evaluation_output, "scoring": e.scoring_output},
                "trained_model_resource": e.trained_model_resource,
            }
            for key, e in backend.seed.experiments.items()
        }
        return {
            "public_url": public,
            "tls_url": backend.urls.tls,
            "cert_path": str(self.cert_path),
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "persistent": backend.storage.directory is not None,
            "storage_accounts": [a.model_dump() for a in backend.seed.storage_accounts],
            "tenants": tenants,
            "subscriptions": [s.model_dump() for s in backend.seed.subscriptions],
            "workspaces": workspaces,
            "arm_web_services": arm_services,
            "experiments": experiments,
            "jobs": [
                {"id": j.id, "service_id": j.service_id, "status": j.status.value, "details": j.details}
                for j in state.jobs.values()
            ],
            "settings": self.control.knobs.model_dump(),
        }

    # -- deep links into the state view (what a task's extra link opens); no keys, no SAS ------------

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        """One BES job: its service, status, times, parameters and blob locations."""
        with self.backend.lock:
            job = self.backend.state.jobs.get(job_id)
            job = job.model_copy(deep=True) if job else None
        if job is None:
            return None
        state = self.state_dump()
        services = [
            {"name": s["name"], "kind": s["kind"], "endpoint": e["name"], "api_location": e["api_location"]}
            for w in state["workspaces"]
            for s in w["web_services"]
            for e in s["endpoints"]
            if e["service_id"] == job.service_id
        ] + [
            {"name": s["name"], "kind": s["kind"], "api_location": s["api_location"]}
            for s in state["arm_web_services"]
            if s["data_plane_id"] == job.service_id
        ]

        def where(blob: Any) -> str:
            return f"{blob.account_url.rstrip('/')}/{blob.container}/{blob.blob}"

        return {
            "id": job.id,
            "service_id": job.service_id,
            "service": services[0] if services else None,
            "experiment": job.experiment,
            "status": job.status.value,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "ended_at": job.ended_at.isoformat() if job.ended_at else None,
            "details": job.details,
            "global_parameters": job.global_parameters,
            "inputs": {name: where(blob) for name, blob in job.inputs.items()},
            "outputs": {name: where(blob) for name, blob in job.outputs.items()},
        }

    def endpoint_view(self, workspace_id: str, service_id: str, name: str) -> dict[str, Any] | None:
        """One classic endpoint, with its workspace and web service, and the model it serves."""
        public = self.backend.urls.public
        with self.backend.lock:
            workspace = self.backend.state.workspaces.get(workspace_id)
            service = workspace.web_services.get(service_id) if workspace else None
            endpoint = service.endpoints.get(name) if service else None
            if workspace is None or service is None or endpoint is None:
                return None
            location = endpoint.model_location
            return {
                "workspace": {"id": workspace.id, "name": workspace.name},
                "web_service": {
                    "id": service.id,
                    "name": service.name,
                    "kind": service.kind.value,
                    "experiment": service.experiment,
                },
                "endpoint": {
                    "name": endpoint.name,
                    "service_id": endpoint.service_id,
                    "created_at": endpoint.created_at.isoformat(),
                    "api_location": f"{public}/workspaces/{workspace.id}/services/{endpoint.service_id}",
                    "management_url": f"{public}/workspaces/{workspace.id}/webservices/{service.id}/endpoints/{name}",
                },
                # What it serves, as its management API shows it (``Resources[].Location``, no SAS).
                "model_uri": (
                    f"{location.base_location}{location.relative_location.lstrip('/')}"
                    if location
                    else (stored_model_uri(endpoint.model_id) if endpoint.model_id else None)
                ),
            }

    def arm_service_view(self, resource_id: str) -> dict[str, Any] | None:
        """One Resource Manager web service, by resource id (case-insensitive, as ARM ids are)."""
        public = self.backend.urls.public
        for service in self.state_dump()["arm_web_services"]:
            if service["resource_url"].lower() == f"{public}{resource_id}".lower():
                return _without_keys(service)
        return None


def _without_keys(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("primary_key", "secondary_key")}


def _route_name(routes: list[BaseRoute], scope: Scope) -> str | None:
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "name", None)
    return None


def _allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.PARTIAL:  # the path matches, the method does not
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _injected_error(route: str | None, action: FaultAction) -> EmulatorError:
    status = action.status
    headers = {"Retry-After": str(action.retry_after_seconds)} if action.retry_after_seconds is not None else None
    message = f"Injected fault: HTTP {status}."
    if route and route.startswith(_ARM):
        error = arm_error(status, "TooManyRequests" if status == 429 else "InternalServerError", message)
    elif route and route.startswith(_AUTHORITY):
        error = aad_error(status, "temporarily_unavailable", message, 50196)
    else:
        detail = {429: "TooManyRequests", 503: "RequestThrottled"}.get(status, "InternalError")
        error = api_error(detail, message)
        error.status = status
    error.headers.update(headers or {})
    return error


class EmulatorMiddleware:
    """Names each request's route, applies injected faults, logs it (path only, never the query)."""

    def __init__(self, app: ASGIApp, control: Control, routes: list[BaseRoute]) -> None:
        self.app = app
        self.control = control
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_name(self.routes, scope)
        method, path = scope["method"], scope["path"]
        started = time.monotonic()
        status: int | None = None
        request_id = str(uuid.uuid4())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-ms-request-id", request_id.encode())]
            await send(message)

        action = None
        if not (route or "").startswith(_ADMIN):
            action = self.control.fault_for(route, method, path)
        try:
            if action is None or action.kind == "delay":
                if action is not None:
                    await asyncio.sleep(action.delay_seconds)
                await self.app(scope, receive, send_with_id)
            elif action.kind == "drop":
                await self._drop(scope)
            elif action.kind == "malformed":
                # A 200 whose body is not JSON although it says so (a broken gateway).
                broken = Response(b"<html><body>Bad Gateway</body></html>", media_type="application/json")
                await broken(scope, receive, send_with_id)
            else:
                error = _injected_error(route, action)
                response = JSONResponse(error.body, status_code=error.status, headers=error.headers)
                await response(scope, receive, send_with_id)
        finally:
            self.control.log_request(route, method, path, status, time.monotonic() - started)
            log.info("%s %s %s -> %s", route or "-", method, path, status if status is not None else "dropped")

    @staticmethod
    async def _drop(scope: Scope) -> None:
        transport = scope.get("emulator.transport")
        if transport is None:
            raise RuntimeError("dropping a connection needs the emulator's HTTP protocol")
        transport.close()
        # Let the server notice the closed connection before the app returns (no 500 is sent).
        for _ in range(3):
            await asyncio.sleep(0)


def create_app(emulator: Emulator) -> ASGIApp:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, title="Azure ML Studio (classic) emulator")
    app.state.emulator = emulator
    for router in (admin.router, data_plane.router, management.router, arm.router, authority.router):
        app.include_router(router)

    @app.exception_handler(EmulatorError)
    async def emulator_error(request: Request, exc: EmulatorError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = request.url.path
        not_allowed = exc.status_code == 405
        if is_arm_path(path) and not_allowed:
            error = arm_error(405, "MethodNotAllowed", f"The {request.method} method is not allowed on {path}.")
        elif is_arm_path(path):
            error = arm_error(404, "NotFound", f"No resource at {path}.")
        elif not_allowed:
            error = api_error("MethodNotAllowed", f"{request.method} is not supported on {path}.")
        else:
            error = api_error("ResourceNotFound", f"No resource at {path}.")
        if not_allowed:  # every method the path has a route for (Starlette's Allow names one route's)
            error.headers["Allow"] = ", ".join(_allowed_methods(app.router.routes, request.scope))
        return JSONResponse(error.body, status_code=error.status, headers=error.headers)

    return EmulatorMiddleware(app, emulator.control, app.router.routes)
