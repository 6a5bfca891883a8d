"""ARM web services through real HTTP, with tokens from the emulator's authority via azure-identity."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential

from emulator.storage import BlobReferenceError, blob_from_uri
from support.emulator import ENERGY_COLUMNS, ENERGY_ROWS, error_codes, table_request

API = "api-version=2017-01-01"
SCOPE = "https://management.azure.com/.default"


@pytest.fixture
def credential(emulator) -> ClientSecretCredential:
    return emulator.credential()  # type: ignore[no-any-return]


@pytest.fixture
def arm(emulator, credential):
    token = credential.get_token(SCOPE).token

    def call(method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return requests.request(method, url, headers=headers, timeout=30, **kwargs)

    return call


def service_url(emulator, kind: str) -> str:
    return emulator.arm_service(kind)["resource_url"]


def wait_operation(arm, url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = arm("GET", url).json()
        if body["status"] in ("Succeeded", "Failed"):
            return dict(body)
        time.sleep(0.1)
    raise AssertionError("operation did not finish")


def test_azure_identity_gets_a_token_through_requests_ca_bundle(emulator, monkeypatch):
    """The exact client path: ClientSecretCredential, https authority, REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.cert_path)
    tenant, client_id, secret = emulator.principal
    credential = ClientSecretCredential(
        tenant, client_id, secret, authority=emulator.tls_url, disable_instance_discovery=True
    )
    token = credential.get_token(SCOPE)
    assert token.token
    assert token.expires_on > time.time() + 3000
    response = requests.get(
        service_url(emulator, "predictive") + "?" + API, headers={"Authorization": f"Bearer {token.token}"}, timeout=30
    )
    assert response.status_code == 200


def test_wrong_secret_is_invalid_client(emulator):
    tenant, client_id, _ = emulator.principal
    response = requests.post(
        f"{emulator.tls_url}/{tenant}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "wrong", "scope": SCOPE},
        verify=emulator.cert_path,
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "error_description" in response.json()


def test_tokens_expire(emulator, credential):
    emulator.admin("PATCH", "settings", json={"token_lifetime_seconds": 1})
    tenant, client_id, secret = emulator.principal
    token = requests.post(
        f"{emulator.tls_url}/{tenant}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE},
        verify=emulator.cert_path,
        timeout=30,
    ).json()["access_token"]
    time.sleep(1.2)
    response = requests.get(
        service_url(emulator, "predictive") + "?" + API, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "ExpiredAuthenticationToken"


def test_arm_auth_errors(emulator, arm):
    url = service_url(emulator, "predictive") + "?" + API
    assert requests.get(url, timeout=30).json()["error"]["code"] == "AuthenticationFailed"
    bad = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")
    other = arm(
        "GET",
        f"{emulator.url}/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.MachineLearning/webServices?{API}",
    )
    assert (other.status_code, other.json()["error"]["code"]) == (403, "AuthorizationFailed")
    version = arm("GET", service_url(emulator, "predictive") + "?api-version=2015-01-01")
    assert (version.status_code, version.json()["error"]["code"]) == (400, "InvalidApiVersionParameter")


def test_get_returns_the_graph_without_secrets(emulator, arm):
    response = arm("GET", service_url(emulator, "predictive") + "?" + API)
    assert response.status_code == 200
    service = response.json()
    properties = service["properties"]
    assert service["type"] == "Microsoft.MachineLearning/webServices"
    assert properties["packageType"] == "Graph"
    assert properties["provisioningState"] == "Succeeded"
    assert {"package", "assets", "input", "output", "parameters"} <= set(properties)
    assert "keys" not in properties
    assert properties["storageAccount"] == {"name": "devstoreaccount1"}
    assert properties["swaggerLocation"].endswith(
        f"/services/{emulator.arm_service('predictive')['data_plane_id']}/swagger.json"
    )
    text = response.text
    assert emulator.arm_service("predictive")["primary_key"] not in text
    assert "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq" not in text
    models = [a for a in properties["assets"].values() if a["type"] == "Resource"]
    assert models[0]["name"] == "Energy Efficiency [trained model]"
    assert requests.get(properties["swaggerLocation"], timeout=30).status_code == 200


def test_list_keys_and_lists(emulator, arm):
    predictive = emulator.arm_service("predictive")
    keys = arm("GET", service_url(emulator, "predictive") + "/listKeys?" + API).json()
    assert keys == {"primary": predictive["primary_key"], "secondary": predictive["secondary_key"]}
    group = arm("GET", service_url(emulator, "predictive").rsplit("/", 1)[0] + "?" + API).json()
    assert sorted(s["name"] for s in group["value"]) == ["energy-predictive", "energy-training"]
    assert "nextLink" not in group  # one page; the spec's nextLink is a string, never null
    subscription = predictive["subscription"]
    listed = arm(
        "GET", f"{emulator.url}/subscriptions/{subscription}/providers/Microsoft.MachineLearning/webServices?{API}"
    )
    assert len(listed.json()["value"]) == 2


def test_put_creates_then_updates_and_delete(emulator, arm):
    source = arm("GET", service_url(emulator, "predictive") + "?" + API).json()
    url = service_url(emulator, "predictive").replace("energy-predictive", "energy-copy") + "?" + API
    # PascalCase members, as the spec's own examples mix them.
    body = {
        "Location": source["location"],
        "Properties": {**source["properties"], "Keys": {"Primary": "k1-dev-only", "Secondary": "k2-dev-only"}},
    }
    created = arm("PUT", url, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["properties"]["provisioningState"] == "Provisioning"
    operation = wait_operation(arm, created.headers["Azure-AsyncOperation"])
    assert operation["status"] == "Succeeded"
    assert arm("GET", url).json()["properties"]["provisioningState"] == "Succeeded"
    keys = arm("GET", url.replace("?", "/listKeys?")).json()
    assert keys == {"primary": "k1-dev-only", "secondary": "k2-dev-only"}
    updated = arm("PUT", url, json=body)
    assert updated.status_code == 200
    wait_operation(arm, updated.headers["Azure-AsyncOperation"])
    deleted = arm("DELETE", url)
    assert deleted.status_code == 202
    assert wait_operation(arm, deleted.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    assert arm("GET", deleted.headers["Location"]).status_code == 204
    assert arm("GET", url).status_code == 404
    # The spec: "a 202 status is returned even if the service did not exist".
    again = arm("DELETE", url)
    assert again.status_code == 202
    assert wait_operation(arm, again.headers["Azure-AsyncOperation"])["status"] == "Succeeded"


def test_put_needs_a_known_experiment(emulator, arm):
    source = arm("GET", service_url(emulator, "predictive") + "?" + API).json()
    properties = source["properties"]
    properties["assets"] = {k: v for k, v in properties["assets"].items() if v["type"] == "Resource"}
    url = service_url(emulator, "predictive").replace("energy-predictive", "other") + "?" + API
    response = arm("PUT", url, json={"location": "South Central US", "properties": properties})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "InvalidRequestContent")


def test_patch_with_a_bad_model_fails_and_keeps_the_old_one(emulator, arm, upload, energy_scoring, blob_service):
    url = service_url(emulator, "predictive") + "?" + API
    before = energy_scoring.execute(table_request(ENERGY_COLUMNS, ENERGY_ROWS)).json()
    definition = arm("GET", url).json()
    asset_id, asset = next((k, v) for k, v in definition["properties"]["assets"].items() if v["type"] == "Resource")
    old_uri = asset["locationInfo"]["uri"]
    relative = upload("bad.ilearner", b"not a model")
    asset["locationInfo"]["uri"] = blob_service.url + relative
    patched = arm("PATCH", url, json={"properties": {"assets": {asset_id: asset}}})
    assert patched.status_code == 200
    operation = wait_operation(arm, patched.headers["Azure-AsyncOperation"])
    assert operation["status"] == "Failed"
    assert operation["errorInfo"]["code"] == "IncompatibleModel"
    assert operation["errorInfo"]["target"] == f"properties.assets.{asset_id}.locationInfo.uri"
    assert operation["error"] == {"code": "IncompatibleModel", "message": operation["errorInfo"]["message"]}
    result = arm("GET", patched.headers["Azure-AsyncOperation"].replace("/operationsStatus/", "/operationResults/"))
    assert (result.status_code, result.json()["error"]["code"]) == (400, "IncompatibleModel")
    after = arm("GET", url).json()
    assert after["properties"]["provisioningState"] == "Failed"
    assert after["properties"]["assets"][asset_id]["locationInfo"]["uri"] == old_uri
    assert energy_scoring.execute(table_request(ENERGY_COLUMNS, ENERGY_ROWS)).json() == before


def operation_id(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[-1]


def test_operation_is_provisioning_until_done(emulator, arm):
    # Held by the emulator (not by a duration a slow machine could outlast) until released.
    emulator.admin("POST", "faults/operations", json={"outcome": "hang", "count": 2})
    url = service_url(emulator, "training") + "?" + API
    patched = arm("PATCH", url, json={"tags": {"team": "ml"}})
    status_url = patched.headers["Azure-AsyncOperation"]
    assert patched.json()["properties"]["provisioningState"] == "Provisioning"
    assert arm("GET", status_url).json()["status"] == "Provisioning"
    busy = arm("PATCH", url, json={"tags": {"team": "ml2"}})
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "Conflict")
    busy = arm("DELETE", url)
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "Conflict")
    assert arm("GET", status_url).json()["status"] == "Provisioning"
    released = emulator.admin("POST", f"operations/{operation_id(status_url)}/release").json()
    assert released == {"id": operation_id(status_url), "status": "Provisioning"}
    assert wait_operation(arm, status_url)["status"] == "Succeeded"
    assert arm("GET", url).json()["tags"] == {"team": "ml"}
    # A delete's operation is held too; its Location answers 202 until it ends, then 204.
    deleted = arm("DELETE", url)
    assert deleted.status_code == 202
    assert arm("GET", url).status_code == 404  # gone at once
    result = arm("GET", deleted.headers["Location"])
    assert (result.status_code, result.headers["Location"]) == (202, deleted.headers["Location"])
    emulator.admin("DELETE", "faults")  # clearing the faults leaves a held operation held
    assert arm("GET", deleted.headers["Location"]).status_code == 202
    emulator.admin("POST", f"operations/{operation_id(deleted.headers['Azure-AsyncOperation'])}/release")
    assert wait_operation(arm, deleted.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    assert arm("GET", deleted.headers["Location"]).status_code == 204
    unknown = requests.post(f"{emulator.url}/_emulator/operations/{'0' * 32}/release", timeout=10)
    assert unknown.status_code == 404


def test_unknown_resource(emulator, arm):
    url = service_url(emulator, "predictive").replace("energy-predictive", "nothing") + "?" + API
    response = arm("GET", url)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "ResourceNotFound")
    group = url.replace("retrain-dev-rg", "no-such-rg")
    assert arm("GET", group).json()["error"]["code"] == "ResourceGroupNotFound"
    assert error_codes(requests.get(emulator.url + "/nothing", timeout=30)) == (404, "NotFound", "ResourceNotFound")


def test_handed_out_urls_use_the_scheme_and_host_the_request_reached(emulator, arm):
    """Through the http listener: http URLs; through TLS: https ones (azure-core sends a token over
    https only); and the host and port the client used, e.g. a container's service name."""
    tls_url = service_url(emulator, "training").replace(emulator.url, emulator.tls_url) + "?" + API
    over_tls = arm("PATCH", tls_url, json={"tags": {"via": "tls"}}, verify=emulator.cert_path)
    assert over_tls.headers["Azure-AsyncOperation"].startswith(emulator.tls_url + "/subscriptions/")
    operation = over_tls.headers["Azure-AsyncOperation"].replace(emulator.tls_url, emulator.url)
    assert wait_operation(arm, operation)["status"] == "Succeeded"
    over_http = arm("PATCH", service_url(emulator, "training") + "?" + API, json={"tags": {"via": "http"}})
    assert over_http.headers["Azure-AsyncOperation"].startswith(emulator.url + "/subscriptions/")
    assert wait_operation(arm, over_http.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    port = emulator.url.rsplit(":", 1)[1]
    named = arm("GET", service_url(emulator, "predictive") + "?" + API, headers={"Host": f"azureml-emulator:{port}"})
    swagger = named.json()["properties"]["swaggerLocation"]
    assert swagger.startswith(f"http://azureml-emulator:{port}/subscriptions/"), swagger
    deleted = arm("DELETE", service_url(emulator, "training") + "?" + API, headers={"Host": f"localhost:{port}"})
    assert deleted.status_code == 202
    for header in ("Azure-AsyncOperation", "Location"):
        assert deleted.headers[header].startswith(f"http://localhost:{port}/subscriptions/"), header


def test_unknown_paths_and_methods_on_arm_paths_answer_in_the_arm_envelope(emulator, arm):
    resource = service_url(emulator, "predictive")
    not_allowed = arm("POST", resource + "?" + API)
    assert not_allowed.status_code == 405
    assert not_allowed.json() == {
        "error": {"code": "MethodNotAllowed", "message": not_allowed.json()["error"]["message"], "details": []}
    }
    assert not_allowed.headers["Allow"] == "DELETE, GET, PATCH, PUT"
    unknown = arm("GET", resource + "/nothing?" + API)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "NotFound")
    assert "target" not in unknown.json()["error"]
    # Not ARM's: an ARM service's data plane answers in Studio's envelope (no list-jobs route: 405).
    jobs = f"{emulator.arm_service('training')['api_location']}/jobs?api-version=2.0"
    assert error_codes(requests.get(jobs, timeout=30)) == (405, "MethodNotAllowed", "MethodNotAllowed")


def test_enum_values_are_read_case_insensitively_and_shown_in_the_spec_casing(emulator, arm):
    url = service_url(emulator, "predictive") + "?" + API
    definition = arm("GET", url).json()
    properties = definition["properties"]
    table = properties["input"]["properties"]["input1"]
    for column in table["properties"].values():
        column["type"], column["format"] = column["type"].lower(), column["format"].upper()
    properties["diagnostics"] = {"level": "error", "expiry": None}
    assert arm(
        "PATCH", url, json={"properties": {"input": properties["input"], "diagnostics": properties["diagnostics"]}}
    ).ok
    shown = arm("GET", url).json()["properties"]
    assert {(c["type"], c["format"]) for c in shown["input"]["properties"]["input1"]["properties"].values()} == {
        ("Number", "Double")
    }
    assert shown["diagnostics"] == {"level": "Error"}


def test_blob_uris_name_their_account_in_the_path_unless_azure_style():
    key = "a2V5"
    for uri, account_url in [
        ("http://127.0.0.1:10000/devstoreaccount1/models/m.ilearner", "http://127.0.0.1:10000/devstoreaccount1"),
        ("http://azurite:10000/devstoreaccount1/models/m.ilearner", "http://azurite:10000/devstoreaccount1"),
        (
            "https://devstoreaccount1.blob.core.windows.net/models/m.ilearner",
            "https://devstoreaccount1.blob.core.windows.net",
        ),
    ]:
        target = blob_from_uri(uri, "DevStoreAccount1", key)
        assert (target.account_url, target.account_name, target.container, target.blob) == (
            account_url,
            "devstoreaccount1",
            "models",
            "m.ilearner",
        )
    with pytest.raises(BlobReferenceError, match="'other' is not the web service's storage account"):
        blob_from_uri("https://other.blob.core.windows.net/models/m.ilearner", "devstoreaccount1", key)
    with pytest.raises(BlobReferenceError, match="No key is known"):
        blob_from_uri("http://127.0.0.1:10000/devstoreaccount1/models/m.ilearner", "devstoreaccount1", None)
