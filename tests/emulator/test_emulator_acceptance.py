"""Acceptance: the whole manual retraining cycle with plain `requests`, for classic and ARM services.

Upload training data of a later window to Azurite -> BES submit + start -> poll until Finished ->
read the evaluation CSV with the SAS from Results -> swap the model (classic endpoint PATCH, or ARM
GET/edit/PATCH + async operation) -> RRS predictions change.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import requests

from support.emulator import CHURN_COLUMNS, CHURN_ROWS, ENERGY_COLUMNS, ENERGY_ROWS, table_request


def poll(url: str, headers: dict[str, str], done: set[str], key: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(url, headers=headers, timeout=30).json()
        if body[key] in done:
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"{url} did not finish")


def run_bes(api_location: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    submitted = requests.post(f"{api_location}/jobs?api-version=2.0", json=body, headers=headers, timeout=30)
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()
    assert requests.post(f"{api_location}/jobs/{job_id}/start?api-version=2.0", headers=headers, timeout=30).ok
    status = poll(
        f"{api_location}/jobs/{job_id}?api-version=2.0", headers, {"Finished", "Failed", "Cancelled"}, "StatusCode"
    )
    assert status["StatusCode"] == "Finished", status
    return status


def read_result(result: dict[str, str]) -> bytes:
    response = requests.get(result["BaseLocation"] + result["RelativeLocation"] + result["SasBlobToken"], timeout=30)
    assert response.status_code == 200
    return response.content


def score(api_location: str, key: str, columns: list[str], rows: list[list[str]]) -> list[list[str]]:
    response = requests.post(
        f"{api_location}/execute?api-version=2.0&details=true",
        json=table_request(columns, rows),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["Results"]["output1"]["value"]["Values"])


def test_classic_retraining_cycle(emulator, azurite, upload, container):
    training = emulator.classic_endpoint("training")
    target = emulator.classic_endpoint("predictive", "retrain01")
    before = score(target["api_location"], target["primary_key"], CHURN_COLUMNS, CHURN_ROWS)

    relative = upload("training/churn-window2.csv", dataset="churn", rows=400, window=2, seed=11)
    body = {
        "Inputs": {"input1": {"ConnectionString": azurite, "RelativeLocation": relative}},
        "Outputs": {
            "output1": {"ConnectionString": azurite, "RelativeLocation": f"/{container}/models/churn.ilearner"},
            "output2": {"ConnectionString": azurite, "RelativeLocation": f"{container}/models/churn-eval.csv"},
        },
        "GlobalParameters": {"Number of trees": "60"},
    }
    results = run_bes(training["api_location"], training["primary_key"], body)["Results"]
    evaluation = list(csv.DictReader(io.StringIO(read_result(results["output2"]).decode())))
    assert len(evaluation) == 1
    assert float(evaluation[0]["AUC"]) > 0.7

    workspace = emulator.workspace
    service = emulator.classic_service("predictive")
    patch_url = target["management_url"]
    patch = {"Resources": [{"Name": service["trained_model_resource"], "Location": results["output1"]}]}
    response = requests.patch(
        patch_url, json=patch, headers={"Authorization": f"Bearer {target['primary_key']}"}, timeout=60
    )
    assert response.status_code == 200, response.text

    after = score(target["api_location"], target["primary_key"], CHURN_COLUMNS, CHURN_ROWS)
    assert after != before
    default = emulator.classic_endpoint("predictive")
    assert score(default["api_location"], default["primary_key"], CHURN_COLUMNS, CHURN_ROWS) == before
    endpoint = requests.get(
        patch_url, headers={"Authorization": f"Bearer {workspace['authorization_token']}"}, timeout=30
    ).json()
    location = endpoint["Resources"][0]["Location"]
    assert location["RelativeLocation"] == results["output1"]["RelativeLocation"]
    assert location["SasBlobToken"] is None


def test_arm_retraining_cycle(emulator, azurite, upload, container):
    training = emulator.arm_service("training")
    predictive = emulator.arm_service("predictive")
    before = score(predictive["api_location"], predictive["primary_key"], ENERGY_COLUMNS, ENERGY_ROWS)

    relative = upload("training/energy-window2.csv", dataset="energy", rows=300, window=2, seed=5)
    body = {
        "Inputs": {"input1": {"ConnectionString": azurite, "RelativeLocation": relative}},
        "Outputs": {
            "output1": {"ConnectionString": azurite, "RelativeLocation": f"{container}/models/energy.ilearner"},
            "output2": {"ConnectionString": azurite, "RelativeLocation": f"{container}/models/energy-eval.csv"},
        },
        "GlobalParameters": {"Training window": "window-2"},
    }
    results = run_bes(training["api_location"], training["primary_key"], body)["Results"]
    evaluation = next(csv.DictReader(io.StringIO(read_result(results["output2"]).decode())))
    assert float(evaluation["Coefficient of Determination"]) > 0.8

    credential = emulator.credential()
    headers = {"Authorization": f"Bearer {credential.get_token('https://management.azure.com/.default').token}"}
    url = f"{predictive['resource_url']}?api-version=2017-01-01"
    definition = requests.get(url, headers=headers, timeout=30).json()
    for asset in definition["properties"]["assets"].values():
        if asset["name"].endswith("[trained model]"):
            asset["locationInfo"]["uri"] = results["output1"]["BaseLocation"] + results["output1"]["RelativeLocation"]
    patched = requests.patch(url, json=definition, headers=headers, timeout=30)
    assert patched.status_code == 200, patched.text
    operation = poll(patched.headers["Azure-AsyncOperation"], headers, {"Succeeded", "Failed"}, "status")
    assert operation["status"] == "Succeeded", operation

    after = score(predictive["api_location"], predictive["primary_key"], ENERGY_COLUMNS, ENERGY_ROWS)
    assert after != before
    assert requests.get(url, headers=headers, timeout=30).json()["properties"]["provisioningState"] == "Succeeded"
