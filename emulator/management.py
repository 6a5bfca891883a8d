"""Classic web service management (``management.azureml.net``): web services and endpoints.

Credentials: the workspace authorization token works everywhere; an endpoint's own key works for
that endpoint; any endpoint key of a web service works for that service's service-level routes.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from emulator import learning
from emulator.backend import STORED_MODEL_SCHEME, bearer, matches_any, new_key, stored_model_id
from emulator.catalog import WebServiceKind
from emulator.errors import api_error
from emulator.state import ClassicEndpoint, ClassicWebService, ModelLocation, Workspace, iso, utc_now
from emulator.storage import BlobReferenceError, BlobTarget, blob_from_reference

if TYPE_CHECKING:
    from emulator.backend import Backend

DEFAULT_ENDPOINT = "default"
_ENDPOINT_NAME = re.compile(r"[a-z0-9]{1,24}")
_PUT_MEMBERS = {"Description", "ThrottleLevel", "MaxConcurrentCalls", "PreventUpdate", "WebServiceId", "EndpointName"}


def _unauthorized() -> Exception:
    return api_error("ManagementRequestUnauthorized", "Invalid credentials provided.")


class ManagementService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # --- lookups and auth (call with the backend lock held) -----------------------------------

    def _workspace(self, workspace_id: str, authorization: str | None, *, token_only: bool = True) -> Workspace:
        workspace = self.backend.state.workspaces.get(workspace_id)
        if workspace is None:
            raise api_error("WorkspaceNotFound", f"Workspace '{workspace_id}' was not found.")
        if token_only and not matches_any(bearer(authorization), [workspace.authorization_token]):
            raise _unauthorized()
        return workspace

    def _service(self, workspace_id: str, service_id: str, authorization: str | None) -> ClassicWebService:
        workspace = self._workspace(workspace_id, authorization, token_only=False)
        service = workspace.web_services.get(service_id)
        if service is None:
            raise api_error("WebServiceNotFound", f"Web service '{service_id}' was not found in workspace.")
        keys = [workspace.authorization_token]
        for endpoint in service.endpoints.values():
            keys += [endpoint.primary_key, endpoint.secondary_key]
        if not matches_any(bearer(authorization), keys):
            raise _unauthorized()
        return service

    def _endpoint(
        self, workspace_id: str, service_id: str, name: str, authorization: str | None
    ) -> tuple[ClassicWebService, ClassicEndpoint]:
        workspace = self._workspace(workspace_id, authorization, token_only=False)
        service = workspace.web_services.get(service_id)
        if service is None:
            raise api_error("WebServiceNotFound", f"Web service '{service_id}' was not found in workspace.")
        endpoint = service.endpoints.get(name)
        if endpoint is None:
            raise api_error("EndpointNotFound", f"Endpoint '{name}' was not found in web service '{service.name}'.")
        if not matches_any(
            bearer(authorization), [workspace.authorization_token, endpoint.primary_key, endpoint.secondary_key]
        ):
            raise _unauthorized()
        return service, endpoint

    # --- representations -----------------------------------------------------------------------

    @staticmethod
    def _service_json(service: ClassicWebService) -> dict[str, Any]:
        return {
            "Id": service.id,
            "Name": service.name,
            "Description": service.description,
            "CreationTime": iso(service.created_at),
            "WorkspaceId": service.workspace_id,
            "DefaultEndpointName": DEFAULT_ENDPOINT,
            "EndpointCount": len(service.endpoints),
        }

    def _endpoint_json(self, service: ClassicWebService, endpoint: ClassicEndpoint) -> dict[str, Any]:
        urls = self.backend.urls
        management = (
            f"{urls.public}/workspaces/{service.workspace_id}/webservices/{service.id}/endpoints/{endpoint.name}"
        )
        resources = []
        if service.kind is WebServiceKind.PREDICTIVE:
            location = endpoint.model_location
            if location is None and endpoint.model_id is not None:
                location = ModelLocation(
                    base_location=STORED_MODEL_SCHEME, relative_location=f"{endpoint.model_id}.ilearner"
                )
            resources.append(
                {
                    "Name": self.backend.experiment(service.experiment).trained_model_resource,
                    "Kind": "TrainedModel",
                    # The model's location without any SAS: a SAS is a secret and not needed to read this.
                    "Location": {
                        "BaseLocation": location.base_location if location else None,
                        "RelativeLocation": location.relative_location if location else None,
                        "SasBlobToken": None,
                    },
                }
            )
        return {
            "Name": endpoint.name,
            "Description": endpoint.description,
            "CreationTime": iso(endpoint.created_at),
            "WebServiceId": service.id,
            "WorkspaceId": service.workspace_id,
            "HelpLocation": f"{management}/help",
            "PrimaryKey": endpoint.primary_key,
            "SecondaryKey": endpoint.secondary_key,
            "ApiLocation": f"{urls.public}/workspaces/{service.workspace_id}/services/{endpoint.service_id}",
            "Version": "2014-09-01",
            "PreventUpdate": endpoint.prevent_update,
            "SampleDataEnabled": False,
            "ExperimentLocation": f"{urls.public}/workspaces/{service.workspace_id}/experiments/{service.experiment}",
            "MaxConcurrentCalls": endpoint.max_concurrent_calls,
            "DiagnosticsTraceLevel": "None",
            "ThrottleLevel": endpoint.throttle_level,
            "Resources": resources,
        }

    # --- operations ----------------------------------------------------------------------------

    def list_web_services(self, workspace_id: str, authorization: str | None) -> list[dict[str, Any]]:
        with self.backend.lock:
            workspace = self._workspace(workspace_id, authorization)
            return [self._service_json(service) for service in workspace.web_services.values()]

    def get_web_service(self, workspace_id: str, service_id: str, authorization: str | None) -> dict[str, Any]:
        with self.backend.lock:
            return self._service_json(self._service(workspace_id, service_id, authorization))

    def delete_web_service(self, workspace_id: str, service_id: str, authorization: str | None) -> None:
        with self.backend.lock:
            self._workspace(workspace_id, authorization)
            service = self._service(workspace_id, service_id, authorization)
            del self.backend.state.workspaces[workspace_id].web_services[service.id]
            self.backend.save()

    def list_endpoints(self, workspace_id: str, service_id: str, authorization: str | None) -> list[dict[str, Any]]:
        with self.backend.lock:
            service = self._service(workspace_id, service_id, authorization)
            return [self._endpoint_json(service, endpoint) for endpoint in service.endpoints.values()]

    def get_endpoint(self, workspace_id: str, service_id: str, name: str, authorization: str | None) -> dict[str, Any]:
        with self.backend.lock:
            return self._endpoint_json(*self._endpoint(workspace_id, service_id, name, authorization))

    def put_endpoint(
        self, workspace_id: str, service_id: str, name: str, body: Any, authorization: str | None
    ) -> dict[str, Any]:
        """Add or update an endpoint (AddOrUpdate)."""
        if not _ENDPOINT_NAME.fullmatch(name):
            raise api_error("InvalidEndpointName", "Endpoint names are 1-24 lowercase letters and digits.")
        if not isinstance(body, dict):
            raise api_error("RequestBodyInvalid", "The request body must be a JSON object.")
        if unknown := sorted(set(body) - _PUT_MEMBERS):
            raise api_error("RequestBodyInvalid", f"Unknown member(s) {unknown}; expected {sorted(_PUT_MEMBERS)}.")
        if body.get("EndpointName") not in (None, name):
            raise api_error("RequestBodyInvalid", "'EndpointName' does not match the endpoint in the URL.")
        throttle = body.get("ThrottleLevel", "Low")
        if throttle not in ("Low", "High"):
            raise api_error("RequestBodyInvalid", "'ThrottleLevel' must be 'Low' or 'High'.")
        calls = body.get("MaxConcurrentCalls")
        if calls is not None and (not isinstance(calls, int) or isinstance(calls, bool) or not 1 <= calls <= 200):
            raise api_error("RequestBodyInvalid", "'MaxConcurrentCalls' must be an integer from 1 to 200.")
        # Low throttling pins concurrency at 4; High allows 1-200 (portal default 20).
        max_calls = 4 if throttle == "Low" else (calls or 20)
        with self.backend.lock:
            service = self._service(workspace_id, service_id, authorization)
            endpoint = service.endpoints.get(name)
            if endpoint is None:
                default = service.endpoints[DEFAULT_ENDPOINT]
                endpoint = ClassicEndpoint(
                    name=name,
                    service_id=uuid.uuid4().hex,
                    created_at=utc_now(),
                    primary_key=new_key(),
                    secondary_key=new_key(),
                    model_id=default.model_id,
                    model_location=default.model_location,
                )
                service.endpoints[name] = endpoint
            if "Description" in body:
                endpoint.description = str(body["Description"] or "")
            endpoint.throttle_level = throttle
            endpoint.max_concurrent_calls = max_calls
            endpoint.prevent_update = bool(body.get("PreventUpdate", endpoint.prevent_update))
            self.backend.save()
            return self._endpoint_json(service, endpoint)

    def delete_endpoint(self, workspace_id: str, service_id: str, name: str, authorization: str | None) -> None:
        with self.backend.lock:
            service, endpoint = self._endpoint(workspace_id, service_id, name, authorization)
            if endpoint.name == DEFAULT_ENDPOINT:
                raise api_error("CannotDeleteDefaultEndpoint", "The default endpoint cannot be deleted.")
            del service.endpoints[endpoint.name]
            self.backend.save()

    def patch_endpoint(
        self, workspace_id: str, service_id: str, name: str, body: Any, authorization: str | None
    ) -> None:
        """Swap the endpoint's trained model (Update Resource); the old one serves on any failure."""
        with self.backend.lock:
            service, endpoint = self._endpoint(workspace_id, service_id, name, authorization)
            experiment = self.backend.experiment(service.experiment)
        if service.kind is not WebServiceKind.PREDICTIVE:
            raise api_error("InvalidWebServiceResources", "This web service has no updatable resources.")
        if endpoint.name == DEFAULT_ENDPOINT:
            raise api_error(
                "InvalidWebServiceResources",
                "The default endpoint's resources cannot be updated; add a non-default endpoint and patch it.",
            )
        resources = body.get("Resources") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) != {"Resources"} or not isinstance(resources, list) or not resources:
            raise api_error("RequestBodyInvalid", 'The body must be {"Resources": [{"Name": ..., "Location": ...}]}.')
        updatable = experiment.trained_model_resource
        for resource in resources:
            if not isinstance(resource, dict) or resource.get("Name") != updatable:
                given = resource.get("Name") if isinstance(resource, dict) else resource
                raise api_error(
                    "InvalidWebServiceResources",
                    f"'{given}' is not an updatable resource of this endpoint; updatable: ['{updatable}'].",
                )
        location = resources[-1].get("Location")
        source: BlobTarget | str
        try:
            stored = None
            if isinstance(location, dict) and str(location.get("BaseLocation", "")).startswith(STORED_MODEL_SCHEME):
                stored = stored_model_id(f"{location['BaseLocation']}{location.get('RelativeLocation', '')}")
            source = stored or blob_from_reference(location, f"Resource '{updatable}' Location")
            model_id = self.backend.install_model(source, experiment)
        except BlobReferenceError as exc:
            raise api_error(exc.code, str(exc)) from exc
        except learning.ModelFormatError as exc:
            raise api_error("IncompatibleModel", str(exc)) from exc
        with self.backend.lock:
            _, endpoint = self._endpoint(workspace_id, service_id, name, authorization)
            endpoint.model_id = model_id
            endpoint.model_location = (
                ModelLocation(base_location=source.base_location, relative_location=source.relative_location)
                if isinstance(source, BlobTarget)
                else None
            )
            self.backend.save()

    def refresh_endpoint(
        self, workspace_id: str, service_id: str, name: str, body: Any, authorization: str | None
    ) -> bool:
        """Copy the default endpoint's graph (and model, with OverwriteResources); False = unchanged."""
        if body is not None and not isinstance(body, dict):
            raise api_error("RequestBodyInvalid", 'The body must be {"OverwriteResources": "True"|"False"}.')
        overwrite = str((body or {}).get("OverwriteResources", "False")).lower() == "true"
        with self.backend.lock:
            service, endpoint = self._endpoint(workspace_id, service_id, name, authorization)
            if endpoint.name == DEFAULT_ENDPOINT:
                raise api_error("CannotRefreshDefaultEndpoint", "The default endpoint cannot be refreshed.")
            default = service.endpoints[DEFAULT_ENDPOINT]
            # Graphs never change in the emulator, so only the model can differ.
            if not overwrite or endpoint.model_id == default.model_id:
                return False
            endpoint.model_id = default.model_id
            endpoint.model_location = default.model_location
            self.backend.save()
            return True
