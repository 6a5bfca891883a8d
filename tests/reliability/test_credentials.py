"""Credentials at the edges: the emulator refuses wrong keys on every authenticated route (and changes
nothing), and the SAS tokens the project mints are blob-scoped, least-privilege and short-lived.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from support.emulator import RunningEmulator
from support.retrain import state

pytestmark = pytest.mark.integration

ARM_API = "api-version=2017-01-01"
PUBLIC_ROUTES = {
    "dataplane.swagger": "the service's API description is public, as in Studio",
    "authority.openid": "OpenID discovery documents are public",
    "authority.token": "the credential is the client secret in the body: checked separately below",
}


def authenticated_route_names() -> set[str]:
    """Every named route of the emulator's service planes (the admin API is loopback-only tooling)."""
    from emulator.routes import arm, authority, data_plane, management

    names = set()
    for module in (arm, authority, data_plane, management):
        names |= {str(route.name) for route in module.router.routes if getattr(route, "name", None)}
    return names - set(PUBLIC_ROUTES)


class Requests:
    """One concrete request per route, with real ids, so only the credential is wrong."""

    def __init__(self, emulator: RunningEmulator) -> None:
        current = state(emulator)
        workspace = current["workspaces"][0]
        training = emulator.classic_endpoint("training")
        predictive = emulator.classic_endpoint("predictive", "retrain01")
        arm_service = emulator.arm_service("predictive")
        arm_training = emulator.arm_service("training")
        self.workspace_token = workspace["authorization_token"]
        self.training_key = training["primary_key"]
        self.arm_training_key = arm_training["primary_key"]
        classic = f"/workspaces/{workspace['id']}/services/{training['service_id']}"
        arm_plane = f"/subscriptions/{arm_training['subscription']}/services/{arm_training['data_plane_id']}"
        scoring = f"/workspaces/{workspace['id']}/services/{predictive['service_id']}"
        service_id = emulator.classic_service("predictive")["id"]
        mgmt = f"/workspaces/{workspace['id']}/webservices"
        group = f"/subscriptions/{arm_service['subscription']}/resourceGroups/{arm_service['resource_group']}"
        provider = "/providers/Microsoft.MachineLearning"
        resource = f"{group}{provider}/webServices/{arm_service['name']}"
        self.job_id = self._real_job(emulator.url + classic)
        job = f"{classic}/jobs/{self.job_id}"
        self.by_route: dict[str, list[tuple[str, str, Any]]] = {
            "bes.submit": [("POST", f"{classic}/jobs?api-version=2.0", {"Inputs": {}, "Outputs": {}})],
            "bes.start": [("POST", f"{job}/start?api-version=2.0", None)],
            "bes.status": [
                ("GET", f"{job}?api-version=2.0", None),
                ("GET", f"{arm_plane}/jobs/x?api-version=2.0", None),
            ],
            "bes.delete": [("DELETE", f"{job}?api-version=2.0", None)],
            "rrs.execute": [("POST", f"{scoring}/execute?api-version=2.0", {"Inputs": {"input1": []}})],
            "mgmt.webservices.list": [("GET", mgmt, None)],
            "mgmt.webservice.get": [("GET", f"{mgmt}/{service_id}", None)],
            "mgmt.webservice.delete": [("DELETE", f"{mgmt}/{service_id}", None)],
            "mgmt.endpoints.list": [("GET", f"{mgmt}/{service_id}/endpoints", None)],
            "mgmt.endpoint.get": [("GET", f"{mgmt}/{service_id}/endpoints/retrain01", None)],
            "mgmt.endpoint.put": [("PUT", f"{mgmt}/{service_id}/endpoints/intruder", {"Description": "x"})],
            "mgmt.endpoint.patch": [("PATCH", f"{mgmt}/{service_id}/endpoints/retrain01", {"Resources": []})],
            "mgmt.endpoint.delete": [("DELETE", f"{mgmt}/{service_id}/endpoints/retrain01", None)],
            "mgmt.endpoint.refresh": [("POST", f"{mgmt}/{service_id}/endpoints/retrain01/refresh", None)],
            "arm.webservice.get": [("GET", f"{resource}?{ARM_API}", None)],
            "arm.webservice.put": [("PUT", f"{resource}?{ARM_API}", {"location": "westeurope", "properties": {}})],
            "arm.webservice.patch": [("PATCH", f"{resource}?{ARM_API}", {"properties": {}})],
            "arm.webservice.delete": [("DELETE", f"{resource}?{ARM_API}", None)],
            "arm.webservice.listkeys": [("GET", f"{resource}/listKeys?{ARM_API}", None)],
            "arm.webservices.list": [
                ("GET", f"{group}{provider}/webServices?{ARM_API}", None),
                ("GET", f"/subscriptions/{arm_service['subscription']}{provider}/webServices?{ARM_API}", None),
            ],
            "arm.asyncop.get": [
                (
                    "GET",
                    f"/subscriptions/{arm_service['subscription']}{provider}/locations/westeurope/"
                    f"operationsStatus/{'0' * 32}?{ARM_API}",
                    None,
                )
            ],
            "arm.asyncop.result": [
                (
                    "GET",
                    f"/subscriptions/{arm_service['subscription']}{provider}/locations/westeurope/"
                    f"operationResults/{'0' * 32}?{ARM_API}",
                    None,
                )
            ],
        }

    def _real_job(self, plane: str) -> str:
        """A NotStarted job submitted with the right key (its routes must be refused with wrong ones)."""
        from support.emulator import DataPlane

        response = DataPlane(plane, self.training_key).submit({"Inputs": {}, "Outputs": {}, "GlobalParameters": {}})
        if response.status_code == 200:
            return str(response.json())
        return "0" * 32  # the emulator wants real references; a job id of the right shape will do


@pytest.fixture
def route_requests(emulator: RunningEmulator) -> Requests:
    return Requests(emulator)


def wrong_credentials(catalogue: Requests) -> dict[str, dict[str, str]]:
    return {
        "no Authorization header": {},
        "a made-up key": {"Authorization": "Bearer not-a-key-0123456789"},
        "an empty bearer": {"Authorization": "Bearer "},
        "a basic scheme": {"Authorization": f"Basic {catalogue.training_key}"},
    }


def test_every_authenticated_route_is_in_the_catalogue(route_requests: Requests):
    assert set(route_requests.by_route) == authenticated_route_names()


def test_every_route_refuses_wrong_credentials_and_changes_nothing(emulator: RunningEmulator, route_requests):
    before = serving_state(emulator)
    answers: dict[tuple[str, str, str], int] = {}
    for route, calls in route_requests.by_route.items():
        for method, path, body in calls:
            for label, headers in wrong_credentials(route_requests).items():
                response = requests.request(method, emulator.url + path, headers=headers, json=body, timeout=30)
                answers[route, path, label] = response.status_code
                assert "error" in response.json() or "Error" in str(response.json()), (route, label, response.text)
    refused = {key: code for key, code in answers.items() if code != 401}
    assert not refused, refused
    assert serving_state(emulator) == before
    assert len(answers) >= 4 * len(route_requests.by_route)


def test_a_key_valid_elsewhere_is_refused(emulator: RunningEmulator, route_requests: Requests):
    """Keys are scoped: a training endpoint's key is not a management token, not another service's
    data-plane key, and not an Azure AD token for Resource Manager."""
    before = serving_state(emulator)
    borrowed = {
        "mgmt": route_requests.arm_training_key,
        "arm": route_requests.training_key,
        "rrs": route_requests.training_key,  # the training endpoint's key on the predictive service
        "bes": route_requests.arm_training_key,  # the ARM training service's key on the classic one
    }
    for route, calls in route_requests.by_route.items():
        key = borrowed[route.split(".")[0]]
        for method, path, body in calls:
            if route == "bes.status" and "/subscriptions/" in path:
                continue  # that path is the ARM service itself, where this key is valid
            response = requests.request(
                method, emulator.url + path, headers={"Authorization": f"Bearer {key}"}, json=body, timeout=30
            )
            assert response.status_code == 401, (route, path, response.status_code, response.text[:200])
    assert serving_state(emulator) == before


def test_the_token_authority_refuses_a_wrong_client_secret(emulator: RunningEmulator):
    tenant, client_id, _ = emulator.principal
    response = requests.post(
        f"{emulator.url}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": "wrong-secret-value",
            "scope": "https://management.azure.com/.default",
        },
        timeout=30,
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def serving_state(emulator: RunningEmulator) -> dict[str, Any]:
    """What a wrong-key request must not change: endpoints, models, ARM definitions, jobs' states."""
    current = state(emulator)
    return {
        "workspaces": current["workspaces"],
        "arm": current["arm_web_services"],
        "jobs": {job["id"]: job["status"] for job in current["jobs"]},
    }


# --- SAS tokens the project mints ------------------------------------------------------------------


def sas_fields(token: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(token.lstrip("?")).items()}


JOB_TIMEOUT = timedelta(hours=2)


@pytest.fixture
def minted(
    emulator: RunningEmulator, upload: Callable[..., str], container: str, blob_service: Any
) -> dict[str, dict[str, Any]]:
    """The BES requests SubmitBesJob builds (SAS mode, the default) for real blobs: ``own`` writes
    into a container of its own (as the shipped configs do), ``beside`` next to its input."""
    from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator

    data = upload("in/churn.csv", dataset="churn", rows=50, window=1, seed=1)
    upload("in/other.csv", b"a,b\n1,2\n")
    outputs_container = f"{container}out"
    blob_service.create_container(outputs_container)
    requests_by_layout = {}
    for layout, folder in (("own", outputs_container), ("beside", container)):
        operator = SubmitBesJobOperator(
            task_id="train",
            inputs={"input1": data},
            outputs={"output1": f"{folder}/out/model.ilearner", "output2": f"{folder}/out/evaluation.csv"},
            azureml_conn_id="azureml_churn_training",
            job_timeout=JOB_TIMEOUT,
        )
        requests_by_layout[layout] = operator.build_request()
    return requests_by_layout


def validity(fields: dict[str, str]) -> tuple[timedelta, timedelta]:
    """How long a token is valid from now, and in all (from its start)."""
    from datetime import UTC

    expiry, start = datetime.fromisoformat(fields["se"]), datetime.fromisoformat(fields["st"])
    return expiry - datetime.now(UTC), expiry - start


def test_minted_sas_tokens_are_least_privilege_and_live_as_long_as_the_job(minted: dict[str, dict[str, Any]]):
    # scope, permissions, and the validity each must have: at least / at most (from its start).
    window, margin, skew = timedelta(minutes=15), timedelta(minutes=10), timedelta(minutes=5)
    expected = {
        "input": ("b", "r", timedelta(minutes=55), timedelta(hours=1) + skew),
        "output in its own container": ("c", "cw", JOB_TIMEOUT, JOB_TIMEOUT + margin + window + skew),
        "output beside the input": ("b", "rcw", JOB_TIMEOUT, JOB_TIMEOUT + margin + skew),
    }
    tokens = [("input", r) for r in minted["own"]["Inputs"].values()]
    tokens += [("output in its own container", r) for r in minted["own"]["Outputs"].values()]
    tokens += [("output beside the input", r) for r in minted["beside"]["Outputs"].values()]
    for what, reference in tokens:
        scope, permissions, at_least, at_most = expected[what]
        fields = sas_fields(reference["SasBlobToken"])
        assert fields["sr"] == scope, f"{what}: scope {fields['sr']!r}, expected {scope!r}"
        assert fields["sp"] == permissions, f"{what}: permissions {fields['sp']!r}, expected {permissions!r}"
        remaining, lifetime = validity(fields)
        assert remaining >= at_least, f"{what}: valid for {remaining} more, the job may need {at_least}"
        assert lifetime <= at_most, f"{what}: valid for {lifetime}"
        assert "sig" in fields
        assert not {"srt", "ss", "si"} & set(fields), f"{what}: an account SAS or stored policy: {sorted(fields)}"
        assert "AccountKey" not in str(reference) and "ConnectionString" not in reference
    # The outputs of a container share its token (one secret for the masker, not one per blob).
    assert len({r["SasBlobToken"] for r in minted["own"]["Outputs"].values()}) == 1
    assert len({r["SasBlobToken"] for r in minted["beside"]["Outputs"].values()}) == 2


def put(url: str, token: str) -> int:
    return requests.put(url + token, data=b"m", headers={"x-ms-blob-type": "BlockBlob"}, timeout=30).status_code


def test_minted_sas_tokens_reach_only_their_blob_and_only_as_allowed(minted: dict[str, dict[str, Any]]):
    reference = minted["own"]["Inputs"]["input1"]
    url = reference["BaseLocation"] + reference["RelativeLocation"]
    token = reference["SasBlobToken"]
    assert requests.get(url + token, timeout=30).status_code == 200
    sibling = url.rsplit("/", 1)[0] + "/other.csv"
    assert requests.get(sibling + token, timeout=30).status_code == 403  # another blob
    assert put(url, token) == 403  # read-only
    assert requests.delete(url + token, timeout=30).status_code == 403
    assert requests.get(url + token, timeout=30).content.startswith(b"Tenure")

    # The container's output token: creates and writes blobs there, and nothing else.
    output = minted["own"]["Outputs"]["output1"]
    output_url = output["BaseLocation"] + output["RelativeLocation"]
    output_token = output["SasBlobToken"]
    assert put(output_url, output_token) == 201
    assert requests.get(output_url + output_token, timeout=30).status_code == 403  # no read
    assert requests.delete(output_url + output_token, timeout=30).status_code == 403  # no delete
    listing = output_url.rsplit("/", 2)[0] + "?restype=container&comp=list&" + output_token.lstrip("?")
    assert requests.get(listing, timeout=30).status_code == 403  # no listing of the container
    assert put(url, output_token) == 403  # not the inputs' container
    assert put(sibling, output_token) == 403
    assert requests.get(url + token, timeout=30).content.startswith(b"Tenure")  # the input is intact

    # Beside an input: a token for that one blob only.
    beside = minted["beside"]["Outputs"]["output1"]
    beside_url = beside["BaseLocation"] + beside["RelativeLocation"]
    assert put(beside_url, beside["SasBlobToken"]) == 201
    assert put(url, beside["SasBlobToken"]) == 403
    assert requests.delete(beside_url + beside["SasBlobToken"], timeout=30).status_code == 403
