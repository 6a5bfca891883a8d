"""The promotion ledger: per serving target, an append-only history of what it serves, in blob storage.

Each target (a classic endpoint or a Resource Manager web service) has one append blob of JSON
lines: promotions, rollbacks, and the model found serving when the ledger started. The last record
says what serves now and with which metrics (the champion EvaluateModel compares against).

Promotions to one target are serialised with a lease on its ledger blob (a lock that expires by
itself if its holder dies; while it is held, no one else can append), and are compare-and-set: a
promotion applies only if the ledger still shows the model the run evaluated against, and a model
trained on an older data window never replaces one trained on a newer window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.exceptions import AzureMLRetrainError, ConfigurationError
from azureml_retrain.lazy import cached_property
from azureml_retrain.storage import is_refused_credential, storage_call, wasb_hook

DEFAULT_LEDGER_CONTAINER = "model-ledger"
RecordKind = Literal["baseline", "promotion", "rollback"]
LEASE_SECONDS = 60
# "Nothing to compare against": an empty ledger.
NO_MODEL = ""

log = logging.getLogger(__name__)


class PromotionConflictError(AzureMLRetrainError):
    """Another run holds the target's lock, or wrote its ledger at the same time: a retry may pass."""


class PromotionRefusedError(PromotionConflictError, AirflowFailException):
    """The compare-and-set refused the promotion (the target changed since this run evaluated
    against it, or the model's window is older than the serving one's): a retry cannot change that,
    so the task fails without retrying."""


@dataclass(frozen=True)
class LedgerRecord:
    """One change of what a target serves."""

    kind: RecordKind
    target: str
    model_uri: str
    previous_model_uri: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    window: dict[str, str] | None = None
    dag_id: str | None = None
    run_id: str | None = None
    reason: str | None = None
    recorded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # Where the target is served, as the promoting operator addressed it (its class and the
    # arguments that name the endpoint or web service, never a secret): a rollback needs nothing else.
    served_by: dict[str, Any] | None = None
    # What the model was trained on: ``container/blob`` locations in the storage of the promoting
    # operator's ``wasb_conn_id`` (never a SAS). None: not known (records from before this field).
    inputs: list[str] | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> LedgerRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in value.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_blob_stem(target: str) -> str:
    """A blob-name-safe form of a target name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", target).strip("-.")
    if not stem:
        raise ConfigurationError(f"target: {target!r} has no usable characters for a ledger name")
    return stem


def _lease_refused(error: Any) -> bool:
    """A write refused for the lock: another run holds it, or this run's lease was lost (expired and taken)."""
    code = getattr(error, "error_code", None)
    return getattr(error, "status_code", None) == 412 and str(getattr(code, "value", code) or "").startswith("Lease")


@dataclass(frozen=True)
class LedgerLock:
    """The lock on a target's ledger, as :meth:`PromotionLedger.lock` holds it.

    :param lease: the blob lease (pass it to :meth:`PromotionLedger.append`).
    :param empty_etag: the etag of the ledger this lock created and found unchanged when it took the
        lease (an etag changes with every write, a lease does not change it): the ledger is empty.
        None: read it.
    """

    lease: Any
    empty_etag: str | None = None


def window_end(record: LedgerRecord | None) -> datetime | None:
    if record is None or not record.window or not record.window.get("end"):
        return None
    return datetime.fromisoformat(record.window["end"])


@dataclass
class PromotionLedger:
    """The ledger of all targets, in ``container`` of the storage behind ``wasb_conn_id``."""

    wasb_conn_id: str = "wasb_default"
    container: str = DEFAULT_LEDGER_CONTAINER
    lock_timeout: float = 300.0
    # A batch's threads share one ledger object: the first to write creates the container, the others wait for it.
    _container_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @cached_property
    def _client(self) -> Any:
        return wasb_hook(self.wasb_conn_id).blob_service_client.get_container_client(self.container)

    def _call(self, action: str) -> AbstractContextManager[None]:
        """Storage calls for ``action``: a refused credential fails the task naming the connection's field."""
        return storage_call(self.wasb_conn_id, f"{action} (ledger container {self.container})")

    def _ensure_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self.__dict__.get("_container_ready"):
            return  # seen to exist by this ledger object (one task's promotions: one request, not one per write)
        with self._container_lock:
            if self.__dict__.get("_container_ready"):
                return
            with contextlib.suppress(ResourceExistsError):
                self._client.create_container()
            self.__dict__["_container_ready"] = True

    def _records_blob(self, target: str) -> Any:
        return self._client.get_blob_client(f"records/{target_blob_stem(target)}.jsonl")

    # --- reading -------------------------------------------------------------------------------

    def read(self, target: str) -> tuple[list[LedgerRecord], str | None]:
        """All records of ``target`` (oldest first) and the blob's etag (None: no ledger yet)."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._records_blob(target)
        with self._call(f"reading the ledger of {target}"):
            try:
                downloader = blob.download_blob()
            except ResourceNotFoundError:
                return [], None
            text = downloader.readall().decode("utf-8")
        records = [LedgerRecord.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
        return records, str(downloader.properties.etag)

    def records(self, target: str) -> list[LedgerRecord]:
        return self.read(target)[0]

    def head(self, target: str) -> LedgerRecord | None:
        """The latest record: what ``target`` serves now, as far as the ledger knows."""
        records = self.records(target)
        return records[-1] if records else None

    def champion_metrics(self, target: str) -> dict[str, Any] | None:
        head = self.head(target)
        return dict(head.metrics) if head and head.metrics else None

    # --- writing -------------------------------------------------------------------------------

    def append(
        self,
        record: LedgerRecord,
        *,
        etag: str | None,
        before: tuple[LedgerRecord, ...] = (),
        lease: Any = None,
    ) -> str:
        """Append ``before`` and then ``record`` in one block, only if the ledger is still at ``etag``
        (None: only if it does not exist yet); returns the ledger's new etag.

        One block is atomic: a reader sees all of its records or none. Safe to retry: when an attempt
        landed but its answer was lost, the storage client's retry meets the changed etag; the ledger
        is then read back, and ending with ``record`` counts as written.

        :param lease: the target's lock (see :meth:`lock`) when the caller holds it; without it, the
            append is refused while anyone else holds the lock.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError

        blob = self._records_blob(record.target)
        lines = b"".join((json.dumps(r.to_dict(), sort_keys=True) + "\n").encode() for r in (*before, record))
        try:
            with self._call(f"writing the ledger of {record.target}"):
                self._ensure_container()
                if etag is None:
                    # The service answers with the new blob's etag: no read-back needed.
                    etag = str(blob.create_append_blob(match_condition=MatchConditions.IfMissing)["etag"])
                answer = blob.append_block(lines, etag=etag, match_condition=MatchConditions.IfNotModified, lease=lease)
                return str(answer["etag"])
        except HttpResponseError as error:
            if not isinstance(error, (ResourceModifiedError, ResourceExistsError)) and not _lease_refused(error):
                raise
            if self._last_record_is(record):
                log.warning("Ledger of %s: an earlier attempt of this append had landed", record.target)
                return str(self.read(record.target)[1])
            raise PromotionConflictError(
                f"ledger of {record.target} changed while this run was writing to it; nothing was recorded"
            ) from error

    def _last_record_is(self, record: LedgerRecord) -> bool:
        records, _ = self.read(record.target)
        return bool(records) and records[-1] == record

    def note_decision(self, dag_id: str, entry: Mapping[str, Any]) -> None:
        """Append why a run did not promote to the DAG's decision log (no compare-and-set needed)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError

        blob = self._client.get_blob_client(f"decisions/{target_blob_stem(dag_id)}.jsonl")
        entry = {"recorded_at": datetime.now(UTC).isoformat(), **entry}
        with self._call(f"writing the decision log of {dag_id}"):
            self._ensure_container()
            with contextlib.suppress(ResourceExistsError):
                blob.create_append_blob(match_condition=MatchConditions.IfMissing)
            blob.append_block((json.dumps(entry, sort_keys=True, default=str) + "\n").encode())

    def decisions(self, dag_id: str) -> list[dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._client.get_blob_client(f"decisions/{target_blob_stem(dag_id)}.jsonl")
        with self._call(f"reading the decision log of {dag_id}"):
            try:
                text = blob.download_blob().readall()
            except ResourceNotFoundError:
                return []
        return [json.loads(line) for line in text.decode().splitlines() if line.strip()]

    # --- the promotion guard -------------------------------------------------------------------

    def _acquire(self, lease: Any, target: str, created: str | None = None) -> str | None:
        """Take ``lease``, waiting up to ``lock_timeout`` while another run holds it; a ledger that
        does not exist yet is created (empty) to be leased. Returns the etag the ledger had when this
        call (or the caller: ``created``) created it, if it is still the one the lease reports."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                lease.acquire(lease_duration=LEASE_SECONDS)
                return created if created is not None and lease.etag == created else None
            except ResourceNotFoundError:
                created = self._create_records_blob(target)
            except HttpResponseError as error:
                if is_refused_credential(error):
                    raise  # not a conflict: the caller's storage_call names the credential
                if error.status_code != 409:
                    raise PromotionConflictError(
                        f"could not take the lock of {target} in the ledger: HTTP {error.status_code} "
                        f"{getattr(error, 'error_code', None) or ''}".rstrip()
                    ) from error
                if time.monotonic() >= deadline:
                    raise PromotionConflictError(
                        f"another run is promoting to {target} (its lock was held for over {self.lock_timeout:.0f}s)"
                    ) from error
                time.sleep(2)

    def _create_records_blob(self, target: str) -> str | None:
        """Create ``target``'s ledger, empty; returns its etag, or None when it already existed."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError

        try:
            answer = self._records_blob(target).create_append_blob(match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            return None
        return str(answer["etag"])

    @contextmanager
    def lock(self, target: str, *, owner: str | None = None, new: bool = False) -> Iterator[LedgerLock]:
        """Hold the lease on the target's ledger (renewed in the background) for the duration of the block.

        The lock is the ledger blob's own lease: taking it is one request (two more for a ledger that
        does not exist yet, which is created empty), and while it is held only its holder can append.

        :param owner: who takes the lock, stable across retries (a task instance). A retry whose
            earlier try died holding the lock takes it over at once instead of waiting for the
            lease to expire; anyone else waits.
        :param new: the caller expects no ledger yet (a run that evaluated against an empty one): it is
            created before the lease is taken instead of after a refused one. A ledger this call
            created, and found unchanged when the lease is taken, is known to be empty (see
            :class:`LedgerLock`).
        """
        from azure.core.exceptions import AzureError, HttpResponseError
        from azure.storage.blob import BlobLeaseClient

        # The lease id names the owner: acquiring a lease with the id it already has succeeds.
        lease_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"azureml-retrain-lock/{target}/{owner}")) if owner else None
        lease = BlobLeaseClient(self._records_blob(target), lease_id=lease_id)
        with self._call(f"taking the lock of {target}"):
            self._ensure_container()
            created = self._create_records_blob(target) if new else None
            held = LedgerLock(lease, empty_etag=self._acquire(lease, target, created))
        stop = threading.Event()

        def renew() -> None:
            interval = LEASE_SECONDS / 3
            while not stop.wait(interval):
                try:
                    lease.renew()
                    interval = LEASE_SECONDS / 3
                except HttpResponseError as error:
                    if error.status_code == 409:  # the lease is gone (expired and taken): nothing to keep
                        log.error("Lost the ledger lock of %s", target)
                        return
                    interval = 2.0  # a storage blip: the lease outlives a few quick retries
                except AzureError:
                    interval = 2.0

        renewer = threading.Thread(target=renew, name=f"lease-{target}", daemon=True)
        renewer.start()
        try:
            yield held
        finally:
            stop.set()
            renewer.join(timeout=5)
            # Storage may be down or the lease expired: it frees itself, and the error that ended
            # the block (if any) is the one to report.
            try:
                lease.release()
            except AzureError as error:
                log.warning("Could not release the ledger lock of %s (it expires by itself): %s", target, error)

    @contextmanager
    def guard(
        self,
        target: str,
        *,
        expected_model_uri: str | None,
        window: Mapping[str, str] | None,
        allow_older_window: bool = False,
        run: tuple[str, str] | None = None,
        owner: str | None = None,
    ) -> Iterator[PromotionGuard]:
        """Lock ``target`` and check the compare-and-set conditions; yields the guard to record with.

        :param expected_model_uri: the model the run evaluated against (``NO_MODEL`` for an empty
            ledger); None skips this check.
        :param window: the new model's data window; refused if older than the serving model's.
        :param run: ``(dag_id, run_id)`` of the promoting run. A head this run recorded itself (an
            earlier try that recorded, then failed before reporting success) is not a change by
            someone else.
        :param owner: the lock's owner (see :meth:`lock`).
        """
        with self.lock(target, owner=owner, new=expected_model_uri == NO_MODEL) as held:
            records: list[LedgerRecord]
            etag: str | None
            if held.empty_etag is not None:
                records, etag = [], held.empty_etag  # created by this lock and unchanged since: empty
            else:
                records, etag = self.read(target)
            head = records[-1] if records else None
            own_head = head is not None and run is not None and (head.dag_id, head.run_id) == run
            if (
                expected_model_uri is not None
                and (head.model_uri if head else NO_MODEL) != expected_model_uri
                and not own_head
            ):
                raise PromotionRefusedError(
                    f"{target} changed since this run evaluated against it: it now serves "
                    f"{head.model_uri if head else 'no recorded model'}, not {expected_model_uri or 'no model'}; "
                    "re-run to evaluate against the current model"
                )
            newer = window_end(head)
            if window and newer and not allow_older_window and datetime.fromisoformat(window["end"]) < newer:
                raise PromotionRefusedError(
                    f"{target} serves a model trained on data up to {newer.isoformat()}; a model trained on an "
                    f"older window (up to {window['end']}) does not replace it"
                )
            yield PromotionGuard(self, target, head, etag, held.lease)


@dataclass
class PromotionGuard:
    """What a locked promotion sees, and how it records its outcome."""

    ledger: PromotionLedger
    target: str
    head: LedgerRecord | None
    etag: str | None
    lease: Any = None

    def record(self, record: LedgerRecord, *, baseline_uri: str | None = None) -> None:
        """Append ``record``; on an empty ledger, first record what served before (``baseline_uri``),
        in the same block."""
        before: tuple[LedgerRecord, ...] = ()
        if self.head is None and baseline_uri:
            before = (
                LedgerRecord(
                    kind="baseline",
                    target=self.target,
                    model_uri=baseline_uri,
                    # Written by this run: its retry must not take it for a change by someone else.
                    dag_id=record.dag_id,
                    run_id=record.run_id,
                    reason="serving before",
                    recorded_at=record.recorded_at,
                ),
            )
        self.etag = self.ledger.append(record, etag=self.etag, before=before, lease=self.lease)
        self.head = record
