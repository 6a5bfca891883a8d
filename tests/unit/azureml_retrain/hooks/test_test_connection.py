"""``test_connection()`` of the three hooks (Airflow's "Test" button), with HTTP faked at the transport level."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azureml_retrain.hooks.classic_management import AzureMLClassicManagementHook
from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook
from azureml_retrain.hooks.web_service import PROBE_JOB_ID, AzureMLWebServiceHook
from support.fake_transport import FakeCredential, FakeTransport, Reply, install, install_arm

API = "https://ussouthcentral.services.azureml.net/workspaces/ws1/services/svc1"
KEY = "endpoint-api-key-0123456789abcdef"
TOKEN = "workspace-token-0123456789abcdef"
SECRET = "client-secret-0123456789abcdef"
ARM = "https://management.azure.com"


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def envelope(code: str, detail: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": [{"code": detail, "message": message}]}}


UNAUTHORIZED = envelope("Unauthorized", "ScoreRequestUnauthorized", "Invalid credentials provided.")


# --- web service (BES) --------------------------------------------------------------------------------


@pytest.fixture
def web_service(monkeypatch: pytest.MonkeyPatch) -> AzureMLWebServiceHook:
    connection(
        monkeypatch, "ws_test", conn_type="azureml_web_service", host=f"{API}/jobs?api-version=2.0", password=KEY
    )
    return AzureMLWebServiceHook("ws_test")


def test_web_service_key_accepted_when_the_probe_job_is_not_found(web_service):
    transport = install(web_service, FakeTransport(Reply(404, envelope("NotFound", "JobNotFound", "no such job"))))
    ok, message = web_service.test_connection()
    assert ok, message
    assert "API key accepted by service workspaces/ws1/services/svc1" in message
    (sent,) = transport.requests
    assert (sent.method, sent.url) == ("GET", f"{API}/jobs/{PROBE_JOB_ID}?api-version=2.0")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"


def test_web_service_refused_key_is_false_naming_the_field_not_the_key(web_service):
    install(web_service, FakeTransport(Reply(401, UNAUTHORIZED)))
    ok, message = web_service.test_connection()
    assert not ok
    assert "HTTP 401" in message and "ScoreRequestUnauthorized" in message
    assert "Password (the endpoint's API key) of connection 'ws_test'" in message
    assert KEY not in message


def test_web_service_missing_endpoint_is_false(web_service):
    install(web_service, FakeTransport(Reply(404, envelope("NotFound", "WebServiceNotFound", "no such service"))))
    ok, message = web_service.test_connection()
    assert not ok
    assert "WebServiceNotFound" in message


def test_web_service_unavailable_is_false_after_one_attempt(web_service):
    transport = install(web_service, FakeTransport(Reply(503, envelope("ServiceUnavailable", "NoMoreResources", "x"))))
    ok, message = web_service.test_connection()
    assert not ok
    assert "HTTP 503" in message
    assert len(transport.requests) == 1


def test_web_service_echoed_key_is_masked(web_service):
    install(web_service, FakeTransport(Reply(401, envelope("Unauthorized", "ScoreRequestUnauthorized", f"bad {KEY}"))))
    ok, message = web_service.test_connection()
    assert not ok
    assert KEY not in message


def test_web_service_without_host_is_false_saying_what_to_set(monkeypatch):
    connection(monkeypatch, "ws_nohost", conn_type="azureml_web_service", password=KEY)
    ok, message = AzureMLWebServiceHook("ws_nohost").test_connection()
    assert not ok
    assert "Connection 'ws_nohost': Host is required" in message


# --- classic management -------------------------------------------------------------------------------


@pytest.fixture
def classic(monkeypatch: pytest.MonkeyPatch) -> AzureMLClassicManagementHook:
    connection(
        monkeypatch,
        "mgmt_test",
        conn_type="azureml_classic_management",
        host="https://management.azureml.net",
        schema="ws1",
        password=TOKEN,
    )
    return AzureMLClassicManagementHook("mgmt_test")


def test_classic_management_lists_the_workspaces_web_services(classic):
    transport = install(classic, FakeTransport(Reply(200, [{"Id": "a"}, {"Id": "b"}])))
    ok, message = classic.test_connection()
    assert ok, message
    assert message == "authorization token accepted for workspace ws1: 2 web service(s)"
    (sent,) = transport.requests
    assert (sent.method, sent.url) == ("GET", "https://management.azureml.net/workspaces/ws1/webservices")
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"


def test_classic_management_refused_token_is_false(classic):
    body = envelope("Unauthorized", "ManagementRequestUnauthorized", "Invalid token.")
    install(classic, FakeTransport(Reply(401, body)))
    ok, message = classic.test_connection()
    assert not ok
    assert "ManagementRequestUnauthorized" in message and "connection 'mgmt_test'" in message
    assert TOKEN not in message


# --- Resource Manager ---------------------------------------------------------------------------------


@pytest.fixture
def arm(monkeypatch: pytest.MonkeyPatch) -> AzureMLResourceManagerHook:
    connection(
        monkeypatch,
        "arm_test",
        conn_type="azureml_resource_manager",
        host=ARM,
        login="app-1",
        password=SECRET,
        extra={"tenant_id": "t1", "subscription_id": "sub1", "resource_group": "rg1"},
    )
    return AzureMLResourceManagerHook("arm_test")


def test_resource_manager_lists_the_resource_groups_web_services(arm):
    transport = install_arm(arm, FakeTransport(Reply(200, {"value": [{"name": "a"}]})))
    ok, message = arm.test_connection()
    assert ok, message
    assert "resource group rg1: 1 web service(s)" in message
    (sent,) = transport.requests
    assert sent.method == "GET"
    assert sent.url == (
        f"{ARM}/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.MachineLearning/webServices"
        "?api-version=2017-01-01"
    )
    assert sent.headers["Authorization"] == f"Bearer {FakeCredential.token}"


def test_resource_manager_forbidden_is_false(arm):
    body = {"error": {"code": "AuthorizationFailed", "message": "no role on rg1"}}
    install_arm(arm, FakeTransport(Reply(403, body)))
    ok, message = arm.test_connection()
    assert not ok
    assert "HTTP 403 AuthorizationFailed" in message


def test_resource_manager_refused_secret_is_false_without_the_secret(arm):
    from azure.core.exceptions import ClientAuthenticationError

    class Refused:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError(message=f"AADSTS7000215: Invalid client secret {SECRET}")

    install_arm(arm, FakeTransport())
    arm.credential = Refused()
    ok, message = arm.test_connection()
    assert not ok
    assert "AuthenticationFailed" in message and "check the service principal id, secret and tenant_id" in message
    assert SECRET not in message


def test_resource_manager_without_subscription_is_false_saying_what_to_set(monkeypatch):
    connection(monkeypatch, "arm_nosub", conn_type="azureml_resource_manager", host=ARM, extra={"resource_group": "rg"})
    hook = AzureMLResourceManagerHook("arm_nosub")
    install_arm(hook, FakeTransport())
    ok, message = hook.test_connection()
    assert not ok
    assert "extra subscription_id is required" in message


def test_after_a_test_the_hook_retries_as_configured(classic):
    transport = install(classic, FakeTransport(Reply(200, []), Reply(503), Reply(200, [])))
    assert classic.test_connection()[0]
    classic._sleep = lambda seconds: None
    assert classic.list_web_services() == []
    assert len(transport.requests) == 3
