"""The emulator's runtime state as data, and where it is kept.

Resources, jobs, async operations and issued tokens are pydantic records saved as one JSON file
(``state.json``); model files live beside it (``models/{id}.ilearner``). With ``--in-memory``
nothing touches the disk. Access tokens are stored as SHA-256 digests, never in clear.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emulator.catalog import WebServiceKind
from emulator.storage import BlobTarget


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class JobStatus(StrEnum):
    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    FINISHED = "Finished"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.FINISHED)


class BlobRecord(Record):
    account_url: str
    account_name: str
    container: str
    blob: str
    account_key: str | None = None
    sas_token: str | None = None

    @classmethod
    def of(cls, target: BlobTarget) -> BlobRecord:
        return cls(
            account_url=target.account_url,
            account_name=target.account_name,
            container=target.container,
            blob=target.blob,
            account_key=target.account_key,
            sas_token=target.sas_token,
        )

    def target(self) -> BlobTarget:
        return BlobTarget(
            self.account_url, self.account_name, self.container, self.blob, self.account_key, self.sas_token
        )


class JobRecord(Record):
    id: str
    service_id: str
    experiment: str
    status: JobStatus = JobStatus.NOT_STARTED
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    details: str | None = None
    inputs: dict[str, BlobRecord]
    outputs: dict[str, BlobRecord]
    global_parameters: dict[str, Any] = Field(default_factory=dict)
    results: dict[str, BlobRecord] | None = None


class ModelLocation(Record):
    """Where an endpoint's model came from, as shown in ``Resources[].Location`` (no SAS)."""

    base_location: str
    relative_location: str


class ClassicEndpoint(Record):
    name: str
    service_id: str
    description: str = ""
    created_at: datetime
    primary_key: str
    secondary_key: str
    throttle_level: str = "Low"
    max_concurrent_calls: int = 4
    prevent_update: bool = False
    model_id: str | None = None
    model_location: ModelLocation | None = None


class ClassicWebService(Record):
    id: str
    workspace_id: str
    name: str
    description: str = ""
    created_at: datetime
    experiment: str
    kind: WebServiceKind
    endpoints: dict[str, ClassicEndpoint]


class Workspace(Record):
    id: str
    name: str
    authorization_token: str
    region: str
    web_services: dict[str, ClassicWebService]


class ArmWebService(Record):
    subscription: str
    resource_group: str
    name: str
    location: str
    tags: dict[str, Any] = Field(default_factory=dict)
    data_plane_id: str
    primary_key: str
    secondary_key: str
    storage_account_name: str | None = None
    storage_account_key: str | None = None
    experiment: str
    kind: WebServiceKind
    properties: dict[str, Any]  # canonical camelCase, without keys and storage key
    provisioning_state: str = "Succeeded"
    created_on: datetime
    modified_on: datetime
    model_id: str | None = None

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearning/webServices/{self.name}"
        )


class AsyncOperation(Record):
    id: str
    kind: Literal["provision", "delete"] = "provision"  # PUT/PATCH, or DELETE
    subscription: str
    location: str
    service_key: str
    status: str = "Provisioning"
    start_time: datetime
    end_time: datetime | None = None
    error_info: dict[str, Any] | None = None
    previous: ArmWebService | None = None  # restored if the operation fails


class IssuedToken(Record):
    tenant: str
    client_id: str
    expires_at: datetime


class State(Record):
    workspaces: dict[str, Workspace] = Field(default_factory=dict)
    arm_services: dict[str, ArmWebService] = Field(default_factory=dict)  # key: arm_key(sub, rg, name)
    jobs: dict[str, JobRecord] = Field(default_factory=dict)
    operations: dict[str, AsyncOperation] = Field(default_factory=dict)
    tokens: dict[str, IssuedToken] = Field(default_factory=dict)  # key: sha256 of the token


def arm_key(subscription: str, resource_group: str, name: str) -> str:
    # ARM resource ids compare case-insensitively.
    return f"{subscription}/{resource_group}/{name}".lower()


class Storage:
    """Persistence for :class:`State` and model bytes: a directory, or memory only."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._models: dict[str, bytes] = {}
        self._lock = threading.Lock()
        if directory is not None:
            (directory / "models").mkdir(parents=True, exist_ok=True)

    @property
    def _state_path(self) -> Path | None:
        return self.directory / "state.json" if self.directory else None

    def load(self) -> State | None:
        path = self._state_path
        if path is None or not path.exists():
            return None
        return State.model_validate_json(path.read_text(encoding="utf-8"))

    def save(self, state: State) -> None:
        path = self._state_path
        if path is None:
            return
        payload = state.model_dump_json(indent=1)
        with self._lock:
            # Write-then-rename: a crash never leaves a half-written state file.
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(payload)
            Path(temporary).replace(path)

    def put_model(self, model_id: str, data: bytes) -> None:
        if self.directory is None:
            self._models[model_id] = data
        else:
            (self.directory / "models" / f"{model_id}.ilearner").write_bytes(data)

    def get_model(self, model_id: str) -> bytes | None:
        if self.directory is None:
            return self._models.get(model_id)
        path = self.directory / "models" / f"{model_id}.ilearner"
        return path.read_bytes() if path.exists() else None

    def clear(self) -> None:
        self._models.clear()
        if self.directory is not None:
            for path in (self.directory / "models").glob("*.ilearner"):
                path.unlink()


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
