"""The stateful core shared by every plane: state under one lock, models, data-plane lookup, keys.

Plane logic lives in :mod:`emulator.batch`, :mod:`emulator.scoring`, :mod:`emulator.management`,
:mod:`emulator.arm` and :mod:`emulator.authority`; each takes this backend and raises only through
:mod:`emulator.errors`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from emulator import datasets, learning
from emulator.arm_schema import render_properties
from emulator.catalog import Experiment, InitialModel, Seed, WebServiceKind
from emulator.control import Control
from emulator.errors import api_error
from emulator.state import (
    ArmWebService,
    ClassicEndpoint,
    ClassicWebService,
    JobStatus,
    State,
    Storage,
    Workspace,
    arm_key,
    utc_now,
)
from emulator.storage import BlobReferenceError, BlobTarget

log = logging.getLogger(__name__)

STORED_MODEL_SCHEME = "aml://trainedmodel/"


def stored_model_uri(model_id: str) -> str:
    """How a model held by the emulator itself (e.g. a seed model) is named in resources/assets."""
    return f"{STORED_MODEL_SCHEME}{model_id}.ilearner"


def stored_model_id(uri: str) -> str | None:
    if not uri.startswith(STORED_MODEL_SCHEME) or not uri.endswith(".ilearner"):
        return None
    return uri[len(STORED_MODEL_SCHEME) : -len(".ilearner")] or None


@dataclass(frozen=True)
class DataPlaneService:
    """A BES/RRS target: a classic endpoint or an ARM web service."""

    id: str
    scope: Literal["workspace", "subscription"]
    owner: str  # workspace id or subscription id
    name: str
    experiment: Experiment
    kind: WebServiceKind
    keys: tuple[str, str]
    model_id: str | None


@dataclass(frozen=True)
class Urls:
    public: str  # http listener as clients reach it
    tls: str  # https listener (token authority)


class Backend:
    def __init__(self, seed: Seed, storage: Storage, control: Control, urls: Urls) -> None:
        self.seed = seed
        self.storage = storage
        self.control = control
        self.urls = urls
        self.lock = threading.RLock()
        self._parsing = threading.Lock()
        self.state = State()
        self._loaded_models: dict[str, learning.TrainedModel] = {}
        # Parsed models by the digest of their bytes: one model promoted to many endpoints is read
        # once (parsing costs tens of ms of CPU that Azure spends on its side, not the client's).
        self._parsed_models: OrderedDict[str, learning.TrainedModel] = OrderedDict()

    # --- lifecycle -----------------------------------------------------------------------------

    def boot(self) -> None:
        """Load persisted state (recovering in-flight work) or build it from the seed."""
        persisted = self.storage.load()
        if persisted is None:
            self.reset()
            return
        with self.lock:
            self.state = persisted
            self._recover_in_flight()
            self.save()

    def reset(self) -> None:
        """Back to the seed. Issued access tokens survive, so clients' token caches stay valid."""
        with self.lock:
            tokens = self.state.tokens
            self.storage.clear()
            self._loaded_models.clear()
            self._parsed_models.clear()
            self.state = self._seed_state()
            self.state.tokens = tokens
            self.save()

    def save(self) -> None:
        with self.lock:
            self.storage.save(self.state)

    def _recover_in_flight(self) -> None:
        # A restart loses the worker threads: running jobs and provisioning operations cannot
        # resume, so they fail with an explanation; NotStarted jobs remain startable.
        now = utc_now()
        for job in self.state.jobs.values():
            if job.status is JobStatus.RUNNING:
                job.status = JobStatus.FAILED
                job.ended_at = now
                job.details = learning.TrainingError(
                    "Library exception: the emulator restarted while the job was running; submit the job again.",
                    learning.ModuleError.LIBRARY_EXCEPTION,
                ).details()
        for operation in self.state.operations.values():
            if operation.status == "Provisioning" and operation.kind == "delete":
                operation.status = "Succeeded"  # the service was removed when the DELETE came in
                operation.end_time = now
            elif operation.status == "Provisioning":
                operation.status = "Failed"
                operation.end_time = now
                operation.error_info = {
                    "code": "InternalError",
                    "message": "The emulator restarted during the operation; send the request again.",
                    "details": [],
                }
                key = operation.service_key
                if operation.previous is not None:
                    self.state.arm_services[key] = operation.previous
                if key in self.state.arm_services:
                    self.state.arm_services[key].provisioning_state = "Failed"

    def _seed_state(self) -> State:
        seed = self.seed
        now = utc_now()
        state = State()
        for workspace in seed.workspaces:
            services = {}
            for service in workspace.web_services:
                experiment = seed.experiments[service.experiment]
                model_id = None
                if service.kind is WebServiceKind.PREDICTIVE:
                    model_id = self._seed_model(experiment, service.initial_model)
                endpoints = {
                    endpoint.name: ClassicEndpoint(
                        name=endpoint.name,
                        service_id=endpoint.service_id,
                        description=endpoint.description,
                        created_at=now,
                        primary_key=endpoint.primary_key,
                        secondary_key=endpoint.secondary_key,
                        model_id=model_id,
                    )
                    for endpoint in service.endpoints
                }
                services[service.id] = ClassicWebService(
                    id=service.id,
                    workspace_id=workspace.id,
                    name=service.name,
                    description=service.description,
                    created_at=now,
                    experiment=service.experiment,
                    kind=service.kind,
                    endpoints=endpoints,
                )
            state.workspaces[workspace.id] = Workspace(
                id=workspace.id,
                name=workspace.name,
                authorization_token=workspace.authorization_token,
                region=workspace.region,
                web_services=services,
            )
        for arm in seed.arm_web_services:
            experiment = seed.experiments[arm.experiment]
            model_id = None
            if arm.kind is WebServiceKind.PREDICTIVE:
                model_id = self._seed_model(experiment, arm.initial_model)
            properties = render_properties(
                experiment,
                arm.kind,
                title=arm.title,
                description=arm.description,
                model_uri=stored_model_uri(model_id) if model_id else None,
                storage_account_name=arm.storage_account.name,
                commitment_plan=arm.commitment_plan,
            )
            state.arm_services[arm_key(arm.subscription, arm.resource_group, arm.name)] = ArmWebService(
                subscription=arm.subscription,
                resource_group=arm.resource_group,
                name=arm.name,
                location=arm.location,
                data_plane_id=arm.data_plane_id,
                primary_key=arm.primary_key,
                secondary_key=arm.secondary_key,
                storage_account_name=arm.storage_account.name,
                storage_account_key=arm.storage_account.key,
                experiment=arm.experiment,
                kind=arm.kind,
                properties=properties,
                created_on=now,
                modified_on=now,
                model_id=model_id,
            )
        return state

    def _seed_model(self, experiment: Experiment, initial: InitialModel) -> str:
        model_id = f"seed-{experiment.key}-r{initial.rows}-w{initial.window}-s{initial.seed}"
        if self.storage.get_model(model_id) is None:
            data = datasets.generate_csv(experiment.dataset, initial.rows, initial.window, initial.seed)
            result = learning.train(experiment, data.encode(), {})
            self.storage.put_model(model_id, result.ilearner)
            self._loaded_models[model_id] = result.model
        return model_id

    # --- models --------------------------------------------------------------------------------

    def model(self, model_id: str) -> learning.TrainedModel | None:
        with self.lock:
            loaded = self._loaded_models.get(model_id)
        if loaded is not None:
            return loaded
        data = self.storage.get_model(model_id)
        if data is None:
            return None
        model = learning.load_ilearner(data)
        with self.lock:
            self._loaded_models[model_id] = model
        return model

    def store_model(self, model_id: str, data: bytes, model: learning.TrainedModel) -> None:
        self.storage.put_model(model_id, data)
        with self.lock:
            self._loaded_models[model_id] = model

    def _parse_model(self, data: bytes, keep: int = 16) -> learning.TrainedModel:
        """The model in ``data`` (an ``.ilearner``), parsed once for the same bytes (the last ``keep``)."""
        digest = hashlib.sha256(data).hexdigest()
        # One parse at a time (see learning.load_ilearner): requests for the same bytes that arrive
        # together wait for the first one's parse and then find it here.
        with self._parsing:
            with self.lock:
                parsed = self._parsed_models.get(digest)
                if parsed is not None:
                    self._parsed_models.move_to_end(digest)
                    return parsed
            model = learning.load_ilearner(data)
            with self.lock:
                self._parsed_models[digest] = model
                while len(self._parsed_models) > keep:
                    self._parsed_models.popitem(last=False)
        return model

    def install_model(self, source: BlobTarget | str, experiment: Experiment) -> str:
        """Fetch and validate a model for a service running ``experiment``; returns its model id.

        ``source`` is a blob or the id of a model the emulator already holds. Raises
        BlobReferenceError (cannot read it) or learning.ModelFormatError (not a compatible model).
        """
        if isinstance(source, str):
            model_id = source
            model = self.model(model_id)
            if model is None:
                raise BlobReferenceError("BlobNotFound", f"The emulator holds no model '{model_id}'.")
            learning.check_compatible(model, experiment)
            return model_id
        if source.extension != ".ilearner":
            raise BlobReferenceError("InvalidBlobExtension", f"'{source.relative_location}' is not an .ilearner blob.")
        data = source.download()
        model = self._parse_model(data)
        learning.check_compatible(model, experiment)
        model_id = uuid.uuid4().hex
        self.store_model(model_id, data, model)
        return model_id

    def experiment(self, key: str) -> Experiment:
        return self.seed.experiments[key]

    def known_account_key(self, account_name: str) -> str | None:
        """A storage key the emulator knows (seed storage accounts and ARM services' accounts)."""
        name = account_name.lower()  # account names are lowercase; compare as Azure does
        for account in self.seed.storage_accounts:
            if account.name.lower() == name:
                return account.key
        with self.lock:
            for service in self.state.arm_services.values():
                if (service.storage_account_name or "").lower() == name and service.storage_account_key:
                    return service.storage_account_key
        return None

    # --- data plane ----------------------------------------------------------------------------

    def data_plane(self, scope: Literal["workspace", "subscription"], owner: str, service_id: str) -> DataPlaneService:
        with self.lock:
            if scope == "workspace":
                workspace = self.state.workspaces.get(owner)
                if workspace is None:
                    raise api_error("WorkspaceNotFound", f"Workspace '{owner}' was not found.")
                for service in workspace.web_services.values():
                    for endpoint in service.endpoints.values():
                        if endpoint.service_id == service_id:
                            return DataPlaneService(
                                id=service_id,
                                scope=scope,
                                owner=owner,
                                name=f"{service.name}/{endpoint.name}",
                                experiment=self.experiment(service.experiment),
                                kind=service.kind,
                                keys=(endpoint.primary_key, endpoint.secondary_key),
                                model_id=endpoint.model_id,
                            )
                raise api_error(
                    "WebServiceIdNotFoundInWorkspace",
                    f"Web service '{service_id}' was not found in workspace '{owner}'.",
                )
            for arm in self.state.arm_services.values():
                if arm.data_plane_id == service_id and arm.subscription == owner:
                    return DataPlaneService(
                        id=service_id,
                        scope=scope,
                        owner=owner,
                        name=arm.name,
                        experiment=self.experiment(arm.experiment),
                        kind=arm.kind,
                        keys=(arm.primary_key, arm.secondary_key),
                        model_id=arm.model_id,
                    )
            raise api_error("WebServiceNotFound", f"Web service '{service_id}' was not found.")

    @staticmethod
    def data_plane_url(service: DataPlaneService, base: str) -> str:
        kind = "workspaces" if service.scope == "workspace" else "subscriptions"
        return f"{base}/{kind}/{service.owner}/services/{service.id}"

    # --- secrets -------------------------------------------------------------------------------

    def secrets(self) -> set[str]:
        """Every credential the emulator holds, for log redaction."""
        values = {account.key for account in self.seed.storage_accounts}
        for tenant in self.seed.tenants:
            values.update(principal.client_secret for principal in tenant.service_principals)
        with self.lock:
            for workspace in self.state.workspaces.values():
                values.add(workspace.authorization_token)
                for service in workspace.web_services.values():
                    for endpoint in service.endpoints.values():
                        values.update((endpoint.primary_key, endpoint.secondary_key))
            for arm in self.state.arm_services.values():
                values.update((arm.primary_key, arm.secondary_key))
                if arm.storage_account_key:
                    values.add(arm.storage_account_key)
        return {value for value in values if value}


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def matches_any(credential: str | None, candidates: tuple[str, ...] | list[str]) -> bool:
    if credential is None:
        return False
    # Compare every candidate in constant time; no early exit on a match.
    results = [hmac.compare_digest(credential.encode(), candidate.encode()) for candidate in candidates if candidate]
    return any(results)


def new_key() -> str:
    """A random API key in the shape Studio issued (base64 of 64 random bytes)."""
    return base64.b64encode(secrets.token_bytes(64)).decode()
