"""The fault matrix: every fault against every operator, the sensor and the ledger write.

Each applicable cell runs the real task code over HTTP against the emulator and Azurite, with the
fault injected through the emulator's admin API (``/_emulator/faults``), or for blob storage through
``support.faults.FaultProxy`` (the same steps: status, delay, drop, malformed) or a private Azurite
that is stopped and started again. Airflow's retries are modelled as in the operator tests: a new
operator instance with the same task state store and run is the next try (3 tries: retries=2, as the
DAG factory sets); the hooks' own retry policy handles transient faults within one try.

Only two outcomes are acceptable (``RECOVERS`` / ``FAILS``):

* it succeeds after retries, with exactly one BES job, or exactly one promotion (serving model, RRS
  prediction, ledger champion and applied model changes agree); each such cell also states whether
  the fault is absorbed inside the try (retry policies) or costs a task retry, and checks which;
* it fails with a clear message, no remote job is left running, and the previously serving model is
  still serving and still the ledger's champion.

Every cell also checks that each injected fault was met (and Retry-After honoured), and that no
secret reached an error, a result (XCom) or anything logged. Cells that cannot meet a fault (the
sensor makes no BES call) say why in ``NOT_APPLICABLE``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout
from azure.storage.blob import BlobServiceClient

from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook, operation_state
from azureml_retrain.ledger import LedgerRecord, PromotionGuard, PromotionLedger
from azureml_retrain.operators.evaluate import EvaluateModelOperator
from azureml_retrain.operators.promote import PatchEndpointOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator
from azureml_retrain.sensors.blob_arrival import BlobArrivalSensor
from devtools.services import AZURITE_KEY, ROOT, azurite_connection_string, free_port
from support.airflow_context import DictStateStore, make_context
from support.emulator import DataPlane, RunningEmulator, connection_reference
from support.faults import FaultProxy, PrivateAzurite
from support.retrain import (
    CHURN_SMOKE_ROWS,
    ENERGY_SMOKE_ROWS,
    arm_scoring,
    classic_scoring,
    jobs,
    predictions,
    requests_log,
    run_deferrable,
)
from support.retraining import arm_model, churn_service_id, endpoint_model

pytestmark = pytest.mark.integration

RECOVERS = "succeeds after retries: one BES job / one promotion"
FAILS = "fails clearly: no job left running, old model still serving and champion"

FAULTS = (
    "429 Retry-After",
    "500",
    "503",
    "connect timeout",
    "read timeout",
    "connection reset",
    "malformed JSON",
    "BES job Failed",
    "job stuck past deadline",
    "ARM operation Failed",
    "smoke test fails after PATCH",
    "Azurite unavailable",
)
SUBMIT, EVALUATE, PATCH, UPDATE, SENSOR, LEDGER = TARGETS = (
    "SubmitBesJobOperator",
    "EvaluateModelOperator",
    "PatchEndpointOperator",
    "UpdateWebServiceDefinitionOperator",
    "BlobArrivalSensor",
    "ledger write",
)

RUN_ID = "scheduled__2026-11-26T02:00:00+00:00"
CHAMPION_RUN_ID = "scheduled__2026-11-25T02:00:00+00:00"
CHAMPION_WINDOW = {"start": "2026-11-24T00:00:00+00:00", "end": "2026-11-25T00:00:00+00:00"}
CHALLENGER_WINDOW = {"start": "2026-11-25T00:00:00+00:00", "end": "2026-11-26T00:00:00+00:00"}
TRAINING_CONN = "azureml_churn_training"
MANAGEMENT_CONN = "azureml_classic_management_default"
ARM_CONN = "azureml_resource_manager_default"
WASB_CONN = "wasb_default"

# Short waits keep the matrix fast: the policies are the production ones, only their delays shrink.
FAST_RETRIES = {"retry_base_delay": 0.05, "retry_max_delay": 0.2, "max_attempts": 4, "connect_timeout": 1.0}
STORAGE_RETRIES = {
    "retry_total": 3,
    "initial_backoff": 0.1,
    "increment_base": 0,
    "random_jitter_range": 0,
    "connection_timeout": 1,
    "read_timeout": 10,
}
READ_TIMEOUT = 2.0  # seconds, in the read-timeout cells; their injected delay is longer
SLOW = 3.0
REFUSED_FOR = 0.8  # seconds of connect timeouts, well inside what the connect-timeout cells retry:
CONNECT_RETRIES = {"connect_timeout": 0.3, "max_attempts": 6}  # 6 x 0.3 s, plus backoff
STORAGE_CONNECT_RETRIES = {"connection_timeout": 0.3, "retry_total": 5}


# --- the environment of one cell --------------------------------------------------------------------


class Env:
    """One cell's services and connections: the session emulator, session or private blob storage,
    optional fault proxies, and the faults installed (to check they were all consumed)."""

    def __init__(
        self, emulator: RunningEmulator, blob_service: BlobServiceClient, monkeypatch: pytest.MonkeyPatch, tmp: Path
    ) -> None:
        self.emulator = emulator
        self.monkeypatch = monkeypatch
        self.tmp = tmp
        self.session_blobs = blob_service
        self.storage_proxy: FaultProxy | None = None
        self.azurite: PrivateAzurite | None = None
        self._proxies: list[FaultProxy] = []
        self.malformed_answers: dict[str, int] = {}  # emulator route -> injected 200s that did nothing
        self.retry_after: list[tuple[str, int]] = []  # emulator route, Retry-After seconds injected
        self.storage_endpoint = str(blob_service.url).rstrip("/")
        for conn_id in (TRAINING_CONN, MANAGEMENT_CONN, ARM_CONN):
            self.azureml_connection(conn_id)
        self._wasb(self.storage_endpoint)

    # connections
    def azureml_connection(self, conn_id: str, *, host: str | None = None, **extra: Any) -> None:
        variable = f"AIRFLOW_CONN_{conn_id.upper()}"
        conn = json.loads(os.environ[variable])
        conn["extra"] = {**conn.get("extra", {}), **FAST_RETRIES, **extra}
        if host is not None:
            conn["host"] = host
        self.monkeypatch.setenv(variable, json.dumps(conn))

    def _wasb(self, endpoint: str, **extra: Any) -> None:
        port = urlsplit(endpoint).port
        assert port is not None
        self.storage_endpoint = endpoint.rstrip("/")
        value = {"conn_type": "wasb", "extra": {"connection_string": azurite_connection_string(port), **extra}}
        value["extra"] = {**STORAGE_RETRIES, **value["extra"]}
        self.monkeypatch.setenv("AIRFLOW_CONN_WASB_DEFAULT", json.dumps(value))

    # storage
    @property
    def blobs(self) -> BlobServiceClient:
        """A direct client (never through a proxy) of the storage this cell's tasks use."""
        if self.azurite is not None:
            return BlobServiceClient.from_connection_string(self.azurite.connection_string, retry_total=0)
        return self.session_blobs

    def use_storage_proxy(self, **extra: Any) -> FaultProxy:
        port = urlsplit(str(self.session_blobs.url)).port
        assert port is not None
        self.storage_proxy = self._proxy(port)
        self._wasb(f"{self.storage_proxy.url}/devstoreaccount1", **extra)
        return self.storage_proxy

    def use_private_azurite(self) -> PrivateAzurite:
        self.azurite = PrivateAzurite(
            free_port(), self.tmp / "azurite", ROOT / "test-artifacts" / "azurite-private.log"
        )
        self.azurite.start()
        self._wasb(self.azurite.blob_endpoint)
        return self.azurite

    def storage_settings(self, **extra: Any) -> None:
        self._wasb(self.storage_endpoint, **extra)

    def create_container(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.blobs.create_container(name)
        return name

    # faults
    def fault(self, route: str, *steps: dict[str, Any] | None) -> None:
        self.emulator.admin("POST", "faults", json={"route": route, "sequence": list(steps)})
        malformed = sum(1 for s in steps if s and s["kind"] == "malformed")
        self.malformed_answers[route] = self.malformed_answers.get(route, 0) + malformed
        self.retry_after += [(route, s["retry_after_seconds"]) for s in steps if s and s.get("retry_after_seconds")]

    def fault_always(self, route: str, step: dict[str, Any]) -> None:
        self.emulator.admin("POST", "faults", json={"route": route, "action": step})

    def job_fault(self, outcome: str, **options: Any) -> None:
        self.emulator.admin("POST", "faults/jobs", json={"outcome": outcome, **options})

    def refuse_connections(self, conn_id: str) -> FaultProxy:
        """Route ``conn_id`` through a proxy that accepts no connection for a while (connect timeouts)."""
        conn = json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"])
        if str(conn["host"]).startswith(self.emulator.tls_url):  # Resource Manager: https only
            cert = Path(self.emulator.cert_path)
            proxy = FaultProxy(urlsplit(self.emulator.tls_url).port or 0, tls=(cert, cert.with_name("key.pem")))
            self._proxies.append(proxy)
            host = str(conn["host"]).replace(self.emulator.tls_url, proxy.url)
        else:
            proxy = self._proxy(urlsplit(self.emulator.url).port or 0)
            host = str(conn["host"]).replace(self.emulator.url, proxy.url)
        self.azureml_connection(conn_id, host=host, **CONNECT_RETRIES)
        proxy.refuse_connections_for(REFUSED_FOR)
        return proxy

    def _proxy(self, upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port)
        self._proxies.append(proxy)
        return proxy

    def before_retry(self) -> None:
        """Between tries (Airflow's retry_delay): a stopped Azurite is back."""
        if self.azurite is not None:
            self.azurite.wait_until_running()

    def settle(self) -> None:
        """After the tries: remove every fault, check each was met (and Retry-After honoured)."""
        faults = self.emulator.admin("GET", "faults").json()
        self.emulator.admin("DELETE", "faults")
        if self.azurite is not None:
            self.azurite.wait_until_running()
        for rule in faults["rules"]:
            assert rule["remaining"] in (0, None) and rule["matched"] > 0, f"fault not (fully) applied: {rule}"
        for route, seconds in self.retry_after:
            log = requests_log(self.emulator, route)  # "time" is when a request was answered
            throttled = next(i for i, r in enumerate(log) if r["status"] == 429)
            answered, following = log[throttled], log[throttled + 1]
            started_next = datetime.fromisoformat(following["time"]) - timedelta(milliseconds=following["duration_ms"])
            waited = (started_next - datetime.fromisoformat(answered["time"])).total_seconds()
            assert waited >= seconds - 0.05, f"{route}: Retry-After {seconds}s not honoured ({waited:.2f}s)"
        for proxy in self._proxies:
            assert proxy.pending_steps() == 0, f"storage fault not (fully) applied: {proxy.log}"
            if proxy.held is not None:  # clients were held back, then served
                assert proxy.refused, "no connection attempt met the refusing proxy"
                during, after = proxy.served_since_hold()
                assert (during, after > 0) == (0, True), f"connections not held back: {during} served during"

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.close()
        if self.azurite is not None:
            self.azurite.close()


@pytest.fixture
def env(emulator, blob_service, monkeypatch, tmp_path) -> Iterator[Env]:
    environment = Env(emulator, blob_service, monkeypatch, tmp_path)
    try:
        yield environment
    finally:
        environment.close()


# --- Airflow's retries ------------------------------------------------------------------------------


@dataclass
class Tries:
    result: Any = None
    errors: list[BaseException] = field(default_factory=list)
    succeeded: bool = False

    @property
    def last_error(self) -> str:
        return str(self.errors[-1]) if self.errors else ""


def run_tries(attempt: Callable[[], Any], *, tries: int, before_retry: Callable[[], None]) -> Tries:
    """Run ``attempt`` as Airflow runs a task with ``tries - 1`` retries (a fail exception ends it)."""
    outcome = Tries()
    for number in range(1, tries + 1):
        if number > 1:
            before_retry()
        try:
            outcome.result = attempt()
        except (AirflowFailException, AirflowSensorTimeout) as error:
            outcome.errors.append(error)
            break
        except Exception as error:  # any other error is retried by Airflow
            outcome.errors.append(error)
            continue
        outcome.succeeded = True
        break
    return outcome


def assert_recovered(cell: Fault, tries: Tries) -> None:
    assert tries.succeeded, tries.errors
    if cell.absorbed:
        assert tries.errors == [], "the fault should not have failed a try"
    else:
        assert tries.errors, "the fault should have failed the first try"


def secrets_of(emulator: RunningEmulator) -> set[str]:
    found: set[str] = {AZURITE_KEY}

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and len(value) >= 16 and re.search(r"key|token|secret", key, re.IGNORECASE):
            found.add(value)

    walk(emulator.state)
    return found


# A SAS signature with its value (loggers that redact print "sig=REDACTED" or "sig=***").
SAS_SIGNATURE = re.compile(r"sig=(?!REDACTED|\*\*\*)[^&\s'\"]{8,}")


def assert_no_secrets(emulator: RunningEmulator, *texts: str) -> None:
    """No key, token, SAS signature or connection string in ``texts``."""
    secrets = secrets_of(emulator)
    for text in texts:
        assert "AccountKey=" not in text and not SAS_SIGNATURE.search(text), "a credential in the text"
        for secret in secrets:
            assert secret not in text, "a secret in the text"


def assert_clean(emulator: RunningEmulator, tries: Tries) -> None:
    """No secret in any error, nor in the result (which goes to XCom)."""
    assert_no_secrets(emulator, *(str(e) for e in tries.errors), json.dumps(tries.result, default=str))
    assert "sig=" not in json.dumps(tries.result, default=str)


# --- faults ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """How one fault meets one target, and the outcome the cell must show."""

    expect: str
    inject: Callable[[Env], None]
    how: str
    # RECOVERS cells: True when the retry policies absorb the fault inside the try; False when the
    # try fails and Airflow's retry recovers (each cell asserts which, so a regression shows).
    absorbed: bool = True
    storage: str = "session"  # "session", "proxy" (faultable) or "private" (stoppable Azurite)
    tries: int = 3
    message: str | None = None  # what the final error must say (FAILS cells)
    options: dict[str, Any] = field(default_factory=dict)


def status(code: int, retry_after: int | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"kind": "status", "status": code}
    if retry_after is not None:
        step["retry_after_seconds"] = retry_after
    return step


DELAY = {"kind": "delay", "delay_seconds": SLOW}
STUDIO_INPUT_ERROR = json.dumps(
    {
        "error": {
            "code": "ModuleExecutionError",
            "message": "Module execution encountered an error.",
            "details": [
                {
                    "code": "InvalidDataset",
                    "target": "Train Model",
                    "message": "Error 0018: Dataset contains invalid data (column Tenure, line 7).",
                }
            ],
        }
    }
)
DROP = {"kind": "drop"}
MALFORMED = {"kind": "malformed"}


def read_timeout(conn_id: str) -> Callable[[Env], None]:
    def shorten(env: Env) -> None:
        env.azureml_connection(conn_id, read_timeout=READ_TIMEOUT)

    return shorten


def both(*actions: Callable[[Env], None]) -> Callable[[Env], None]:
    def run(env: Env) -> None:
        for action in actions:
            action(env)

    return run


def emulator_faults(*rules: tuple[str, list[dict[str, Any] | None]]) -> Callable[[Env], None]:
    def install(env: Env) -> None:
        for route, steps in rules:
            env.fault(route, *steps)

    return install


def jobs_running_for_status_reads(reads: int) -> Callable[[Env], None]:
    """Every BES job answers Running to its first ``reads`` status reads, then trains as usual: a
    fault on a later poll meets a running job however fast training is (a small job can end before
    the second poll)."""

    def hold(env: Env) -> None:
        env.job_fault("hang", status_reads=reads)

    return hold


def storage_faults(match: str, *steps: dict[str, Any] | None) -> Callable[[Env], None]:
    def install(env: Env) -> None:
        assert env.storage_proxy is not None
        env.storage_proxy.add(match, *steps)

    return install


def refuse_storage_connections(env: Env) -> None:
    assert env.storage_proxy is not None
    env.storage_settings(**STORAGE_CONNECT_RETRIES)
    env.storage_proxy.refuse_connections_for(REFUSED_FOR)


def azurite_down(env: Env) -> None:
    assert env.azurite is not None
    env.azurite.stop()


def storage_matrix(match: str, *, what: str, task_retry: tuple[str, ...] = ()) -> dict[str, Fault]:
    """The HTTP faults of blob storage, on the requests ``match`` (a regular expression searched in
    ``METHOD /path?query``) selects, ``what`` names them;
    ``task_retry`` lists the faults that fail the try (the storage client does not retry them)."""
    faults = {
        "429 Retry-After": Fault(
            RECOVERS, storage_faults(match, status(429, 1)), f"{what}: 429 Retry-After 1", storage="proxy"
        ),
        "500": Fault(RECOVERS, storage_faults(match, status(500), status(500)), f"{what}: 500 x2", storage="proxy"),
        "503": Fault(RECOVERS, storage_faults(match, status(503), status(503)), f"{what}: 503 x2", storage="proxy"),
        "connect timeout": Fault(
            RECOVERS, refuse_storage_connections, "storage accepts no connection for a while", storage="proxy"
        ),
        "read timeout": Fault(
            RECOVERS,
            both(lambda env: env.storage_settings(read_timeout=READ_TIMEOUT), storage_faults(match, DELAY)),
            f"{what}: served, answered after the client's read timeout",
            storage="proxy",
        ),
        "connection reset": Fault(
            RECOVERS, storage_faults(match, DROP, DROP), f"{what}: connection closed, no answer x2", storage="proxy"
        ),
        "malformed JSON": Fault(
            RECOVERS, storage_faults(match, MALFORMED), f"{what}: 200 with a body that is not XML", storage="proxy"
        ),
    }
    return {name: replace(f, absorbed=name not in task_retry) for name, f in faults.items()}


# --- the matrix ---------------------------------------------------------------------------------------

SUBMIT_FAULTS: dict[str, Fault] = {
    "429 Retry-After": Fault(
        RECOVERS,
        both(
            jobs_running_for_status_reads(2),
            emulator_faults(("bes.submit", [status(429, 1)]), ("bes.status", [None, status(429, 0)])),
        ),
        "bes.submit: 429 Retry-After 1; a status poll of the running job: 429 Retry-After 0",
    ),
    "500": Fault(
        RECOVERS,
        both(
            jobs_running_for_status_reads(2),
            emulator_faults(("bes.submit", [status(500)]), ("bes.status", [None, status(500)])),
        ),
        "bes.submit 500 (not retried in the try: the job may exist), a status poll of the running job 500",
        absorbed=False,
    ),
    "503": Fault(
        RECOVERS,
        both(
            jobs_running_for_status_reads(2),
            emulator_faults(
                ("bes.submit", [status(503)]), ("bes.start", [status(503)]), ("bes.status", [None, status(503)])
            ),
        ),
        "bes.submit, bes.start and a status poll of the running job: 503",
    ),
    "connect timeout": Fault(
        RECOVERS, lambda env: env.refuse_connections(TRAINING_CONN), "BES accepts no connection for a while"
    ),
    "read timeout": Fault(
        RECOVERS,
        both(read_timeout(TRAINING_CONN), emulator_faults(("bes.submit", [DELAY]))),
        "bes.submit answers after the read timeout (not retried in the try: the job may exist)",
        absorbed=False,
    ),
    "connection reset": Fault(
        RECOVERS,
        both(
            jobs_running_for_status_reads(2),
            emulator_faults(("bes.submit", [DROP]), ("bes.start", [DROP]), ("bes.status", [None, DROP])),
        ),
        "bes.submit, bes.start and a status poll of the running job: connection closed without an answer",
        absorbed=False,
    ),
    "malformed JSON": Fault(
        RECOVERS,
        both(
            jobs_running_for_status_reads(2),
            emulator_faults(("bes.submit", [MALFORMED]), ("bes.status", [None, MALFORMED])),
        ),
        "bes.submit and a status poll of the running job: 200 with a body that is not JSON",
    ),
    # Studio's Details blame the job's input (a module error below 1000): the first try fails the task,
    # without Airflow's retries: one job, not three.
    "BES job Failed": Fault(
        FAILS,
        lambda env: env.job_fault("fail", details=STUDIO_INPUT_ERROR),
        "every job ends Failed with Studio's details: a module error in its input",
        message=r"Failed: Train Model: Error 0018: Dataset contains invalid data \(column Tenure, line 7\)\.",
        options={"without_retries": True},
    ),
    "job stuck past deadline": Fault(
        FAILS,
        lambda env: env.job_fault("hang"),
        "every job stays Running past job_timeout",
        tries=2,
        message=r"did not end within job_timeout=0:00:01\.500000; it was cancelled",
        options={"job_timeout": timedelta(seconds=1.5)},
    ),
    # The service answers 500 InternalError/ResourceDownload (storage not reachable), not a 400 about the
    # blob: a 4xx would end the task without Airflow's retries.
    "Azurite unavailable": Fault(
        RECOVERS,
        azurite_down,
        "storage down at submit: the service cannot reach the input (500, not retried in the try: a submit)",
        absorbed=False,
        storage="private",
    ),
}

EVALUATE_FAULTS: dict[str, Fault] = {
    **storage_matrix(
        r"^GET /devstoreaccount1/[^/?]+/eval/evaluation\.csv",
        what="the CSV download",
        task_retry=("429 Retry-After", "malformed JSON"),
    ),
    "Azurite unavailable": Fault(
        RECOVERS, azurite_down, "storage down when the CSV is read", absorbed=False, storage="private"
    ),
}


def stop_azurite_before(owner: Any, name: str) -> Callable[[Env], None]:
    """Stop the private Azurite right before the first call of ``owner.name`` (then call it)."""

    def install(env: Env) -> None:
        real = getattr(owner, name)
        calls = [0]

        def stopping_first(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                azurite_down(env)
            return real(*args, **kwargs)

        env.monkeypatch.setattr(owner, name, stopping_first)

    return install


SMOKE_FAILS = Fault(
    FAILS,
    lambda env: env.fault_always("rrs.execute", status(400)),
    "every RRS call after the PATCH: 400",
    message=r"smoke test failed .*the previous model \S+ was put back",
)

PATCH_FAULTS: dict[str, Fault] = {
    "429 Retry-After": Fault(
        RECOVERS,
        emulator_faults(("mgmt.endpoint.patch", [status(429, 1)]), ("mgmt.endpoint.get", [None, status(429, 0)])),
        "the PATCH: 429 Retry-After 1; the read-back: 429 Retry-After 0",
    ),
    "500": Fault(
        RECOVERS,
        emulator_faults(("mgmt.endpoint.patch", [status(500)]), ("mgmt.endpoint.get", [None, status(500)])),
        "the PATCH and the read-back: 500",
    ),
    "503": Fault(
        RECOVERS,
        emulator_faults(("mgmt.endpoint.patch", [status(503), status(503)])),
        "the PATCH: 503 x2",
    ),
    "connect timeout": Fault(
        RECOVERS, lambda env: env.refuse_connections(MANAGEMENT_CONN), "management accepts no connection for a while"
    ),
    "read timeout": Fault(
        RECOVERS,
        both(read_timeout(MANAGEMENT_CONN), emulator_faults(("mgmt.endpoint.patch", [DELAY]))),
        "the PATCH answers after the read timeout",
    ),
    "connection reset": Fault(
        RECOVERS,
        emulator_faults(("mgmt.endpoint.patch", [DROP]), ("mgmt.endpoint.get", [None, DROP])),
        "the PATCH and the read-back: connection closed without an answer",
    ),
    "malformed JSON": Fault(
        RECOVERS,
        emulator_faults(("mgmt.endpoint.patch", [MALFORMED])),
        "the PATCH: 200 with a broken body, not applied (the update silently did not take)",
        absorbed=False,
    ),
    "smoke test fails after PATCH": SMOKE_FAILS,
    # Down from the PATCH on, the service could not read the model, but the emulator reports that only
    # after its 15 s storage backoff (SubmitBesJob's cell pays it once).
    "Azurite unavailable": Fault(
        RECOVERS,
        azurite_down,
        "storage down when the task starts (the ledger's lock cannot be taken)",
        absorbed=False,
        storage="private",
    ),
}

UPDATE_FAULTS: dict[str, Fault] = {
    "429 Retry-After": Fault(
        RECOVERS,
        emulator_faults(("arm.webservice.patch", [status(429, 1)]), ("arm.asyncop.get", [status(429, 0)])),
        "the PATCH: 429 Retry-After 1; the operation poll: 429 Retry-After 0",
    ),
    "500": Fault(
        RECOVERS,
        emulator_faults(("arm.webservice.patch", [status(500)]), ("arm.asyncop.get", [status(500)])),
        "the PATCH and the operation poll: 500",
    ),
    "503": Fault(
        RECOVERS,
        emulator_faults(("arm.webservice.patch", [status(503)]), ("arm.webservice.get", [None, status(503)])),
        "the PATCH and the verifying GET: 503",
    ),
    "connect timeout": Fault(
        RECOVERS, lambda env: env.refuse_connections(ARM_CONN), "Resource Manager accepts no connection for a while"
    ),
    "read timeout": Fault(
        RECOVERS,
        both(read_timeout(ARM_CONN), emulator_faults(("arm.webservice.patch", [DELAY]))),
        "the PATCH answers after the read timeout",
    ),
    "connection reset": Fault(
        RECOVERS,
        emulator_faults(("arm.webservice.patch", [DROP]), ("arm.asyncop.get", [DROP])),
        "the PATCH and the operation poll: connection closed without an answer",
    ),
    "malformed JSON": Fault(
        RECOVERS,
        emulator_faults(("arm.webservice.patch", [MALFORMED]), ("arm.asyncop.get", [MALFORMED])),
        "the PATCH (not applied) and the operation poll: 200 with a body that is not JSON",
    ),
    "ARM operation Failed": Fault(
        FAILS,
        lambda env: None,
        "the async operation ends Failed (the service cannot load the model)",
        message=r"update of web service energy-predictive ended Failed: IncompatibleModel",
        options={"challenger": "churn"},
    ),
    "job stuck past deadline": Fault(
        FAILS,
        lambda env: env.emulator.admin("POST", "faults/operations", json={"outcome": "hang", "count": 1}),
        "the async operation stays Provisioning past operation_timeout (the retry finds it still running)",
        tries=2,
        message=r"still being updated \(provisioningState Provisioning\) after operation_timeout",
        options={"operation_timeout": timedelta(seconds=1.5), "operation_still_running": True},
    ),
    "smoke test fails after PATCH": SMOKE_FAILS,
    # Down from the PATCH on, the operation would fail reading the model, but only after the emulator's
    # 15 s storage backoff; down at the record covers the retry that finds its update already applied.
    "Azurite unavailable": Fault(
        RECOVERS,
        stop_azurite_before(PromotionGuard, "record"),
        "storage down when the update is recorded (after the operation succeeded; the lock is left held)",
        absorbed=False,
        storage="private",
    ),
}

SENSOR_FAULTS: dict[str, Fault] = {
    **storage_matrix(r"^GET /devstoreaccount1/[^/?]+\?.*comp=list", what="listings"),
    "Azurite unavailable": Fault(
        RECOVERS,
        both(azurite_down, lambda env: env.azurite.restart_after(2.0) if env.azurite else None),
        "storage down for 2 s while the sensor waits",
        storage="private",
    ),
}

LEDGER_FAULTS: dict[str, Fault] = {
    **storage_matrix(
        r"^PUT /devstoreaccount1/ledger-[^/]+/records/.*comp=appendblock",
        what="the append",
        task_retry=("429 Retry-After", "malformed JSON"),
    ),
    "Azurite unavailable": Fault(
        RECOVERS,
        stop_azurite_before(PromotionGuard, "record"),
        "storage down when the promotion is recorded (after the PATCH; the lock is left held)",
        absorbed=False,
        storage="private",
    ),
}
# The ledger's first request opens its connection; a connect timeout can only meet the guard there.
LEDGER_FAULTS["connect timeout"] = Fault(
    RECOVERS,
    refuse_storage_connections,
    "storage accepts no connection for a while (the guard's lock and read)",
    storage="proxy",
)

CELLS: dict[str, dict[str, Fault]] = {
    SUBMIT: SUBMIT_FAULTS,
    EVALUATE: EVALUATE_FAULTS,
    PATCH: PATCH_FAULTS,
    UPDATE: UPDATE_FAULTS,
    SENSOR: SENSOR_FAULTS,
    LEDGER: LEDGER_FAULTS,
}

NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("ARM operation Failed", SUBMIT): "BES makes no Resource Manager call",
    ("smoke test fails after PATCH", SUBMIT): "training makes no RRS call and patches nothing",
    ("BES job Failed", EVALUATE): "it reads a finished job's CSV; a failed job fails SubmitBesJob before it",
    ("job stuck past deadline", EVALUATE): "it reads a finished job's CSV; a stuck job is cancelled by SubmitBesJob",
    ("ARM operation Failed", EVALUATE): "it reads blob storage only",
    ("smoke test fails after PATCH", EVALUATE): "it reads blob storage only",
    ("BES job Failed", PATCH): "promotion makes no BES call",
    ("job stuck past deadline", PATCH): "promotion makes no BES call",
    ("ARM operation Failed", PATCH): "a classic endpoint PATCH is synchronous: there is no async operation",
    ("BES job Failed", UPDATE): "promotion makes no BES call",
    ("BES job Failed", SENSOR): "the sensor makes no BES call",
    ("job stuck past deadline", SENSOR): "the sensor makes no BES call",
    ("ARM operation Failed", SENSOR): "the sensor makes no Resource Manager call",
    ("smoke test fails after PATCH", SENSOR): "the sensor makes no RRS call",
    ("BES job Failed", LEDGER): "the ledger talks to blob storage only",
    ("job stuck past deadline", LEDGER): "the ledger talks to blob storage only",
    ("ARM operation Failed", LEDGER): "nothing is recorded unless the operation succeeded (the Update cell checks)",
    ("smoke test fails after PATCH", LEDGER): "nothing is recorded after a failed smoke test (the PATCH cells check)",
}

APPLICABLE = [(fault, target) for target in TARGETS for fault in FAULTS if fault in CELLS[target]]


def test_the_matrix_is_complete():
    """Every fault x target pair is a test case or says why it does not apply, never both."""
    for target in TARGETS:
        for fault in FAULTS:
            tested = fault in CELLS[target]
            reason = NOT_APPLICABLE.get((fault, target))
            assert tested != (reason is not None), (fault, target, "tested" if tested else "untested")
            assert reason is None or reason.strip()
    assert set(NOT_APPLICABLE) <= {(f, t) for f in FAULTS for t in TARGETS}
    for target, faults in CELLS.items():
        assert set(faults) <= set(FAULTS), target
        for name, fault in faults.items():
            assert fault.expect in (RECOVERS, FAILS) and fault.how, (target, name)
            assert (fault.expect == FAILS) == (fault.message is not None), (target, name)
    assert len(APPLICABLE) + len(NOT_APPLICABLE) == len(FAULTS) * len(TARGETS)


@pytest.mark.parametrize(("fault", "target"), APPLICABLE, ids=[f"{t}-{f}" for f, t in APPLICABLE])
def test_cell(
    fault: str,
    target: str,
    env: Env,
    models: dict[str, str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    cell = CELLS[target][fault]
    if cell.storage == "proxy":
        env.use_storage_proxy()
    elif cell.storage == "private":
        env.use_private_azurite()
    RUNNERS[target](env, cell, models)
    # Everything the tasks, hooks and SDKs logged in this cell (structlog prints, logging records).
    logged = capfd.readouterr()
    assert_no_secrets(env.emulator, logged.out, logged.err, caplog.text)


# --- models trained once (raw BES), in the session's Azurite -------------------------------------------


@pytest.fixture(scope="module")
def models(azurite: str, blob_service: BlobServiceClient, emulator_session: RunningEmulator) -> dict[str, str]:
    """``container/blob`` of a churn and an energy model, and a churn evaluation CSV."""
    from emulator.datasets import generate_csv

    container = f"matrix-{uuid.uuid4().hex[:10]}"
    blob_service.create_container(container)

    def train(kind: str, **parameters: str) -> str:
        blob_service.get_blob_client(container, f"{kind}.csv").upload_blob(
            generate_csv(kind, rows=200, window=2, seed=3).encode()
        )
        svc = (
            emulator_session.classic_endpoint("training")
            if kind == "churn"
            else emulator_session.arm_service("training")
        )
        finished = DataPlane(svc["api_location"], svc["primary_key"]).run(
            {
                "Inputs": {"input1": connection_reference(azurite, f"{container}/{kind}.csv")},
                "Outputs": {
                    "output1": connection_reference(azurite, f"{container}/{kind}/model.ilearner"),
                    "output2": connection_reference(azurite, f"{container}/{kind}/evaluation.csv"),
                },
                "GlobalParameters": parameters,
            }
        )
        assert finished["StatusCode"] == "Finished", finished
        return f"{container}/{kind}/model.ilearner"

    return {
        "churn": train("churn"),
        "energy": train("energy", **{"Training window": "w2"}),
        "evaluation": f"{container}/churn/evaluation.csv",
    }


def copy_blob(env: Env, source: str, target: str) -> str:
    """Copy a blob of the session's storage to ``target`` (``container/blob``) in the cell's storage."""
    source_container, source_blob = source.split("/", 1)
    target_container, target_blob = target.split("/", 1)
    data = env.session_blobs.get_blob_client(source_container, source_blob).download_blob().readall()
    env.blobs.get_blob_client(target_container, target_blob).upload_blob(data, overwrite=True)
    return target


# --- SubmitBesJobOperator -------------------------------------------------------------------------------


def run_submit(env: Env, cell: Fault, models: dict[str, str]) -> None:
    from emulator.datasets import generate_csv

    container = env.create_container("train")
    env.blobs.get_blob_client(container, "in/churn.csv").upload_blob(
        generate_csv("churn", rows=200, window=2, seed=1).encode()
    )
    store = DictStateStore()
    cell.inject(env)

    def attempt() -> Any:
        op = SubmitBesJobOperator(
            task_id="train",
            inputs={"input1": f"{container}/in/churn.csv"},
            outputs={"output1": f"{container}/out/model.ilearner", "output2": f"{container}/out/evaluation.csv"},
            azureml_conn_id=TRAINING_CONN,
            deferrable=True,
            poll_interval=0.2,
            max_poll_interval=0.5,
            job_timeout=cell.options.get("job_timeout", timedelta(minutes=2)),
        )
        return run_deferrable(op, make_context(store))

    tries = run_tries(attempt, tries=cell.tries, before_retry=env.before_retry)
    env.settle()
    assert_clean(env.emulator, tries)
    every_job = jobs(env.emulator)
    assert not [j for j in every_job if j["status"] in ("NotStarted", "Running")], every_job  # none left behind
    if cell.expect == RECOVERS:
        assert_recovered(cell, tries)
        assert [(j["id"], j["status"]) for j in every_job] == [(tries.result["job_id"], "Finished")]
        model = tries.result["outputs"]["output1"]
        assert env.blobs.get_blob_client(model["container"], model["blob_name"]).exists()
    else:
        assert not tries.succeeded
        assert re.search(cell.message or "", tries.last_error), tries.last_error
        assert len(every_job) == len(tries.errors)  # one job per try, none reused after it ended
        if cell.options.get("without_retries"):
            assert len(tries.errors) == 1 and isinstance(tries.errors[0], AirflowFailException), tries.errors
        assert {j["status"] for j in every_job} <= {"Failed", "Cancelled"}
        if cell.options.get("job_timeout"):
            cancelled = {r["path"].rsplit("/", 1)[-1] for r in requests_log(env.emulator, "bes.delete")}
            assert cancelled == {j["id"] for j in every_job}


# --- EvaluateModelOperator ----------------------------------------------------------------------------


def run_evaluate(env: Env, cell: Fault, models: dict[str, str]) -> None:
    container = env.create_container("eval")
    csv = copy_blob(env, models["evaluation"], f"{container}/eval/evaluation.csv")
    rules = {"metric": "AUC", "threshold": 0.5, "min_absolute_improvement": 0.001}

    def op() -> EvaluateModelOperator:
        return EvaluateModelOperator(
            task_id="evaluate", evaluation_results=csv, rules=rules, champion_metrics={"AUC": 0.5}
        )

    expected = op().evaluate()  # the decision without faults
    cell.inject(env)
    tries = run_tries(lambda: op().execute(make_context()), tries=cell.tries, before_retry=env.before_retry)
    env.settle()
    assert_clean(env.emulator, tries)
    assert cell.expect == RECOVERS
    assert_recovered(cell, tries)
    assert tries.result == expected  # the fault changed nothing in the decision


# --- BlobArrivalSensor -------------------------------------------------------------------------------


def run_sensor(env: Env, cell: Fault, models: dict[str, str]) -> None:
    container = env.create_container("arrival")
    prefix = "incoming/2026-11-26/"
    env.blobs.get_blob_client(container, prefix + "part-0.csv").upload_blob(b"a,b\n1,2\n")
    delivered: list[float] = []
    listed = threading.Event()
    watch_listings(env, listed)

    def deliver_the_rest() -> None:
        """The second file and the marker land once the sensor has listed the half-uploaded window."""
        assert listed.wait(60), "the sensor never listed the window"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                client = env.blobs
                client.get_blob_client(container, prefix + "part-1.csv").upload_blob(b"a,b\n3,4\n", overwrite=True)
                client.get_blob_client(container, prefix + "_SUCCESS").upload_blob(b"", overwrite=True)
            except Exception:  # storage is down in one cell: keep trying, as an uploader would
                time.sleep(0.2)
                continue
            delivered.append(time.time())
            return

    def attempt() -> Any:
        op = BlobArrivalSensor(
            task_id="wait_for_data",
            container_name=container,
            prefix="incoming/{window_start:%Y-%m-%d}/",
            pattern="*.csv",
            marker="_SUCCESS",
            min_files=2,
            stable_for=1,
            poke_interval=0.2,
            timeout=45,
            window_start="2026-11-26T00:00:00+00:00",
            window_end="2026-11-27T00:00:00+00:00",
        )
        context = make_context(params={}, dag_run=None, logical_date=None)
        return run_deferrable(op, context)

    cell.inject(env)
    uploader = threading.Thread(target=deliver_the_rest, daemon=True)
    uploader.start()
    tries = run_tries(attempt, tries=cell.tries, before_retry=env.before_retry)
    uploader.join(timeout=60)
    env.settle()
    assert_clean(env.emulator, tries)
    assert cell.expect == RECOVERS
    assert_recovered(cell, tries)
    assert delivered, "the rest of the window was never delivered"
    result = tries.result
    assert [b["name"] for b in result["blobs"]] == [prefix + "part-0.csv", prefix + "part-1.csv"]
    assert result["marker"]["name"] == prefix + "_SUCCESS"
    for blob in result["blobs"]:  # exactly the final content, not an earlier state
        current = env.blobs.get_blob_client(container, blob["name"]).get_blob_properties()
        assert blob["etag"].strip('"') == str(current.etag).strip('"')
        assert blob["size"] == current.size


def watch_listings(env: Env, listed: threading.Event) -> None:
    """Set ``listed`` once the sensor or its trigger has listed the window (successfully)."""
    from azureml_retrain.sensors import blob_arrival as sensor_module
    from azureml_retrain.triggers import blob_arrival as trigger_module

    real_sync, real_async = sensor_module.list_blobs_sync, trigger_module.list_blobs_async

    def listing_sync(*args: Any) -> Any:
        listing = real_sync(*args)
        listed.set()
        return listing

    async def listing_async(*args: Any) -> Any:
        listing = await real_async(*args)
        listed.set()
        return listing

    env.monkeypatch.setattr(sensor_module, "list_blobs_sync", listing_sync)
    env.monkeypatch.setattr(trigger_module, "list_blobs_async", listing_async)


# --- promotions: PatchEndpointOperator, UpdateWebServiceDefinitionOperator, and the ledger write ------------


@dataclass(frozen=True)
class Promotion:
    target_name: str
    challenger: str  # key of ``models``
    rows: list[dict[str, str]]


CLASSIC = Promotion("churn-retrain01", "churn", CHURN_SMOKE_ROWS)
ARM = Promotion("energy-predictive", "energy", ENERGY_SMOKE_ROWS)


def serving(env: Env, promotion: Promotion) -> str:
    if promotion is CLASSIC:
        uri = endpoint_model(env.emulator, "retrain01")
        assert uri is not None
        return uri
    return arm_model("energy-predictive")


def model_id(env: Env, promotion: Promotion) -> str:
    """The model the service really scores with (the emulator's view, not the definition's)."""
    state = env.emulator.admin("GET", "state").json()
    if promotion is CLASSIC:
        service = next(s for s in state["workspaces"][0]["web_services"] if s["kind"] == "predictive")
        return str(next(e for e in service["endpoints"] if e["name"] == "retrain01")["model_id"])
    return str(next(s for s in state["arm_web_services"] if s["name"] == "energy-predictive")["model_id"])


def provisioning_state(env: Env) -> str:
    state = env.emulator.admin("GET", "state").json()
    return str(next(s for s in state["arm_web_services"] if s["name"] == "energy-predictive")["provisioning_state"])


def scoring(env: Env, promotion: Promotion) -> DataPlane:
    return classic_scoring(env.emulator) if promotion is CLASSIC else arm_scoring(env.emulator)


def applied_changes(env: Env, promotion: Promotion) -> int:
    """Model changes the service applied: classic, successful PATCHes less injected 200s that did
    nothing; Resource Manager, async operations that succeeded (every accepted PATCH starts one)."""
    route = "mgmt.endpoint.patch" if promotion is CLASSIC else "arm.webservice.patch"
    accepted = sum(1 for r in requests_log(env.emulator, route) if r["status"] == 200)
    accepted -= env.malformed_answers.get(route, 0)
    if promotion is CLASSIC:
        return accepted
    hook = AzureMLResourceManagerHook(ARM_CONN)
    operations = {r["path"] for r in requests_log(env.emulator, "arm.asyncop.get")}
    assert len(operations) == accepted, "an accepted PATCH whose operation was never watched"
    urls = [f"{env.emulator.tls_url}{path}?api-version=2017-01-01" for path in operations]
    states = [operation_state(hook.get_async_operation(url)) for url in urls]
    return states.count("Succeeded")


def scored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k.startswith("Scored")} for row in rows]


def run_promotion(env: Env, cell: Fault, models: dict[str, str], promotion: Promotion) -> None:
    models_container = env.create_container("models")
    source = models[cell.options.get("challenger", promotion.challenger)]
    challenger = copy_blob(env, source, f"{models_container}/challenger/model.ilearner")
    challenger_uri = f"{env.storage_endpoint}/{challenger}"
    champion_uri = serving(env, promotion)
    ledger_container = f"ledger-{uuid.uuid4().hex[:10]}"
    champion = LedgerRecord(
        kind="promotion",
        target=promotion.target_name,
        model_uri=champion_uri,
        metrics={"AUC": 0.8},
        window=CHAMPION_WINDOW,
        dag_id="retrain_churn",
        run_id=CHAMPION_RUN_ID,
    )
    PromotionLedger(WASB_CONN, ledger_container).append(champion, etag=None)
    before = predictions(scoring(env, promotion), promotion.rows)
    model_before = model_id(env, promotion)
    cell.inject(env)

    def attempt() -> Any:
        common: dict[str, Any] = {
            "model": challenger,
            "smoke_test_rows": promotion.rows,
            "ledger_container": ledger_container,
            "target_name": promotion.target_name,
            "expected_model_uri": champion_uri,
            "window": CHALLENGER_WINDOW,
            "metrics": {"challenger": {"AUC": 0.9}},
            "verify_poll_interval": 0.1,
            # The service switches at once; only a PATCH that did not take waits this out.
            "verify_timeout": timedelta(seconds=5),
        }
        if promotion is CLASSIC:
            op: Any = PatchEndpointOperator(
                task_id="promote_classic_endpoints",
                web_service_id=churn_service_id(env.emulator),
                endpoint_name="retrain01",
                **common,
            )
        else:
            op = UpdateWebServiceDefinitionOperator(
                task_id="promote_arm_web_services",
                web_service_name="energy-predictive",
                deferrable=False,
                poll_interval=0.1,
                operation_timeout=cell.options.get("operation_timeout", timedelta(seconds=30)),
                **common,
            )
        return op.execute(make_context(run_id=RUN_ID))

    tries = run_tries(attempt, tries=cell.tries, before_retry=env.before_retry)
    env.settle()
    assert_clean(env.emulator, tries)
    records = [
        (r.kind, r.model_uri, r.previous_model_uri, r.run_id)
        for r in PromotionLedger(WASB_CONN, ledger_container).records(promotion.target_name)
    ]
    now = predictions(scoring(env, promotion), promotion.rows)
    champion_row = ("promotion", champion_uri, None, CHAMPION_RUN_ID)
    if cell.expect == RECOVERS:
        assert_recovered(cell, tries)
        assert serving(env, promotion) == challenger_uri
        assert records == [champion_row, ("promotion", challenger_uri, champion_uri, RUN_ID)]
        assert scored(now) == tries.result["smoke_test"]["predictions"]
        assert scored(now) != scored(before)
        assert model_id(env, promotion) != model_before
        assert applied_changes(env, promotion) == 1
    else:
        assert not tries.succeeded
        assert re.search(cell.message or "", tries.last_error), tries.last_error
        assert records == [champion_row]
        assert now == before
        assert model_id(env, promotion) == model_before
        if cell.options.get("operation_still_running"):
            # The definition already shows the update's uri, but the service scores as before.
            assert (provisioning_state(env), serving(env, promotion)) == ("Provisioning", challenger_uri)
            # The emulator runs one operation at a time: let the held one end, for later cells.
            for path in {r["path"] for r in requests_log(env.emulator, "arm.asyncop.get")}:
                env.emulator.admin("POST", f"operations/{path.rsplit('/', 1)[-1]}/release")
            wait_until_provisioned(env)
        else:
            assert serving(env, promotion) == champion_uri


def wait_until_provisioned(env: Env, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while provisioning_state(env) == "Provisioning":
        assert time.monotonic() < deadline, "the update never ended"
        time.sleep(0.2)


RUNNERS: dict[str, Callable[[Env, Fault, dict[str, str]], None]] = {
    SUBMIT: run_submit,
    EVALUATE: run_evaluate,
    PATCH: lambda env, cell, models: run_promotion(env, cell, models, CLASSIC),
    UPDATE: lambda env, cell, models: run_promotion(env, cell, models, ARM),
    SENSOR: run_sensor,
    LEDGER: lambda env, cell, models: run_promotion(env, cell, models, CLASSIC),
}
