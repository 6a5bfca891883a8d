"""The classic management hook keeps endpoint keys to itself: reading endpoints registers no secret
(HTTP faked at the transport level; no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azureml_retrain import redaction
from azureml_retrain.exceptions import AzureMLServiceError, ConfigurationError
from azureml_retrain.hooks.classic_management import KEY_FIELDS, AzureMLClassicManagementHook
from support.fake_transport import FakeTransport, Reply, set_classic_management_connection

SERVICE = "predictive1"
N = 50


@pytest.fixture(autouse=True)
def connection(monkeypatch: pytest.MonkeyPatch) -> None:
    set_classic_management_connection(monkeypatch)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every secret registered with Airflow's masker from now on. Each registration rebuilds the
    masker's pattern of all secrets, in the task and in its supervisor: their number per endpoint is
    what keeps a batch of promotions linear (or not) in its endpoints."""
    calls: list[Any] = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda secret, name=None: calls.append(secret))
    monkeypatch.setattr(redaction, "_registered", set())
    return calls


def body(i: int) -> dict[str, Any]:
    return {
        "Name": f"ep{i:02d}",
        "ApiLocation": f"https://ussouthcentral.services.azureml.net/workspaces/ws1/services/ep{i:02d}",
        "PrimaryKey": f"primary-key-of-endpoint-{i:02d}-0123456789",
        "SecondaryKey": f"secondary-key-of-endpoint-{i:02d}-0123456789",
        "Resources": [],
    }


def hook_with(*script: Reply) -> tuple[AzureMLClassicManagementHook, FakeTransport]:
    hook = AzureMLClassicManagementHook()
    transport = FakeTransport(*script)
    hook.session.mount("https://", transport)
    hook.auth_headers()  # reads the connection, registering its token
    return hook, transport


def test_reading_50_endpoints_registers_no_secret_and_returns_no_key(registered: list[Any]):
    hook, _ = hook_with(
        Reply(200, [body(i) for i in range(N)]),
        *[Reply(200, body(i)) for i in range(N) for _ in range(3)],
    )
    registered.clear()
    listed = hook.list_endpoints(SERVICE)
    # Read each endpoint three times, as a promotion does (read, then read back until it serves).
    got = [hook.get_endpoint(SERVICE, f"ep{i:02d}") for i in range(N) for _ in range(3)]
    assert registered == []  # was 2 per endpoint: 100 rebuilds of a pattern growing to 100 keys
    returned = json.dumps([listed, got])
    assert all(field not in returned for field in KEY_FIELDS)
    assert all(body(i)[f] not in returned for i in range(N) for f in KEY_FIELDS)
    assert [e["Name"] for e in listed] == [f"ep{i:02d}" for i in range(N)]


def test_the_key_asked_for_is_registered_once_when_handed_out(registered: list[Any]):
    hook, transport = hook_with(Reply(200, [body(i) for i in range(N)]))
    hook.list_endpoints(SERVICE)
    registered.clear()
    keys = [hook.endpoint_api_key(SERVICE, f"ep{i:02d}") for i in range(N)]
    hook.endpoint_api_key(SERVICE, "ep07")  # again: no new registration
    assert keys == [body(i)["PrimaryKey"] for i in range(N)]
    assert registered == keys  # one per endpoint whose key is used, none for the others' keys
    assert hook.endpoint_api_key(SERVICE, "ep03", field="SecondaryKey") == body(3)["SecondaryKey"]
    assert registered[-1] == body(3)["SecondaryKey"]
    assert len(transport.requests) == 1  # the keys came from the listing: no further read


def test_a_key_of_an_endpoint_not_yet_read_reads_it(registered: list[Any]):
    hook, transport = hook_with(Reply(200, body(4)))
    assert hook.endpoint_api_key(SERVICE, "ep04") == body(4)["PrimaryKey"]
    assert [r.method for r in transport.requests] == ["GET"]
    assert registered[-1] == body(4)["PrimaryKey"]


def test_an_endpoint_without_the_key_or_an_unknown_field_is_a_clear_error(registered: list[Any]):
    hook, _ = hook_with(Reply(200, {"Name": "ep01", "PrimaryKey": None}))
    with pytest.raises(AzureMLServiceError, match="the endpoint has no PrimaryKey"):
        hook.endpoint_api_key(SERVICE, "ep01")
    with pytest.raises(ConfigurationError, match="not an endpoint key"):
        hook.endpoint_api_key(SERVICE, "ep01", field="AuthorizationToken")
