"""Fuzz how the package reads service responses and user files (no network).

A FakeTransport serves hypothesis-generated bodies (any JSON value, wrong types in the members the
code reads, non-JSON bytes, empty bodies) to the hooks' public methods; the promote operators'
parsing helpers, the evaluation CSV parser and the config parser get arbitrary input directly.
The only exceptions allowed out are the package's own (``AzureMLRetrainError`` subclasses): no
KeyError/TypeError/AttributeError/ValueError may escape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azureml_retrain.config import parse_config
from azureml_retrain.evaluation import decide, parse_evaluation_csv, parse_rules
from azureml_retrain.exceptions import AzureMLRetrainError
from azureml_retrain.hooks.base import RetryPolicy
from azureml_retrain.hooks.classic_management import AzureMLClassicManagementHook
from azureml_retrain.hooks.resource_manager import (
    AzureMLResourceManagerHook,
    operation_error,
    operation_state,
)
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from azureml_retrain.operators.promote import (
    PatchEndpointOperator,
    _asset_uri,
    find_trained_model_asset,
)
from support.fake_transport import FakeTransport, Reply, install, install_arm
from support.fuzzing import FUZZ_SETTINGS, JSON_VALUES, SHORT_TEXT, json_bytes

EXAMPLES = 150
API = "https://ussouthcentral.services.azureml.net/workspaces/ws1/services/svc1"
ONE_ATTEMPT = RetryPolicy(max_attempts=1, base_delay=0, max_delay=0)


def _no_sleep(_: float) -> None:
    pass


def wrong(*valid: Any) -> st.SearchStrategy[Any]:
    """A member's value: a valid one, or any JSON value (wrong types included)."""
    return st.sampled_from(list(valid)) | JSON_VALUES if valid else JSON_VALUES


# --- bodies with the members the code reads, of any type ----------------------------------------------

OUTPUT_REF = st.fixed_dictionaries(
    {},
    optional={
        "BaseLocation": wrong("https://acct.blob.core.windows.net/"),
        "RelativeLocation": wrong("c/model.ilearner", "", "/", "nocontainer"),
        "SasBlobToken": wrong("?sv=x&sig=y"),
    },
)
JOB_STATUS = st.fixed_dictionaries(
    {},
    optional={
        "StatusCode": wrong("Finished", "Failed", "Running", "NotStarted", "Cancelled", 0, 4, "Canceled", "x"),
        "Results": st.dictionaries(SHORT_TEXT, OUTPUT_REF | JSON_VALUES, max_size=3) | JSON_VALUES,
        "Details": JSON_VALUES,
    },
)
LOCATION = st.fixed_dictionaries(
    {},
    optional={
        "BaseLocation": wrong("https://a/"),
        "RelativeLocation": wrong("c/m.ilearner"),
        "SasBlobToken": JSON_VALUES,
    },
)
RESOURCE = st.fixed_dictionaries(
    {},
    optional={
        "Name": wrong("Customer Churn [trained model]", "x [trained model]"),
        "Kind": JSON_VALUES,
        "Location": LOCATION | JSON_VALUES,
    },
)
ENDPOINT = st.fixed_dictionaries(
    {},
    optional={
        "Name": wrong("retrain01"),
        "Resources": st.lists(RESOURCE | JSON_VALUES, max_size=3) | JSON_VALUES,
        "PrimaryKey": JSON_VALUES,
        "SecondaryKey": JSON_VALUES,
        "ApiLocation": JSON_VALUES,
    },
)
ASSET = st.fixed_dictionaries(
    {},
    optional={
        "name": wrong("Energy Efficiency [trained model]"),
        "type": wrong("Resource", "resource", "Module"),
        "locationInfo": st.fixed_dictionaries({}, optional={"uri": wrong("https://a/c/m.ilearner")}) | JSON_VALUES,
    },
)
DEFINITION = st.fixed_dictionaries(
    {},
    optional={
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "assets": st.dictionaries(SHORT_TEXT, ASSET | JSON_VALUES, max_size=3) | JSON_VALUES,
                "swaggerLocation": JSON_VALUES,
                "provisioningState": JSON_VALUES,
            },
        )
        | JSON_VALUES,
        "Properties": JSON_VALUES,
    },
)
OPERATION = st.fixed_dictionaries(
    {},
    optional={
        "status": wrong("Succeeded", "Failed", "Provisioning"),
        "provisioningState": wrong("Succeeded", "Failed"),
        "errorInfo": st.fixed_dictionaries({}, optional={"code": JSON_VALUES, "message": JSON_VALUES}) | JSON_VALUES,
        "error": JSON_VALUES,
        "id": JSON_VALUES,
    },
)
SCORES = st.fixed_dictionaries(
    {},
    optional={
        "Results": st.dictionaries(
            SHORT_TEXT, st.lists(st.dictionaries(SHORT_TEXT, JSON_VALUES, max_size=3) | JSON_VALUES, max_size=3)
        )
        | JSON_VALUES
    },
)


def replies(*shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    """A 2xx (or odd-status) reply with a shaped body, any JSON value, non-JSON bytes, or nothing."""
    status = st.sampled_from([200, 200, 200, 201, 202, 204, 400, 404, 409, 418])
    body = st.one_of(
        *shaped,
        JSON_VALUES,
        st.just(None),
    )
    raw = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"<html>Bad Gateway</html>", b"{", b"\xff", b"NaN", b'"\xff"', b"\x00"]),
        st.lists(JSON_VALUES, max_size=2).map(json_bytes),
    )
    return st.builds(Reply, status=status, body=body) | st.builds(Reply, status=status, raw=raw)


def only_package_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except AzureMLRetrainError:
        return None


# --- hooks ----------------------------------------------------------------------------------------------


def web_service_hook(reply: Reply) -> AzureMLWebServiceHook:
    hook = AzureMLWebServiceHook.for_endpoint(API, "key-0123456789", retry_policy=ONE_ATTEMPT, sleep=_no_sleep)
    install(hook, FakeTransport(reply))
    return hook


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(reply=replies(JOB_STATUS), method=st.sampled_from(["get_job", "submit_job", "start_job", "cancel_job"]))
def test_web_service_hook_bes_methods(reply: Reply, method: str) -> None:
    hook = web_service_hook(reply)
    call = {
        "get_job": lambda: hook.get_job("job1"),
        "submit_job": lambda: hook.submit_job({"Inputs": {}}),
        "start_job": lambda: hook.start_job("job1"),
        "cancel_job": lambda: hook.cancel_job("job1"),
    }[method]
    job = only_package_errors(call)
    if method == "get_job" and job is not None:
        assert job.status in ("NotStarted", "Running", "Failed", "Cancelled", "Finished")
        for output in job.outputs.values():
            only_package_errors(output.to_xcom)  # a result without a container/blob is the caller's error
    if method == "submit_job" and job is not None:
        assert isinstance(job, str) and job


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(reply=replies(SCORES))
def test_web_service_hook_score(reply: Reply) -> None:
    rows = only_package_errors(lambda: web_service_hook(reply).score([{"a": "1"}]))
    if rows is not None:
        assert all(isinstance(row, dict) for row in rows)


@pytest.fixture(scope="module")
def management_hook_factory() -> Callable[[Reply], AzureMLClassicManagementHook]:
    def make(reply: Reply) -> AzureMLClassicManagementHook:
        hook = AzureMLClassicManagementHook(
            "azureml_classic_management_default", workspace_id="ws1", retry_policy=ONE_ATTEMPT, sleep=_no_sleep
        )
        install(hook, FakeTransport(reply))
        return hook

    return make


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(
    reply=replies(ENDPOINT, st.lists(ENDPOINT, max_size=2)),
    method=st.sampled_from(
        ["list_web_services", "get_web_service", "list_endpoints", "get_endpoint", "find_endpoint", "refresh"]
    ),
)
def test_classic_management_hook(
    management_hook_factory: Callable[[Reply], AzureMLClassicManagementHook], reply: Reply, method: str
) -> None:
    hook = management_hook_factory(reply)
    call = {
        "list_web_services": hook.list_web_services,
        "get_web_service": lambda: hook.get_web_service("svc"),
        "list_endpoints": lambda: hook.list_endpoints("svc"),
        "get_endpoint": lambda: hook.get_endpoint("svc", "retrain01"),
        "find_endpoint": lambda: hook.find_endpoint("svc", "retrain01"),
        "refresh": lambda: hook.refresh_endpoint("svc", "retrain01", overwrite_resources=True),
    }[method]
    result = only_package_errors(call)
    if method in ("list_web_services", "list_endpoints") and result is not None:
        assert isinstance(result, list) and all(isinstance(item, dict) for item in result)
    if method in ("get_web_service", "get_endpoint") and result is not None:
        assert isinstance(result, dict)


@pytest.fixture(scope="module")
def arm_hook_factory() -> Callable[[Reply], AzureMLResourceManagerHook]:
    def make(reply: Reply) -> AzureMLResourceManagerHook:
        hook = AzureMLResourceManagerHook(
            "azureml_resource_manager_default",
            subscription_id="sub",
            resource_group="rg",
            retry_policy=ONE_ATTEMPT,
            sleep=_no_sleep,
        )
        install_arm(hook, FakeTransport(reply))
        return hook

    return make


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(
    reply=replies(DEFINITION, OPERATION, st.dictionaries(st.sampled_from(["primary", "secondary"]), JSON_VALUES)),
    method=st.sampled_from(["get_web_service", "get_async_operation", "list_keys", "patch_web_service"]),
)
def test_resource_manager_hook(
    arm_hook_factory: Callable[[Reply], AzureMLResourceManagerHook], reply: Reply, method: str
) -> None:
    hook = arm_hook_factory(reply)
    call = {
        "get_web_service": lambda: hook.get_web_service("svc"),
        "get_async_operation": lambda: hook.get_async_operation("https://arm/op?api-version=2017-01-01"),
        "list_keys": lambda: hook.list_keys("svc"),
        "patch_web_service": lambda: hook.patch_web_service("svc", {"properties": {}}),
    }[method]
    result = only_package_errors(call)
    if method in ("get_web_service", "get_async_operation", "list_keys") and result is not None:
        assert isinstance(result, dict)
    if method == "get_async_operation" and result is not None:
        assert isinstance(operation_state(result), str)
        assert isinstance(operation_error(result), str)


# --- promote operators' parsing helpers ----------------------------------------------------------------


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(definition=DEFINITION | st.dictionaries(SHORT_TEXT, JSON_VALUES), name=st.none() | wrong("x [trained model]"))
def test_find_trained_model_asset(definition: dict[str, Any], name: Any) -> None:
    found = only_package_errors(lambda: find_trained_model_asset(definition, name))
    if found is not None:
        asset_id, asset = found
        assert isinstance(asset_id, str) and isinstance(asset, dict)
        uri = _asset_uri(asset)
        assert uri is None or isinstance(uri, str)


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(endpoint=ENDPOINT | st.dictionaries(SHORT_TEXT, JSON_VALUES), name=st.none() | wrong("x [trained model]"))
def test_patch_endpoint_reads_resources(endpoint: dict[str, Any], name: Any) -> None:
    op = PatchEndpointOperator(
        task_id="promote",
        web_service_id="svc",
        endpoint_name="retrain01",
        model="c/m.ilearner",
        trained_model_name=name,
    )
    resource = only_package_errors(lambda: op._resource(endpoint))
    if resource is not None:
        location = only_package_errors(lambda: op._location(resource))
        if location is not None:
            assert all(v is None or isinstance(v, str) for v in location.values())


# --- evaluation CSV and config -----------------------------------------------------------------------------

HEADER = "Accuracy,Precision,Recall,F-Score,AUC,Average Log Loss,Training Log Loss"
CSV_PIECES = st.sampled_from(
    [
        HEADER,
        "0.8,0.7,0.6,0.65,0.9,0.4,0.2",
        "NaN",
        "Infinity",
        "-inf",
        '"',
        ",",
        "\t",
        "\n",
        "\r\n",
        "\ufeff",
        "AUC",
        "x",
    ]
)
CSV_TEXT = st.text(max_size=80) | st.lists(CSV_PIECES | st.text(max_size=8), max_size=10).map("".join)
RULES = parse_rules({"metric": "AUC", "threshold": 0.5, "guards": [{"metric": "Accuracy", "min": 0.1}]})


@settings(FUZZ_SETTINGS, max_examples=2 * EXAMPLES)
@given(text=CSV_TEXT, as_bytes=st.booleans(), row=st.integers(-1, 2), champion=st.none() | st.just({"AUC": 0.5}))
def test_parse_evaluation_csv(text: str, as_bytes: bool, row: int, champion: dict[str, float] | None) -> None:
    data: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    results = only_package_errors(lambda: parse_evaluation_csv(data, "c/eval.csv", row=row))
    if results is not None:
        assert results.columns and results.source == "c/eval.csv"
        results.metrics()
        decision = only_package_errors(lambda: decide(results, RULES, champion))
        if decision is not None:
            assert isinstance(decision["promote"], bool)


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.binary(max_size=80))
def test_parse_evaluation_csv_bytes(data: bytes) -> None:
    only_package_errors(lambda: parse_evaluation_csv(data, "c/eval.csv"))


VALID_CONFIG: dict[str, Any] = {
    "model": "churn",
    "description": "d",
    "schedule": "0 2 * * *",
    "start_date": "2024-01-01",
    "training": {"azureml_conn_id": "x"},
    "data": {"container": "data", "prefix": "p/"},
    "outputs": {"container": "out", "prefix": "o"},
    "evaluation": {"metric": "AUC"},
    "targets": [{"kind": "classic_endpoint", "name": "t", "web_service_id": "w", "endpoint_name": "retrain01"}],
}


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(
    field=st.sampled_from([*VALID_CONFIG, "unknown"]),
    value=JSON_VALUES | st.sampled_from(["* * *", "@daily", "0 0 31 2 *", "61 * * * *", "", "f1", "r2", "nope"]),
)
def test_parse_config_with_a_wrong_field(field: str, value: Any) -> None:
    only_package_errors(lambda: parse_config({**VALID_CONFIG, field: value}, "fuzz.yaml"))
