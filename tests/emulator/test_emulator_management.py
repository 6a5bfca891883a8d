"""Classic management plane through real HTTP: web services, endpoints, the model PATCH."""

from __future__ import annotations

import pytest
import requests

from support.emulator import CHURN_COLUMNS, CHURN_ROWS, error_codes, table_request


@pytest.fixture
def mgmt(emulator):
    workspace = emulator.workspace

    def call(method, path="", token=None, **kwargs):
        headers = {"Authorization": f"Bearer {token or workspace['authorization_token']}"}
        url = f"{emulator.url}/workspaces/{workspace['id']}/webservices{path}"
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)

    return call


def test_list_and_get_web_services(emulator, mgmt):
    listed = mgmt("GET")
    assert listed.status_code == 200
    names = {service["Name"] for service in listed.json()}
    assert names == {"Customer Churn [training exp.]", "Customer Churn [predictive exp.]"}
    predictive = emulator.classic_service("predictive")
    service = mgmt("GET", f"/{predictive['id']}").json()
    assert service["DefaultEndpointName"] == "default"
    assert service["EndpointCount"] == 2
    assert service["WorkspaceId"] == emulator.workspace["id"]


def test_endpoint_shape_and_resources(emulator, mgmt):
    predictive = emulator.classic_service("predictive")
    endpoint = mgmt("GET", f"/{predictive['id']}/endpoints/retrain01").json()
    assert endpoint["Name"] == "retrain01"
    assert endpoint["ApiLocation"] == emulator.classic_endpoint("predictive", "retrain01")["api_location"]
    assert endpoint["Resources"][0]["Name"] == "Customer Churn [trained model]"
    assert endpoint["Resources"][0]["Location"]["SasBlobToken"] is None
    endpoints = mgmt("GET", f"/{predictive['id']}/endpoints").json()
    assert [e["Name"] for e in endpoints] == ["default", "retrain01"]
    training = emulator.classic_service("training")
    assert mgmt("GET", f"/{training['id']}/endpoints/default").json()["Resources"] == []


def test_auth_by_endpoint_key_and_refusals(emulator, mgmt):
    predictive = emulator.classic_service("predictive")
    own_key = emulator.classic_endpoint("predictive", "retrain01")["primary_key"]
    default_key = emulator.classic_endpoint("predictive")["primary_key"]
    path = f"/{predictive['id']}/endpoints/retrain01"
    assert mgmt("GET", path, token=own_key).status_code == 200
    assert error_codes(mgmt("GET", path, token=default_key)) == (401, "Unauthorized", "ManagementRequestUnauthorized")
    assert error_codes(mgmt("GET", token="nope")) == (401, "Unauthorized", "ManagementRequestUnauthorized")
    assert error_codes(mgmt("GET", f"/{predictive['id']}/endpoints/nothere")) == (404, "NotFound", "EndpointNotFound")
    assert error_codes(mgmt("GET", "/0123")) == (404, "NotFound", "WebServiceNotFound")


def test_add_update_and_delete_endpoint(emulator, mgmt):
    predictive = emulator.classic_service("predictive")
    base = f"/{predictive['id']}/endpoints"
    created = mgmt(
        "PUT", f"{base}/ep2", json={"Description": "second", "ThrottleLevel": "High", "MaxConcurrentCalls": 30}
    )
    assert created.status_code == 200, created.text
    endpoint = created.json()
    assert endpoint["MaxConcurrentCalls"] == 30
    assert endpoint["PrimaryKey"]
    # The new endpoint scores (it starts with the default endpoint's model).
    score = requests.post(
        f"{endpoint['ApiLocation']}/execute?api-version=2.0&details=true",
        json=table_request(CHURN_COLUMNS, CHURN_ROWS),
        headers={"Authorization": f"Bearer {endpoint['PrimaryKey']}"},
        timeout=30,
    )
    assert score.status_code == 200
    updated = mgmt("PUT", f"{base}/ep2", json={"Description": "renamed", "ThrottleLevel": "Low"}).json()
    assert (updated["Description"], updated["MaxConcurrentCalls"], updated["PrimaryKey"]) == (
        "renamed",
        4,
        endpoint["PrimaryKey"],
    )
    assert mgmt("DELETE", f"{base}/ep2").status_code == 200
    assert error_codes(mgmt("GET", f"{base}/ep2")) == (404, "NotFound", "EndpointNotFound")


@pytest.mark.parametrize("name", ["Upper", "with-dash", "a" * 25])
def test_endpoint_name_rules(emulator, mgmt, name):
    predictive = emulator.classic_service("predictive")
    response = mgmt("PUT", f"/{predictive['id']}/endpoints/{name}", json={})
    assert error_codes(response) == (400, "BadArgument", "InvalidEndpointName")


def test_default_endpoint_cannot_be_deleted_patched_or_refreshed(emulator, mgmt):
    predictive = emulator.classic_service("predictive")
    path = f"/{predictive['id']}/endpoints/default"
    assert error_codes(mgmt("DELETE", path)) == (400, "InvalidOperation", "CannotDeleteDefaultEndpoint")
    body = {"Resources": [{"Name": "Customer Churn [trained model]", "Location": {}}]}
    assert error_codes(mgmt("PATCH", path, json=body)) == (400, "BadArgument", "InvalidWebServiceResources")
    response = mgmt("POST", f"{path}/refresh", json={"OverwriteResources": "True"})
    assert error_codes(response) == (400, "InvalidOperation", "CannotRefreshDefaultEndpoint")


def test_patch_refusals(emulator, mgmt, upload, blob_service, container):
    predictive = emulator.classic_service("predictive")
    path = f"/{predictive['id']}/endpoints/retrain01"
    base = blob_service.url
    location = {"BaseLocation": base, "RelativeLocation": f"{container}/m.ilearner", "SasBlobToken": "?sv=x&sig=y"}
    wrong_name = {"Resources": [{"Name": "Churn Model [trained model]", "Location": location}]}
    assert error_codes(mgmt("PATCH", path, json=wrong_name)) == (400, "BadArgument", "InvalidWebServiceResources")
    training = emulator.classic_service("training")
    body = {"Resources": [{"Name": "Customer Churn [trained model]", "Location": location}]}
    response = mgmt("PATCH", f"/{training['id']}/endpoints/default", json=body)
    assert error_codes(response) == (400, "BadArgument", "InvalidWebServiceResources")
    assert error_codes(mgmt("PATCH", path, json={"Resources": []})) == (400, "BadArgument", "RequestBodyInvalid")
    # A SAS that does not grant read is refused by storage, and the endpoint keeps its model.
    upload("m.ilearner", b"PK-not-really")
    assert error_codes(mgmt("PATCH", path, json=body)) == (400, "BadArgument", "InvalidBlob")


def test_patch_with_an_invalid_model_keeps_the_old_one(emulator, mgmt, upload, blob_service, container):
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    predictive = emulator.classic_service("predictive")
    path = f"/{predictive['id']}/endpoints/retrain01"
    before = mgmt("GET", path).json()["Resources"]
    upload("junk.ilearner", b"this is not a model")
    sas = generate_blob_sas(
        blob_service.account_name,
        container,
        "junk.ilearner",
        account_key=blob_service.credential.account_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    location = {
        "BaseLocation": blob_service.url,
        "RelativeLocation": f"{container}/junk.ilearner",
        "SasBlobToken": "?" + sas,
    }
    body = {"Resources": [{"Name": "Customer Churn [trained model]", "Location": location}]}
    assert error_codes(mgmt("PATCH", path, json=body)) == (400, "InvalidOperation", "IncompatibleModel")
    assert mgmt("GET", path).json()["Resources"] == before
    absent_sas = generate_blob_sas(
        blob_service.account_name,
        container,
        "absent.ilearner",
        account_key=blob_service.credential.account_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    missing = {**location, "RelativeLocation": f"{container}/absent.ilearner", "SasBlobToken": "?" + absent_sas}
    body = {"Resources": [{"Name": "Customer Churn [trained model]", "Location": missing}]}
    assert error_codes(mgmt("PATCH", path, json=body)) == (400, "BadArgument", "BlobNotFound")


def test_refresh_is_304_when_nothing_changed(emulator, mgmt):
    predictive = emulator.classic_service("predictive")
    response = mgmt("POST", f"/{predictive['id']}/endpoints/retrain01/refresh", json={"OverwriteResources": "True"})
    assert response.status_code == 304


def test_delete_web_service(emulator, mgmt):
    training = emulator.classic_service("training")
    assert mgmt("DELETE", f"/{training['id']}").status_code == 200
    assert error_codes(mgmt("GET", f"/{training['id']}")) == (404, "NotFound", "WebServiceNotFound")
