"""The Resource Manager hook on azure-core's ARM pipeline, with HTTP faked at the transport level."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.exceptions import AzureMLRequestRejectedError, AzureMLServiceError, ConfigurationError
from azureml_retrain.hooks.base import RetryPolicy
from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook
from support.fake_transport import FakeCredential, FakeTransport, Reply, install_arm, install_async_arm

ARM = "https://management.azure.com"
SERVICE = (
    f"{ARM}/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.MachineLearning/webServices/energy-predictive"
)
OPERATION = f"{ARM}/subscriptions/sub1/providers/Microsoft.MachineLearning/locations/scus/operationsStatus/op1"
DEFINITION = {"name": "energy-predictive", "properties": {"packageType": "Graph", "provisioningState": "Provisioning"}}


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT",
        json.dumps(
            {
                "conn_type": "azureml_resource_manager",
                "host": ARM,
                "extra": {"subscription_id": "sub1", "resource_group": "rg1"},
            }
        ),
    )


def make_hook(*script: Reply | Exception, attempts: int = 3) -> tuple[AzureMLResourceManagerHook, FakeTransport]:
    sleeps: list[float] = []
    hook = AzureMLResourceManagerHook(
        retry_policy=RetryPolicy(max_attempts=attempts, base_delay=0, max_delay=0), sleep=sleeps.append
    )
    return hook, install_arm(hook, FakeTransport(*script))


def accepted(operation_url: str = f"{OPERATION}?api-version=2017-01-01") -> Reply:
    return Reply(200, DEFINITION, headers={"Azure-AsyncOperation": operation_url})


def status(state: str, **extra: object) -> Reply:
    return Reply(200, {"id": "op1", "status": state, "provisioningState": state, **extra})


def test_a_patch_is_followed_to_its_end_through_the_async_operation_url():
    hook, transport = make_hook(
        accepted(),
        status("Provisioning"),
        Reply(503, {"error": {"code": "ServerBusy", "message": "x"}}),
        status("Succeeded"),
    )
    operation = hook.patch_web_service("energy-predictive", {"properties": {}})
    assert (operation.state, operation.status_url) == ("Provisioning", OPERATION)
    outcome = hook.wait_for_operation(operation, timeout=60, poll_interval=0)
    assert outcome["status"] == "Succeeded"
    sent = [(r.method, r.url.split("?")[0]) for r in transport.requests]
    assert sent == [("PATCH", SERVICE), ("GET", OPERATION), ("GET", OPERATION), ("GET", OPERATION)]
    assert all(r.headers["Authorization"] == f"Bearer {FakeCredential.token}" for r in transport.requests)
    assert transport.requests[0].url.endswith("?api-version=2017-01-01")


def test_a_failed_operation_ends_with_its_error_info():
    hook, _ = make_hook(accepted(), status("Failed", errorInfo={"code": "IncompatibleModel", "message": "no"}))
    outcome = hook.wait_for_operation(hook.patch_web_service("energy-predictive", {}), timeout=60, poll_interval=0)
    assert outcome["status"] == "Failed"
    assert outcome["errorInfo"]["code"] == "IncompatibleModel"


def test_an_operation_past_its_timeout_is_a_timeout_error():
    hook, _ = make_hook(accepted(), status("Provisioning"))
    operation = hook.patch_web_service("energy-predictive", {})
    with pytest.raises(AzureMLServiceError, match="Timeout: still Provisioning"):
        hook.wait_for_operation(operation, timeout=0, poll_interval=0)


@pytest.mark.parametrize("header", ["Azure-AsyncOperation", "Location"])
def test_no_bearer_token_is_sent_to_an_http_operation_url(header):
    """As every Azure SDK: a server that hands out an http:// status URL gets no token there, and no poll."""
    insecure = Reply(200, DEFINITION, headers={header: "http://management.azure.com/operationsStatus/op1"})
    hook, transport = make_hook(insecure)
    with pytest.raises(AzureMLServiceError, match="InsecureTransport") as error:
        hook.patch_web_service("energy-predictive", {})
    assert f"its {header} header is 'http://management.azure.com/operationsStatus/op1'" in str(error.value)
    assert "only sent over https" in str(error.value)
    assert [r.method for r in transport.requests] == ["PATCH"]


def test_an_http_host_is_refused_before_any_request(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT",
        json.dumps({"conn_type": "azureml_resource_manager", "host": "http://127.0.0.1:8765"}),
    )
    hook, transport = make_hook()
    with pytest.raises(ConfigurationError, match="Host must be an https URL"):
        hook.get_web_service("energy-predictive")
    assert transport.requests == []


def test_errors_carry_the_arm_envelope_and_a_4xx_is_not_retried():
    hook, transport = make_hook(
        Reply(404, {"error": {"code": "ResourceNotFound", "message": "The Resource was not found."}})
    )
    with pytest.raises(AzureMLServiceError, match="HTTP 404 ResourceNotFound: The Resource was not found") as error:
        hook.get_web_service("energy-predictive")
    assert error.value.status == 404 and len(transport.requests) == 1


@pytest.mark.parametrize("status", [400, 403, 404])
def test_a_rejected_request_ends_the_task_without_airflow_retries(status):
    hook, transport = make_hook(Reply(status, {"error": {"code": "BadRequest", "message": "no"}}))
    with pytest.raises(AzureMLRequestRejectedError) as error:
        hook.get_web_service("energy-predictive")
    assert isinstance(error.value, AirflowFailException) and len(transport.requests) == 1


def test_a_conflict_with_a_running_operation_is_left_to_airflow_retries():
    hook, transport = make_hook(Reply(409, {"error": {"code": "Conflict", "message": "an operation is running"}}))
    with pytest.raises(AzureMLServiceError) as error:
        hook.patch_web_service("energy-predictive", {})
    assert error.value.status == 409 and not isinstance(error.value, AirflowFailException)


def test_throttling_is_retried_with_retry_after_and_a_malformed_body_is_read_again():
    hook, transport = make_hook(
        Reply(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, headers={"Retry-After": "0"}),
        Reply(200, raw=b"<html>gateway</html>"),
        Reply(200, DEFINITION),
    )
    assert hook.get_web_service("energy-predictive")["name"] == "energy-predictive"
    assert len(transport.requests) == 3


def test_a_patch_is_retried_on_429_like_the_default_methods():
    hook, transport = make_hook(Reply(429, headers={"Retry-After": "0"}), accepted())
    assert hook.patch_web_service("energy-predictive", {}).state == "Provisioning"
    assert [r.method for r in transport.requests] == ["PATCH", "PATCH"]


def test_the_trigger_side_follows_the_continuation_token_on_the_async_pipeline():
    hook, _ = make_hook(accepted())
    operation = hook.patch_web_service("energy-predictive", {})
    assert FakeCredential.token not in operation.continuation_token
    waiter = AzureMLResourceManagerHook()
    transport = install_async_arm(waiter, FakeTransport(status("Provisioning"), status("Succeeded")))
    outcome = asyncio.run(waiter.await_operation(operation.continuation_token, end_time=float("inf"), poll_interval=0))
    assert outcome["status"] == "Succeeded"
    assert [(r.method, r.url.split("?")[0]) for r in transport.requests] == [("GET", OPERATION)] * 2


def test_a_refused_token_names_the_connection():
    hook, _ = make_hook(Reply(403, {"error": {"code": "AuthorizationFailed", "message": "no access"}}))
    with pytest.raises(AzureMLServiceError, match="AuthorizationFailed") as error:
        hook.get_web_service("energy-predictive")
    assert "refused: the service principal" in str(error.value)
    assert "of connection 'azureml_resource_manager_default'" in str(error.value)
