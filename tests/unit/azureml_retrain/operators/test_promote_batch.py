"""A promotion operator given ``targets``: a batch promoted concurrently, each target on its own path
(HTTP faked at the transport level, one scripted transport per endpoint; no storage, no network)."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException
from requests.adapters import BaseAdapter

from azureml_retrain.exceptions import (
    ConfigurationError,
    PromotionBatchError,
    PromotionBatchRejectedError,
)
from azureml_retrain.hooks.classic_management import AzureMLClassicManagementHook
from azureml_retrain.links import LINK_XCOM_KEY
from azureml_retrain.operators.promote import (
    TARGET_RESULTS_XCOM_KEY,
    PatchEndpointOperator,
    UpdateWebServiceDefinitionOperator,
)
from azureml_retrain.storage import StorageAccount
from support.airflow_context import make_context
from support.fake_transport import FakeTransport, Reply, set_classic_management_connection

# Not an azureml.net host: the extra link then names the endpoint (the emulator's view of it).
MGMT = "https://management.example.test"
RESOURCE = "Customer Churn [trained model]"
MODEL = "models/run7/model.ilearner"
OLD = "models/run6/model.ilearner"
SERVICE = "predictive1"


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    set_classic_management_connection(monkeypatch, MGMT)


class EndpointRouter(BaseAdapter):
    """Sends each request to the scripted transport of the endpoint its URL names.

    ``barrier``: every endpoint's first request waits there until all of them have arrived, so a
    batch that did not promote its targets at the same time fails on the barrier's timeout
    (whatever the machine's speed, a concurrent batch passes).
    """

    def __init__(self, scripts: dict[str, list[Reply]], barrier: threading.Barrier | None = None) -> None:
        super().__init__()
        self.transports = {name: FakeTransport(*script) for name, script in scripts.items()}
        self.barrier = barrier
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def send(self, request, **kwargs):  # type: ignore[override]
        match = re.search(r"/endpoints/([a-z0-9]+)", request.path_url)
        assert match, f"unexpected request {request.method} {request.url}"
        name = match.group(1)
        with self._lock:
            first = name not in self._seen
            self._seen.add(name)
        if first and self.barrier is not None:
            self.barrier.wait()
        return self.transports[name].send(request, **kwargs)

    def close(self) -> None:
        pass

    def methods(self, name: str) -> list[str]:
        return [r.method for r in self.transports[name].requests]


def route(monkeypatch: pytest.MonkeyPatch, router: EndpointRouter) -> EndpointRouter:
    """Every management hook (each target of a batch has its own) sends through ``router``."""
    session = requests.Session()
    session.mount("https://", router)
    monkeypatch.setattr(AzureMLClassicManagementHook, "session", property(lambda self: session))
    return router


def endpoint(name: str, relative_location: str | None) -> Reply:
    return Reply(
        200,
        {
            "Name": name,
            "ApiLocation": f"https://ussouthcentral.services.azureml.net/workspaces/ws1/services/{name}",
            "PrimaryKey": "endpoint-primary-key-123",
            "Resources": [
                {
                    "Name": RESOURCE,
                    "Kind": "TrainedModel",
                    "Location": {
                        "BaseLocation": StorageAccount("wasb_default").base_location if relative_location else None,
                        "RelativeLocation": relative_location,
                        "SasBlobToken": None,
                    },
                }
            ],
        },
    )


def promoted(name: str) -> list[Reply]:
    """GET (serves the old model), PATCH, GET (verify, not yet), GET (verify: the new model)."""
    return [endpoint(name, OLD), Reply(200), endpoint(name, OLD), endpoint(name, MODEL)]


def batch(*names: str, **kwargs: Any) -> PatchEndpointOperator:
    return PatchEndpointOperator(
        task_id="promote",
        web_service_id=SERVICE,
        targets=[{"endpoint_name": name} for name in names],
        model="models/run7/model.ilearner",
        verify_poll_interval=0,
        **kwargs,
    )


def test_a_batch_promotes_its_targets_concurrently_each_on_its_own_path(monkeypatch):
    names = ("retrain01", "retrain02", "retrain03")
    router = route(
        monkeypatch,
        EndpointRouter(
            {
                "retrain01": promoted("retrain01"),
                "retrain02": promoted("retrain02"),
                "retrain03": [endpoint("retrain03", MODEL)],
            },
            barrier=threading.Barrier(len(names), timeout=60),
        ),
    )
    context = make_context()
    results = batch(*names).execute(context)
    assert [r["target"] for r in results] == [f"{SERVICE}/{n}" for n in names]
    assert [r["changed"] for r in results] == [True, True, False]
    assert router.methods("retrain01") == router.methods("retrain02") == ["GET", "PATCH", "GET", "GET"]
    assert router.methods("retrain03") == ["GET"]  # already serving: left as it is
    # Each PATCH carried its own endpoint's fresh read-only SAS; no result carries one.
    for name in ("retrain01", "retrain02"):
        sent = json.loads(router.transports[name].requests[1].body)["Resources"][0]["Location"]
        assert sent["RelativeLocation"] == MODEL and "sig=" in sent["SasBlobToken"]
    assert "sig=" not in json.dumps(results)
    # The extra link opens the batch's first target.
    assert context["ti"].xcom[LINK_XCOM_KEY].endswith(f"/endpoints/{names[0]}")
    assert TARGET_RESULTS_XCOM_KEY not in context["ti"].xcom


def test_one_failing_target_does_not_stop_the_others_and_the_task_names_it(monkeypatch):
    router = route(
        monkeypatch,
        EndpointRouter(
            {
                # Never shows the new model: a verification failure (retryable).
                "retrain01": [endpoint("retrain01", OLD), Reply(200), endpoint("retrain01", OLD)],
                # Shows it on the first read back.
                "retrain02": [endpoint("retrain02", OLD), Reply(200), endpoint("retrain02", MODEL)],
            }
        ),
    )
    context = make_context()
    with pytest.raises(PromotionBatchError) as failed:
        batch("retrain01", "retrain02", verify_timeout=timedelta(0)).execute(context)
    assert not isinstance(failed.value, AirflowFailException)  # retried: the retry redoes retrain01
    assert f"1 of 2 target(s) failed: {SERVICE}/retrain01: PromotionVerificationError" in str(failed.value)
    assert "retrain02" not in str(failed.value).split("failed:")[1].split("(")[0]
    assert router.methods("retrain02") == ["GET", "PATCH", "GET"]
    # The promoted target's result reaches the report although the task failed.
    assert [r["target"] for r in context["ti"].xcom[TARGET_RESULTS_XCOM_KEY]] == [f"{SERVICE}/retrain02"]


def test_a_retry_of_the_batch_redoes_only_the_failed_target(monkeypatch):
    # The earlier try promoted retrain02: it now serves the model and is only read.
    router = route(
        monkeypatch,
        EndpointRouter({"retrain01": promoted("retrain01"), "retrain02": [endpoint("retrain02", MODEL)]}),
    )
    results = batch("retrain01", "retrain02").execute(make_context())
    assert [(r["target"], r["changed"]) for r in results] == [
        (f"{SERVICE}/retrain01", True),
        (f"{SERVICE}/retrain02", False),
    ]
    assert router.methods("retrain01") == ["GET", "PATCH", "GET", "GET"]
    assert router.methods("retrain02") == ["GET"]


def test_a_batch_whose_failures_a_retry_cannot_help_fails_without_retries(monkeypatch):
    route(
        monkeypatch,
        EndpointRouter(
            {
                "retrain01": [Reply(404, {"error": {"code": "NotFound", "message": "no such endpoint"}})],
                "retrain02": promoted("retrain02"),
            }
        ),
    )
    context = make_context()
    with pytest.raises(PromotionBatchRejectedError, match=r"retrain01: ConfigurationError: .*create_endpoint=True"):
        batch("retrain01", "retrain02").execute(context)
    assert [r["target"] for r in context["ti"].xcom[TARGET_RESULTS_XCOM_KEY]] == [f"{SERVICE}/retrain02"]


def test_at_most_max_parallel_targets_at_once(monkeypatch):
    active, peak, lock = 0, 0, threading.Lock()
    real = PatchEndpointOperator.promote

    def counting(self: PatchEndpointOperator, context: Any) -> dict[str, Any]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return real(self, context)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(PatchEndpointOperator, "promote", counting)
    names = [f"retrain0{i}" for i in range(1, 6)]
    route(monkeypatch, EndpointRouter({n: [endpoint(n, MODEL)] for n in names}))
    assert len(batch(*names, max_parallel_targets=1).execute(make_context())) == 5
    assert peak == 1


def test_targets_may_set_only_what_addresses_a_target():
    with pytest.raises(ConfigurationError, match=r"targets\[1\]: \['sas_lifetime'\] cannot differ"):
        PatchEndpointOperator(
            task_id="p",
            model=MODEL,
            web_service_id=SERVICE,
            targets=[{"endpoint_name": "a"}, {"endpoint_name": "b", "sas_lifetime": 5}],
        )
    with pytest.raises(ConfigurationError, match="repeated"):
        PatchEndpointOperator(
            task_id="p", model=MODEL, web_service_id=SERVICE, targets=[{"endpoint_name": "a"}, {"endpoint_name": "a"}]
        ).batch_members()


def test_the_single_target_arguments_are_still_required_without_targets():
    with pytest.raises(ConfigurationError, match="web_service_id and endpoint_name"):
        PatchEndpointOperator(task_id="p", model=MODEL, web_service_id=SERVICE)
    with pytest.raises(ConfigurationError, match="web_service_name"):
        UpdateWebServiceDefinitionOperator(task_id="u", model=MODEL)


def test_a_batch_has_lineage_outputs_per_target():
    pytest.importorskip("openlineage.client")
    op = batch("retrain01", "retrain02")
    lineage = op.get_openlineage_facets_on_complete(None)
    names = [d.name for d in lineage.outputs]
    assert len(names) == 2 and names[0].endswith("retrain01") and names[1].endswith("retrain02")
    assert len(lineage.inputs) == 1


def test_a_batch_of_50_registers_one_secret_per_endpoint_it_scores_and_none_per_read(monkeypatch):
    """Each secret registered with the masker rebuilds its pattern of every secret, in the task and in
    its supervisor: registering both keys of every endpoint read made a batch quadratic in its size."""
    from azureml_retrain import redaction
    from azureml_retrain.operators import promote

    registered: list[Any] = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda secret, name=None: registered.append(secret))
    monkeypatch.setattr(redaction, "_registered", set())
    scored: dict[str, str] = {}

    def fake_smoke_test(hook: Any, rows: Any) -> dict[str, Any]:
        scored[hook.api_location] = hook._api_key
        return {"rows": len(rows), "predictions": []}

    monkeypatch.setattr(promote, "smoke_test", fake_smoke_test)
    names = [f"fan{i:02d}" for i in range(50)]

    def keyed(reply: Reply) -> Reply:
        name = reply.body["Name"]
        keys = {"PrimaryKey": f"primary-key-of-{name}-0123456789", "SecondaryKey": f"secondary-key-of-{name}-0123"}
        return Reply(200, {**reply.body, **keys})

    route(monkeypatch, EndpointRouter({n: [r if r.body is None else keyed(r) for r in promoted(n)] for n in names}))
    op = batch(*names, smoke_test_rows=[{"tenure": 1}])
    op.hook.auth_headers()  # the connection's token and the SAS signing key: once per task, whatever its size
    StorageAccount(op.wasb_conn_id)._account_key  # noqa: B018
    registered.clear()
    results = op.execute(make_context())
    assert all(r["changed"] and r["smoke_test"] for r in results) and len(results) == 50
    primary = {f"primary-key-of-{n}-0123456789" for n in names}
    assert set(scored.values()) == primary  # each endpoint scored with its own key
    endpoint_keys = [s for s in registered if "key-of-" in str(s)]
    assert sorted(endpoint_keys) == sorted(primary)  # one per endpoint (was two per endpoint read)
    # Besides, whatever the batch's size: the storage connection (registered by Airflow each time a
    # target reads it; a secret already in the masker's pattern does not rebuild it) and the model's
    # one read-only SAS, shared by the batch.
    others = {json.dumps(s, sort_keys=True) for s in registered if s not in endpoint_keys}
    assert len(others) <= 3, others
    assert not any(k in json.dumps(results) for k in primary)


def test_a_batch_looks_each_connection_up_once_whatever_its_size(monkeypatch):
    """In a task, each lookup goes through the supervisor and registers the connection's secrets again:
    the targets of a batch share the storage account and the management connection."""
    from airflow.sdk import BaseHook

    lookups: list[str] = []
    real = BaseHook.get_connection.__func__  # type: ignore[attr-defined]

    def counted(cls: type, conn_id: str) -> Any:
        lookups.append(conn_id)
        return real(cls, conn_id)

    names = [f"fan{i:02d}" for i in range(20)]
    route(monkeypatch, EndpointRouter({n: promoted(n) for n in names}))
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(counted))
    results = batch(*names).execute(make_context())
    assert all(r["changed"] for r in results) and len(results) == 20
    assert sorted(lookups) == ["azureml_classic_management_default", "wasb_default"]
