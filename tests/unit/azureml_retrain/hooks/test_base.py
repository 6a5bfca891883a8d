from __future__ import annotations

import json

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.exceptions import AzureMLRequestRejectedError, AzureMLServiceError
from azureml_retrain.hooks.base import RetryPolicy, parse_retry_after
from azureml_retrain.hooks.classic_management import AzureMLClassicManagementHook
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from support.fake_transport import FakeTransport, Reply, install, set_classic_management_connection

API = "https://ussouthcentral.services.azureml.net/workspaces/ws1/services/svc1"
KEY = "bes-api-key-0123456789abcdef"
STATUS = {"StatusCode": "Running", "Results": None, "Details": None}


def make_hook(*script, max_attempts: int = 4):
    sleeps: list[float] = []
    hook = AzureMLWebServiceHook.for_endpoint(
        API, KEY, retry_policy=RetryPolicy(max_attempts=max_attempts, base_delay=1, max_delay=8), sleep=sleeps.append
    )
    transport = install(hook, FakeTransport(*script))
    return hook, transport, sleeps


def test_success_sends_key_as_bearer_and_api_version():
    hook, transport, sleeps = make_hook(Reply(200, STATUS))
    assert hook.get_job("j1").status == "Running"
    sent = transport.requests[0]
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.url == f"{API}/jobs/j1?api-version=2.0"
    assert sleeps == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_then_succeed(status):
    hook, transport, sleeps = make_hook(Reply(status), Reply(status), Reply(200, STATUS))
    assert hook.get_job("j1").status == "Running"
    assert len(transport.requests) == 3
    assert len(sleeps) == 2
    # capped exponential with jitter: attempt n waits within [ceiling/2, ceiling]
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 2.0


def test_backoff_is_capped():
    policy = RetryPolicy(base_delay=1, max_delay=8)
    assert all(4.0 <= policy.backoff(10) <= 8.0 for _ in range(50))


def test_429_honours_retry_after_seconds():
    hook, transport, sleeps = make_hook(Reply(429, headers={"Retry-After": "7"}), Reply(200, STATUS))
    hook.get_job("j1")
    assert sleeps == [7.0]


def test_retry_after_http_date():
    assert parse_retry_after("Fri, 27 Nov 2026 12:00:10 GMT", now=1795780800.0) == pytest.approx(10.0)
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def test_gives_up_after_max_attempts_with_service_error():
    body = {"error": {"code": "ServiceUnavailable", "message": "busy", "details": [{"code": "RequestThrottled"}]}}
    hook, transport, sleeps = make_hook(*[Reply(503, body)] * 3, max_attempts=3)
    with pytest.raises(AzureMLServiceError) as err:
        hook.get_job("j1")
    assert err.value.status == 503
    assert err.value.code == "ServiceUnavailable"
    assert err.value.detail_codes == ("RequestThrottled",)
    assert "get BES job status failed for job j1" in str(err.value)
    assert len(transport.requests) == 3


def test_other_4xx_fail_at_once_with_code_and_message():
    body = {
        "error": {
            "code": "Unauthorized",
            "message": "Invalid credentials provided.",
            "details": [{"code": "ScoreRequestUnauthorized", "message": "Invalid credentials provided."}],
        }
    }
    hook, transport, sleeps = make_hook(Reply(401, body))
    with pytest.raises(AzureMLServiceError) as err:
        hook.get_job("j1")
    message = str(err.value)
    assert "HTTP 401 Unauthorized/ScoreRequestUnauthorized" in message
    assert KEY not in message
    assert len(transport.requests) == 1 and sleeps == []


# A 4xx is the request's own fault (a retry is rejected the same way), except a timeout and throttling.
REJECTED = [400, 401, 403, 404, 405, 409, 413]
RETRIED = [408, 429, 500, 502, 503, 504]


@pytest.mark.parametrize("status", REJECTED)
def test_a_rejected_data_plane_call_is_retried_neither_by_the_hook_nor_by_airflow(status):
    hook, transport, sleeps = make_hook(Reply(status, {"error": {"code": "BadArgument", "message": "no"}}))
    with pytest.raises(AzureMLRequestRejectedError) as err:
        hook.get_job("j1")
    assert isinstance(err.value, AirflowFailException)
    assert err.value.status == status and f"HTTP {status} BadArgument: no" in str(err.value)
    assert len(transport.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", RETRIED)
def test_timeouts_throttling_and_server_errors_are_retried_by_the_hook_then_by_airflow(status):
    hook, transport, sleeps = make_hook(*[Reply(status, headers={"Retry-After": "0"})] * 3, max_attempts=3)
    with pytest.raises(AzureMLServiceError) as err:
        hook.get_job("j1")
    assert not isinstance(err.value, AirflowFailException)  # Airflow's retry comes next
    assert err.value.status == status and len(transport.requests) == 3


@pytest.fixture
def management_hook(monkeypatch):
    set_classic_management_connection(monkeypatch)
    sleeps: list[float] = []
    hook = AzureMLClassicManagementHook(retry_policy=RetryPolicy(max_attempts=3, base_delay=0), sleep=sleeps.append)
    return hook, sleeps


RESOURCES = [{"Name": "Churn [trained model]", "Location": {"BaseLocation": "https://a/", "RelativeLocation": "c/m"}}]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(400, {"error": {"code": "BadArgument", "details": [{"code": "InvalidWebServiceResources"}]}}),
        Reply(404, {"error": {"code": "NotFound", "details": [{"code": "EndpointNotFound"}]}}),
    ],
)
def test_a_rejected_management_call_is_not_retried(management_hook, reply):
    hook, sleeps = management_hook
    transport = install(hook, FakeTransport(reply))
    with pytest.raises(AzureMLRequestRejectedError) as err:
        hook.patch_endpoint_resources("svc1", "retrain01", RESOURCES)
    assert isinstance(err.value, AirflowFailException) and err.value.status == reply.status
    assert len(transport.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", RETRIED)
def test_a_management_call_meeting_a_timeout_throttling_or_a_server_error_is_retried(management_hook, status):
    hook, sleeps = management_hook
    transport = install(hook, FakeTransport(Reply(status, headers={"Retry-After": "0"}), Reply(200)))
    hook.patch_endpoint_resources("svc1", "retrain01", RESOURCES)
    assert [r.method for r in transport.requests] == ["PATCH", "PATCH"] and len(sleeps) == 1


def test_error_messages_never_carry_secrets():
    echo = "bad: DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5;x?sv=1&sig=abcdEFGH%2B&sp=r"
    hook, _, _ = make_hook(Reply(400, {"error": {"code": "BadArgument", "message": echo}}))
    with pytest.raises(AzureMLServiceError) as err:
        hook.get_job("j1")
    assert "c2VjcmV0a2V5" not in str(err.value)
    assert "abcdEFGH" not in str(err.value)
    assert "AccountKey=***" in str(err.value)


def test_connection_errors_and_timeouts_are_retried_for_idempotent_calls():
    hook, transport, sleeps = make_hook(
        requests.ConnectionError("Connection aborted: reset by peer"),
        requests.ReadTimeout("read timed out"),
        requests.ConnectTimeout("connect timed out"),
        Reply(200, STATUS),
    )
    assert hook.get_job("j1").status == "Running"
    assert len(sleeps) == 3


def test_malformed_json_is_retried():
    hook, transport, sleeps = make_hook(Reply(200, raw=b"<html>oops"), Reply(200, STATUS))
    assert hook.get_job("j1").status == "Running"
    assert len(sleeps) == 1


def test_malformed_json_every_time_is_a_clear_error():
    hook, _, _ = make_hook(*[Reply(200, raw=b"{not json")] * 4)
    with pytest.raises(AzureMLServiceError, match="MalformedResponse"):
        hook.get_job("j1")


def test_submit_is_not_retried_when_the_service_may_have_created_the_job():
    hook, transport, _ = make_hook(requests.ReadTimeout("read timed out"))
    with pytest.raises(AzureMLServiceError, match="ConnectionFailed"):
        hook.submit_job({"Inputs": {}})
    assert len(transport.requests) == 1

    hook, transport, _ = make_hook(Reply(500))
    with pytest.raises(AzureMLServiceError):
        hook.submit_job({"Inputs": {}})
    assert len(transport.requests) == 1


def test_submit_is_retried_when_the_service_refused_it():
    refused = requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    hook, transport, _ = make_hook(
        Reply(429, headers={"Retry-After": "1"}), Reply(503), refused, Reply(200, "0123456789abcdef0123456789abcdef")
    )
    assert hook.submit_job({"Inputs": {}}) == "0123456789abcdef0123456789abcdef"
    assert len(transport.requests) == 4
    assert json.loads(transport.requests[0].body) == {"Inputs": {}}


def test_retry_after_beyond_the_limit_fails_instead_of_sleeping():
    hook, transport, sleeps = make_hook(Reply(429, headers={"Retry-After": "3600"}))
    with pytest.raises(AzureMLServiceError) as err:
        hook.get_job("j1")
    assert err.value.status == 429 and sleeps == []


def test_a_configuration_error_fails_the_task_without_airflow_retries():
    from airflow.sdk.exceptions import AirflowFailException

    from azureml_retrain.exceptions import ConfigurationError

    assert issubclass(ConfigurationError, AirflowFailException)


def test_a_refused_key_names_the_connection_and_its_field_but_not_the_key(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_CHURN_TRAINING_TEST",
        json.dumps({"conn_type": "azureml_web_service", "host": API, "password": KEY}),
    )
    hook = AzureMLWebServiceHook("azureml_churn_training_test", retry_policy=RetryPolicy(max_attempts=1))
    install(hook, FakeTransport(Reply(401, {"error": {"code": "Unauthorized", "message": "Invalid key."}})))
    with pytest.raises(AzureMLServiceError, match="HTTP 401") as error:
        hook.get_job("j1")
    assert "refused: the Password (the endpoint's API key) of connection 'azureml_churn_training_test'" in str(
        error.value
    )
    assert KEY not in str(error.value)


def test_a_refused_key_of_a_discovered_endpoint_says_where_the_key_came_from():
    hook, _, _ = make_hook(Reply(403, {"error": {"code": "Forbidden", "message": "no"}}), max_attempts=1)
    with pytest.raises(AzureMLServiceError, match="refused: the API key the management plane gave for this endpoint"):
        hook.get_job("j1")
