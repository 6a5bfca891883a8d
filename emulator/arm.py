"""ARM ``Microsoft.MachineLearning/webServices`` (api-version 2017-01-01; 2016-05-01-preview read alike).

PUT and PATCH are long-running: they answer at once with ``provisioningState: Provisioning`` and an
``Azure-AsyncOperation`` URL, and a worker then loads the graph's ``[trained model]`` asset (read
with the service's storage account key, or from the emulator's own model store for ``aml://``
URIs). On success the service scores with the new model; on failure the previous definition and
model are restored, the service shows ``provisioningState: Failed`` and the operation's
``errorInfo`` says why. DELETE removes the service at once and answers 202 with an operation
that ends ``Succeeded`` (also for a service that did not exist, as the spec says).

Every URL an answer hands out (``Azure-AsyncOperation``, ``Location``, ``swaggerLocation``) starts with
the ``base`` the route passes in: the scheme, host and port the request itself reached.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from emulator import learning
from emulator.arm_schema import canonical, experiment_key, merge_patch, trained_model_asset, without_nulls
from emulator.backend import new_key, stored_model_id
from emulator.catalog import WebServiceKind
from emulator.errors import arm_error, arm_not_found
from emulator.state import ArmWebService, AsyncOperation, arm_key, iso, utc_now
from emulator.storage import BlobReferenceError, blob_from_uri

if TYPE_CHECKING:
    from emulator.authority import Authority
    from emulator.backend import Backend

log = logging.getLogger(__name__)

API_VERSIONS = ("2017-01-01", "2016-05-01-preview")
RESOURCE_TYPE = "Microsoft.MachineLearning/webServices"
# Members the service computes; ignored when a client sends them back.
_READ_ONLY = ("createdOn", "modifiedOn", "provisioningState", "swaggerLocation")
PROVIDER_PATH = "/providers/Microsoft.MachineLearning"
# Where an operation on a service that does not exist (DELETE) is tracked: Studio's main region.
_DEFAULT_OPERATION_LOCATION = "southcentralus"


class ArmService:
    def __init__(self, backend: Backend, authority: Authority) -> None:
        self.backend = backend
        self.authority = authority
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arm-operation")
        self._stopping = threading.Event()
        self._released: set[str] = set()  # held operations the admin API let go on

    def shutdown(self) -> None:
        self._stopping.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- checks --------------------------------------------------------------------------------

    def authorize(self, api_version: str | None, authorization: str | None, subscription: str) -> None:
        self.authority.check_arm_access(authorization, subscription)
        if api_version is None:
            raise arm_error(
                400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
            )
        if api_version not in API_VERSIONS:
            raise arm_error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{api_version}' is invalid. The supported versions are '{','.join(API_VERSIONS)}'.",
            )

    def _check_scope(self, subscription: str, resource_group: str | None) -> None:
        for known in self.backend.seed.subscriptions:
            if known.id.lower() == subscription.lower():
                if resource_group is None or resource_group.lower() in (g.lower() for g in known.resource_groups):
                    return
                raise arm_error(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")
        raise arm_error(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")

    def _service(self, subscription: str, resource_group: str, name: str) -> ArmWebService:
        self._check_scope(subscription, resource_group)
        service = self.backend.state.arm_services.get(arm_key(subscription, resource_group, name))
        if service is None:
            raise arm_not_found(subscription, resource_group, name)
        return service

    # --- representations -----------------------------------------------------------------------

    @staticmethod
    def _swagger_location(service: ArmWebService, base: str) -> str:
        return f"{base}/subscriptions/{service.subscription}/services/{service.data_plane_id}/swagger.json"

    def to_json(self, service: ArmWebService, base: str, *, sparse: bool = False) -> dict[str, Any]:
        """The resource as GET shows it: keys and the storage key are write-only, never returned."""
        computed = {
            "createdOn": iso(service.created_on),
            "modifiedOn": iso(service.modified_on),
            "provisioningState": service.provisioning_state,
            "swaggerLocation": self._swagger_location(service, base),
        }
        if sparse:
            keep = ("title", "description", "packageType", "readOnly")
            properties = {k: service.properties[k] for k in keep if k in service.properties}
        else:
            properties = dict(service.properties)
        properties.update(computed)
        if service.storage_account_name and not sparse:
            properties["storageAccount"] = {"name": service.storage_account_name}
        # canonical: enum casing also for definitions stored before it was enforced (a --data-dir).
        document: dict[str, Any] = canonical(
            without_nulls(
                {
                    "id": service.resource_id,
                    "name": service.name,
                    "type": RESOURCE_TYPE,
                    "location": service.location,
                    "tags": service.tags,
                    "properties": properties,
                }
            )
        )
        return document

    @staticmethod
    def _operation_path(operation: AsyncOperation, collection: str = "operationsStatus") -> str:
        return (
            f"/subscriptions/{operation.subscription}{PROVIDER_PATH}"
            f"/locations/{operation.location}/{collection}/{operation.id}"
        )

    def _operation_url(self, operation: AsyncOperation, base: str, collection: str = "operationsStatus") -> str:
        return f"{base}{self._operation_path(operation, collection)}?api-version={API_VERSIONS[0]}"

    def _operation_urls(self, operation: AsyncOperation, base: str) -> dict[str, str]:
        """The headers that hand out an operation: its status (``Azure-AsyncOperation``) and, for a
        DELETE's 202, its result (``Location``: 202 while it runs, then the outcome)."""
        headers = {"Azure-AsyncOperation": self._operation_url(operation, base)}
        if operation.kind == "delete":
            headers["Location"] = self._operation_url(operation, base, "operationResults")
        return headers

    # --- operations ----------------------------------------------------------------------------

    def get(self, subscription: str, resource_group: str, name: str, base: str) -> dict[str, Any]:
        with self.backend.lock:
            return self.to_json(self._service(subscription, resource_group, name), base)

    def list(self, subscription: str, resource_group: str | None, base: str) -> dict[str, Any]:
        """Every service in scope on one page: no ``nextLink`` (the spec's member is a string, so a
        last page omits it rather than sending null)."""
        with self.backend.lock:
            self._check_scope(subscription, resource_group)
            services = [
                self.to_json(s, base, sparse=True)
                for s in self.backend.state.arm_services.values()
                if s.subscription.lower() == subscription.lower()
                and (resource_group is None or s.resource_group.lower() == resource_group.lower())
            ]
        return {"value": services}

    def list_keys(self, subscription: str, resource_group: str, name: str) -> dict[str, str]:
        with self.backend.lock:
            service = self._service(subscription, resource_group, name)
            return {"primary": service.primary_key, "secondary": service.secondary_key}

    def put(
        self, subscription: str, resource_group: str, name: str, body: Any, base: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        document = self._document(body)
        properties = document.get("properties")
        if not isinstance(properties, dict):
            raise arm_error(400, "InvalidRequestContent", "The request content must have 'properties'.")
        if str(properties.get("packageType", "")).lower() != "graph":
            raise arm_error(
                400, "InvalidRequestContent", "'properties.packageType' must be 'Graph'.", "properties.packageType"
            )
        with self.backend.lock:
            self._check_scope(subscription, resource_group)
            key = arm_key(subscription, resource_group, name)
            existing = self.backend.state.arm_services.get(key)
            self._check_busy(existing)
            now = utc_now()
            location = document.get("location") or (existing.location if existing else None)
            if not location:
                raise arm_error(400, "LocationRequired", "The location property is required for this definition.")
            service = ArmWebService(
                subscription=existing.subscription if existing else subscription,
                resource_group=existing.resource_group if existing else resource_group,
                name=existing.name if existing else name,
                location=str(location),
                tags=dict(document.get("tags") or {}),
                data_plane_id=existing.data_plane_id if existing else uuid.uuid4().hex,
                primary_key=existing.primary_key if existing else new_key(),
                secondary_key=existing.secondary_key if existing else new_key(),
                experiment="",
                kind=WebServiceKind.TRAINING,
                properties={},
                created_on=existing.created_on if existing else now,
                modified_on=now,
                model_id=existing.model_id if existing else None,
                # GET never shows the storage key, so a definition PUT back keeps the stored one.
                storage_account_name=existing.storage_account_name if existing else None,
                storage_account_key=existing.storage_account_key if existing else None,
            )
            self._apply_properties(service, properties, existing)
            operation = self._begin(service, existing)
            return (200 if existing else 201), self.to_json(service, base), self._operation_urls(operation, base)

    def patch(
        self, subscription: str, resource_group: str, name: str, body: Any, base: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        document = self._document(body)
        with self.backend.lock:
            existing = self._service(subscription, resource_group, name)
            self._check_busy(existing)
            service = existing.model_copy(deep=True)
            if "tags" in document:
                service.tags = merge_patch(service.tags, document.get("tags") or {})
            patch = document.get("properties") or {}
            if not isinstance(patch, dict):
                raise arm_error(400, "InvalidRequestContent", "'properties' must be an object.", "properties")
            current = {
                **service.properties,
                "storageAccount": {"name": service.storage_account_name, "key": service.storage_account_key},
            }
            self._apply_properties(service, merge_patch(current, patch), existing)
            service.modified_on = utc_now()
            operation = self._begin(service, existing)
            return self.to_json(service, base), self._operation_urls(operation, base)

    def delete(self, subscription: str, resource_group: str, name: str, base: str) -> dict[str, str]:
        """Remove the service now; the 202's operation ends ``Succeeded`` (also when there was none)."""
        with self.backend.lock:
            self._check_scope(subscription, resource_group)
            key = arm_key(subscription, resource_group, name)
            existing = self.backend.state.arm_services.get(key)
            self._check_busy(existing)
            self.backend.state.arm_services.pop(key, None)
            location = existing.location if existing else _DEFAULT_OPERATION_LOCATION
            operation = AsyncOperation(
                id=uuid.uuid4().hex,
                kind="delete",
                subscription=existing.subscription if existing else subscription,
                location=location.replace(" ", "").lower(),
                service_key=key,
                start_time=utc_now(),
            )
            self.backend.state.operations[operation.id] = operation
            self.backend.save()
        held = self.backend.control.take_operation_fault() is not None
        self._executor.submit(self._finish_delete, operation.id, held=held)
        return self._operation_urls(operation, base)

    def _operation(self, subscription: str, operation_id: str) -> AsyncOperation:
        operation = self.backend.state.operations.get(operation_id)
        if operation is None or operation.subscription.lower() != subscription.lower():
            raise arm_error(404, "OperationNotFound", f"The operation '{operation_id}' was not found.")
        return operation

    def operation(self, subscription: str, operation_id: str) -> dict[str, Any]:
        """The ``Azure-AsyncOperation`` status document."""
        with self.backend.lock:
            operation = self._operation(subscription, operation_id)
            error = operation.error_info
            status: dict[str, Any] = without_nulls(
                {
                    "id": self._operation_path(operation),
                    "name": operation.id,
                    # The ML spec names the member provisioningState; generic ARM pollers read status.
                    "status": operation.status,
                    "provisioningState": operation.status,
                    "startTime": iso(operation.start_time),
                    "endTime": iso(operation.end_time),
                    "percentComplete": 100.0 if operation.end_time else 0.0,
                    "errorInfo": error,
                    # Likewise: the spec's errorInfo, and the generic ARM error that azure-core's
                    # poller puts in the exception it raises for a Failed operation.
                    "error": {"code": error["code"], "message": error["message"]} if error else None,
                }
            )
            return status

    def operation_result(
        self, subscription: str, operation_id: str, base: str
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        """The ``Location`` answer: 202 while the operation runs, then 204 (deleted) or 200 with the
        resource, or the operation's error in the ARM envelope."""
        with self.backend.lock:
            operation = self._operation(subscription, operation_id)
            if operation.status == "Provisioning":
                return 202, None, {"Location": self._operation_url(operation, base, "operationResults")}
            if operation.status == "Failed":
                error = operation.error_info or {}
                code = str(error.get("code", "InternalError"))
                raise arm_error(
                    500 if code == "InternalError" else 400, code, str(error.get("message", "")), error.get("target")
                )
            service = self.backend.state.arm_services.get(operation.service_key)
            if operation.kind == "delete" or service is None:
                return 204, None, {}
            return 200, self.to_json(service, base), {}

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _document(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise arm_error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        document: dict[str, Any] = canonical(body)
        return document

    @staticmethod
    def _check_busy(existing: ArmWebService | None) -> None:
        if existing is not None and existing.provisioning_state == "Provisioning":
            raise arm_error(
                409, "Conflict", f"Web service '{existing.name}' is being provisioned; retry when the operation ends."
            )

    def _apply_properties(
        self, service: ArmWebService, properties: dict[str, Any], existing: ArmWebService | None
    ) -> None:
        """Validate a full ``properties`` document and store it on ``service`` (secrets split off)."""
        properties = {k: v for k, v in properties.items() if k not in _READ_ONLY}
        key = experiment_key(properties)
        if key is None or key not in self.backend.seed.experiments:
            raise arm_error(
                400,
                "InvalidRequestContent",
                "The graph must keep its experiment asset (locationInfo.uri 'aml://emulator/experiments/<key>'); "
                f"known experiments: {sorted(self.backend.seed.experiments)}.",
                "properties.assets",
            )
        if existing is not None and existing.experiment and key != existing.experiment:
            raise arm_error(
                400, "InvalidRequestContent", "A web service cannot switch experiments.", "properties.assets"
            )
        keys = properties.pop("keys", None)
        if isinstance(keys, dict):
            service.primary_key = str(keys.get("primary") or service.primary_key)
            service.secondary_key = str(keys.get("secondary") or service.secondary_key)
        account = properties.pop("storageAccount", None)
        if isinstance(account, dict):
            self._set_storage_account(service, account.get("name"), account.get("key"))
        service.experiment = key
        service.kind = WebServiceKind.PREDICTIVE if trained_model_asset(properties) else WebServiceKind.TRAINING
        service.properties = properties

    def _set_storage_account(self, service: ArmWebService, name: Any, key: Any) -> None:
        """Name and key of the account the graph's blobs are read with. GET shows only the name, so
        a definition sent back without a key keeps the key the service has for that account, or
        one the emulator knows (a seeded account such as Azurite's)."""
        name = str(name) if name else service.storage_account_name
        if not name:
            return
        same_account = name.lower() == (service.storage_account_name or "").lower()
        kept = service.storage_account_key if same_account else None
        service.storage_account_name = name
        service.storage_account_key = str(key) if key else kept or self.backend.known_account_key(name)

    def _begin(self, service: ArmWebService, previous: ArmWebService | None) -> AsyncOperation:
        """Store ``service`` as Provisioning and start the operation that finishes it."""
        service.provisioning_state = "Provisioning"
        operation = AsyncOperation(
            id=uuid.uuid4().hex,
            kind="provision",
            subscription=service.subscription,
            location=service.location.replace(" ", "").lower(),
            service_key=arm_key(service.subscription, service.resource_group, service.name),
            start_time=utc_now(),
            previous=previous,
        )
        self.backend.state.arm_services[operation.service_key] = service
        self.backend.state.operations[operation.id] = operation
        self.backend.save()
        held = self.backend.control.take_operation_fault() is not None
        self._executor.submit(self._provision, operation.id, held=held)
        return operation

    def _finish_delete(self, operation_id: str, *, held: bool = False) -> None:
        # The service is gone already; the operation still takes the knob's minimum to end.
        if self._stopping.wait(self.backend.control.knobs.operation_min_duration_seconds):
            return
        if held and not self._held(operation_id):
            return
        with self.backend.lock:
            operation = self.backend.state.operations.get(operation_id)
            if operation is None:  # the emulator was reset meanwhile
                return
            operation.status = "Succeeded"
            operation.end_time = utc_now()
            self.backend.save()

    def _provision(self, operation_id: str, *, held: bool = False) -> None:
        backend = self.backend
        if self._stopping.wait(backend.control.knobs.operation_min_duration_seconds):
            return
        if held and not self._held(operation_id):
            return
        with backend.lock:
            operation = backend.state.operations.get(operation_id)
            service = backend.state.arm_services.get(operation.service_key) if operation else None
            if service is None:  # the emulator was reset meanwhile
                return
            snapshot = service.model_copy(deep=True)
        error: dict[str, Any] | None = None
        model_id = snapshot.model_id
        try:
            model_id = self._model_for(snapshot)
        except BlobReferenceError as exc:
            error = {"code": exc.code, "message": str(exc)}
        except learning.ModelFormatError as exc:
            error = {"code": "IncompatibleModel", "message": str(exc)}
        except Exception:
            log.exception("ARM operation %s failed unexpectedly", operation_id)
            error = {"code": "InternalError", "message": "Internal error while provisioning the web service."}
        with backend.lock:
            operation = backend.state.operations.get(operation_id)
            current = backend.state.arm_services.get(operation.service_key) if operation else None
            if operation is None or current is None:  # the emulator was reset meanwhile
                return
            operation.end_time = utc_now()
            if error is None:
                current.model_id = model_id
                current.provisioning_state = "Succeeded"
                operation.status = "Succeeded"
            else:
                target = None
                found = trained_model_asset(snapshot.properties)
                if found is not None:
                    target = f"properties.assets.{found[0]}.locationInfo.uri"
                operation.error_info = without_nulls({**error, "target": target, "details": []})
                operation.status = "Failed"
                restored = operation.previous.model_copy(deep=True) if operation.previous else current
                restored.provisioning_state = "Failed"
                backend.state.arm_services[operation.service_key] = restored
            operation.previous = None  # only needed while the operation runs
            backend.save()

    def _held(self, operation_id: str) -> bool:
        """Keep an operation a "hang" fault holds running until it is released or the emulator is
        reset. False: the emulator is stopping."""
        control = self.backend.control
        resets = control.resets
        while True:
            with self.backend.lock:
                if operation_id in self._released or control.resets != resets:
                    self._released.discard(operation_id)
                    return True
            if self._stopping.wait(0.01):
                return False

    def release(self, operation_id: str) -> str | None:
        """Let a provisioning operation that a "hang" fault holds go on (a no-op for any other).
        The operation's status, or None when there is no such operation."""
        with self.backend.lock:
            operation = self.backend.state.operations.get(operation_id)
            if operation is None:
                return None
            if operation.status == "Provisioning":
                self._released.add(operation_id)
            return str(operation.status)

    def _model_for(self, service: ArmWebService) -> str | None:
        """The model id a (predictive) definition serves with, fetching a changed asset uri."""
        found = trained_model_asset(service.properties)
        if found is None:
            return None
        uri = (found[1].get("locationInfo") or {}).get("uri")
        if not isinstance(uri, str) or not uri:
            raise BlobReferenceError("InvalidBlob", "The [trained model] asset has no locationInfo.uri.")
        experiment = self.backend.experiment(service.experiment)
        source = stored_model_id(uri) or blob_from_uri(uri, service.storage_account_name, service.storage_account_key)
        return self.backend.install_model(source, experiment)
