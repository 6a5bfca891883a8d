"""BES (api-version 2.0) through real HTTP: job lifecycle, real training, every validation code."""

from __future__ import annotations

import csv
import io
import json
import time
from urllib.parse import parse_qs

import pytest
import requests

from support.emulator import connection_reference, error_codes

BINARY_COLUMNS = ["Accuracy", "Precision", "Recall", "F-Score", "AUC", "Average Log Loss", "Training Log Loss"]
REGRESSION_COLUMNS = [
    "Negative Log Likelihood",
    "Mean Absolute Error",
    "Root Mean Squared Error",
    "Relative Absolute Error",
    "Relative Squared Error",
    "Coefficient of Determination",
]


def download(result: dict[str, str]) -> bytes:
    response = requests.get(result["BaseLocation"] + result["RelativeLocation"] + result["SasBlobToken"], timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def metrics(result: dict[str, str]) -> dict[str, float]:
    header, values = download(result).decode().splitlines()
    return dict(zip(header.split(","), map(float, values.split(",")), strict=True))


def test_job_lifecycle_trains_a_model_and_evaluates_it(churn_training, churn_job):
    job_id = churn_training.submit_ok(churn_job())
    assert len(job_id) == 32
    assert int(job_id, 16) >= 0
    assert churn_training.status(job_id) == {"StatusCode": "NotStarted", "Results": None, "Details": None}

    start = churn_training.start(job_id)
    assert start.status_code == 200
    assert start.content == b""
    status = churn_training.wait(job_id)

    assert status["StatusCode"] == "Finished", status
    assert status["Details"] is None
    assert set(status["Results"]) == {"output1", "output2"}
    model, evaluation = status["Results"]["output1"], status["Results"]["output2"]
    assert model["ConnectionString"] is None
    assert model["BaseLocation"].endswith("/devstoreaccount1/")
    assert model["RelativeLocation"].endswith("/out/model-w0.ilearner")
    assert not model["RelativeLocation"].startswith("/")
    assert download(model)[:2] == b"PK"  # the .ilearner archive
    rows = list(csv.reader(io.StringIO(download(evaluation).decode())))
    assert rows[0] == BINARY_COLUMNS
    assert len(rows) == 2
    metrics = dict(zip(rows[0], map(float, rows[1]), strict=True))
    assert 0.6 < metrics["Accuracy"] <= 1.0
    assert 0.5 < metrics["AUC"] <= 1.0


def test_results_carry_a_fresh_read_only_blob_sas_valid_24h05m(churn_training, churn_job):
    job_id = churn_training.submit_ok(churn_job())
    churn_training.start(job_id)
    first = churn_training.wait(job_id)["Results"]["output1"]["SasBlobToken"]
    time.sleep(1.1)
    second = churn_training.status(job_id)["Results"]["output1"]["SasBlobToken"]

    assert first.startswith("?")
    assert first != second
    query = {k: v[0] for k, v in parse_qs(first[1:]).items()}
    assert query["sp"] == "r"
    assert query["sr"] == "b"
    assert "sig" in query
    from datetime import datetime

    start, expiry = (datetime.fromisoformat(query[k].replace("Z", "+00:00")) for k in ("st", "se"))
    assert (expiry - start).total_seconds() == 24 * 3600 + 5 * 60


def test_sas_from_results_cannot_write(churn_training, churn_job):
    job_id = churn_training.submit_ok(churn_job())
    churn_training.start(job_id)
    result = churn_training.wait(job_id)["Results"]["output2"]
    url = result["BaseLocation"] + result["RelativeLocation"] + result["SasBlobToken"]
    response = requests.put(url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=30)
    assert response.status_code == 403


def test_sas_references_and_leading_slash_are_accepted(churn_training, churn_job, blob_service, container):
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    body = churn_job()
    sas = generate_container_sas(
        blob_service.account_name,
        container,
        account_key=blob_service.credential.account_key,
        permission=ContainerSasPermissions(read=True, write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    base = blob_service.url
    relative = body["Inputs"]["input1"]["RelativeLocation"]
    body["Inputs"]["input1"] = {"BaseLocation": base, "RelativeLocation": "/" + relative, "SasBlobToken": "?" + sas}
    body["Outputs"]["output2"] = {
        "BaseLocation": base,
        "RelativeLocation": f"/{container}/sas/eval.csv",
        "SasBlobToken": "?" + sas,
    }
    status = churn_training.run(body)
    assert status["StatusCode"] == "Finished", status
    assert status["Results"]["output2"]["RelativeLocation"] == f"{container}/sas/eval.csv"
    assert download(status["Results"]["output2"]).startswith(b"Accuracy,")


def test_global_parameters_change_the_learner(churn_training, churn_job):
    one_tree = churn_training.run(churn_job(tag="weak", **{"Number of trees": "1", "Learning rate": "0.01"}))
    default = churn_training.run(churn_job())
    weak, strong = metrics(one_tree["Results"]["output2"]), metrics(default["Results"]["output2"])
    assert weak["Average Log Loss"] > strong["Average Log Loss"]


def test_arm_training_service_needs_its_required_parameter_and_trains_regression(
    energy_training, azurite, upload, container
):
    body = {
        "Inputs": {"input1": connection_reference(azurite, upload("energy.csv", dataset="energy", rows=200))},
        "Outputs": {
            "output1": connection_reference(azurite, f"{container}/m.ilearner"),
            "output2": connection_reference(azurite, f"{container}/e.csv"),
        },
    }
    missing = energy_training.submit(body)
    assert error_codes(missing) == (400, "BadArgument", "MissingRequiredGlobalParameters")

    body["GlobalParameters"] = {"Training window": "2026-W48"}
    status = energy_training.run(body)
    assert status["StatusCode"] == "Finished", status
    header, values = download(status["Results"]["output2"]).decode().splitlines()
    assert header.split(",") == REGRESSION_COLUMNS
    metrics = dict(zip(REGRESSION_COLUMNS, map(float, values.split(",")), strict=True))
    assert metrics["Coefficient of Determination"] > 0.8


def test_delete_cancels_a_running_job(emulator, churn_training, churn_job):
    emulator.admin("PATCH", "settings", json={"job_min_duration_seconds": 30})
    job_id = churn_training.submit_ok(churn_job())
    churn_training.start(job_id)
    assert churn_training.status(job_id)["StatusCode"] == "Running"

    response = churn_training.delete(job_id)

    assert response.status_code == 200
    assert churn_training.status(job_id) == {"StatusCode": "Cancelled", "Results": None, "Details": None}


def test_delete_cancels_a_job_not_started(churn_training, churn_job):
    job_id = churn_training.submit_ok(churn_job())
    assert churn_training.delete(job_id).status_code == 200
    assert churn_training.status(job_id)["StatusCode"] == "Cancelled"
    assert error_codes(churn_training.start(job_id)) == (400, "InvalidOperation", "CannotStartJob")


def test_min_duration_keeps_the_job_running(emulator, churn_training, churn_job):
    emulator.admin("PATCH", "settings", json={"job_min_duration_seconds": 1.5})
    job_id = churn_training.submit_ok(churn_job())
    started = time.monotonic()
    churn_training.start(job_id)
    assert churn_training.status(job_id)["StatusCode"] == "Running"
    assert churn_training.wait(job_id)["StatusCode"] == "Finished"
    assert time.monotonic() - started >= 1.4


def test_forced_failure_and_hang(emulator, churn_training, churn_job):
    emulator.admin("POST", "faults/jobs", json={"outcome": "fail", "details": "disk on fire", "count": 1})
    failed = churn_training.run(churn_job())
    assert failed == {"StatusCode": "Failed", "Results": None, "Details": "disk on fire"}

    emulator.admin("POST", "faults/jobs", json={"outcome": "hang", "count": 1})
    job_id = churn_training.submit_ok(churn_job())
    churn_training.start(job_id)
    time.sleep(0.5)
    assert churn_training.status(job_id)["StatusCode"] == "Running"
    churn_training.delete(job_id)
    assert churn_training.status(job_id)["StatusCode"] == "Cancelled"
    assert churn_training.run(churn_job())["StatusCode"] == "Finished"  # the faults were used up


def test_start_twice_is_refused(churn_training, churn_job):
    job_id = churn_training.submit_ok(churn_job())
    churn_training.start(job_id)
    response = churn_training.start(job_id)
    assert error_codes(response) == (400, "InvalidOperation", "CannotStartJob")
    assert "Running" in response.json()["error"]["details"][0]["message"] or "Finished" in response.text


# --- training failures: the job fails with Details naming the problem ----------------------------


def module_error(details: str | None) -> tuple[str, str, str, str]:
    """(class, specific code, module, message) of a failed job's Details: Studio's error envelope."""
    assert details is not None
    error = json.loads(details)["error"]
    (detail,) = error["details"]
    return error["code"], detail["code"], detail["target"], detail["message"]


@pytest.mark.parametrize(
    ("content", "number", "expected"),
    [
        (b"Tenure,MonthlyCharges\n1,2\n", "0001", "['SupportCalls', 'ContractMonths', 'Age', 'Churn'] not found"),
        (b'Tenure,"MonthlyCharges\n1,2\n', "0049", "Malformed CSV"),
        (b"", "0003", "empty"),
        ("csv", "0021", "at least 40"),
        ("label", "0018", "'Maybe' at line 3"),
        ("numeric", "0018", "Column 'Age' is not numeric: value 'old' at line 2"),
        ("ragged", "0049", "Malformed CSV at line 4"),
    ],
)
def test_bad_training_data_fails_the_job_with_details(churn_training, churn_job, upload, content, number, expected):
    body = churn_job()
    relative = body["Inputs"]["input1"]["RelativeLocation"]
    blob = relative.split("/", 1)[1]
    if isinstance(content, str):
        from emulator.datasets import generate_csv

        lines = generate_csv("churn", rows=60, seed=3).splitlines()
        if content == "csv":
            lines = lines[:11]
        elif content == "label":
            lines[2] = lines[2].rsplit(",", 1)[0] + ",Maybe"
        elif content == "numeric":
            cells = lines[1].split(",")
            cells[4] = "old"
            lines[1] = ",".join(cells)
        else:
            lines[3] = lines[3] + ",extra"
        content = ("\n".join(lines) + "\n").encode()
    upload(blob, content)

    status = churn_training.run(body)

    assert status["StatusCode"] == "Failed"
    assert status["Results"] is None
    error_class, _, module, message = module_error(status["Details"])
    assert (error_class, module) == ("ModuleExecutionError", "Train Model")
    assert message.startswith(f"Error {number}: ")
    assert expected in message


def test_bad_parameter_value_fails_the_job_in_the_learner_module(churn_training, churn_job):
    status = churn_training.run(churn_job(**{"Number of trees": "many"}))
    assert status["StatusCode"] == "Failed"
    assert module_error(status["Details"]) == (
        "ModuleExecutionError",
        "ParameterParseError",
        "Two-Class Boosted Decision Tree",
        "Error 0002: Global parameter 'Number of trees' expects a Int value, got 'many'.",
    )


def test_a_forced_failure_passes_its_details_through(emulator, churn_training, churn_job):
    emulator.admin("POST", "faults/jobs", json={"outcome": "fail", "details": "plain text, as given", "count": 1})
    status = churn_training.run(churn_job())
    assert (status["StatusCode"], status["Details"]) == ("Failed", "plain text, as given")


def test_storage_that_cannot_be_reached_is_a_500_not_a_bad_blob(monkeypatch):
    """A blob behind an account that does not answer is not the caller's mistake: 500 ResourceDownload,
    which clients retry; a blob the account says is missing stays 400 BlobNotFound (test above)."""
    from devtools.services import free_port
    from emulator import storage
    from emulator.errors import api_error

    monkeypatch.setitem(storage._TIMEOUTS, "retry_total", 0)  # the refusal at once, not after a backoff
    url = f"http://127.0.0.1:{free_port()}/devstoreaccount1"  # nothing listens there
    target = storage.BlobTarget(url, "devstoreaccount1", "c", "in.csv", account_key=storage.AZURITE_KEY)
    with pytest.raises(storage.BlobReferenceError) as refused:
        target.check_exists()
    error = api_error(refused.value.code, str(refused.value))
    assert (error.status, error.body["error"]["code"], refused.value.code) == (500, "InternalError", "ResourceDownload")


# --- request validation: each catalogue code -----------------------------------------------------


def test_bad_api_version(churn_training, churn_job):
    response = requests.post(
        f"{churn_training.base}/jobs?api-version=2.1", json=churn_job(), headers=churn_training.headers(), timeout=30
    )
    assert error_codes(response) == (400, "BadArgument", "BadVersionCall")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic abc"])
def test_wrong_key_is_unauthorized(churn_training, churn_job, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.post(
        f"{churn_training.base}/jobs?api-version=2.0", json=churn_job(), headers=headers, timeout=30
    )
    assert error_codes(response) == (401, "Unauthorized", "ScoreRequestUnauthorized")
    assert response.json()["error"]["details"][0]["message"] == "Invalid credentials provided."


def test_secondary_key_works(emulator, churn_training, churn_job):
    churn_training.key = emulator.classic_endpoint("training")["secondary_key"]
    assert churn_training.submit(churn_job()).status_code == 200


def test_input_and_inputs_together(churn_training, churn_job):
    body = churn_job()
    body["Input"] = body["Inputs"]["input1"]
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "DuplicateInputInBatchCall")


def test_legacy_single_input_is_accepted(churn_training, churn_job):
    body = churn_job()
    body["Input"] = body.pop("Inputs")["input1"]
    assert churn_training.run(body)["StatusCode"] == "Finished"


def test_output_names_are_case_sensitive(churn_training, churn_job):
    body = churn_job()
    body["Outputs"]["Output1"] = body["Outputs"].pop("output1")
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "InvalidOutputOverrideName")


@pytest.mark.parametrize(
    ("port", "relative"),
    [("output1", "model.csv"), ("output2", "eval.ilearner"), ("input1", "data.json")],
)
def test_blob_extensions(churn_training, churn_job, container, port, relative):
    body = churn_job()
    group = "Inputs" if port == "input1" else "Outputs"
    body[group][port]["RelativeLocation"] = f"{container}/{relative}"
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "InvalidBlobExtension")


def test_missing_input_blob(churn_training, churn_job, container):
    body = churn_job()
    body["Inputs"]["input1"]["RelativeLocation"] = f"{container}/nothing-here.csv"
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "BlobNotFound")


def test_unexpected_global_parameter(churn_training, churn_job):
    body = churn_job(**{"number of trees": "3"})
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "UnexpectedParameter")


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"Inputs": {}, "Extra": 1}'])
def test_malformed_body(churn_training, data):
    response = requests.post(
        f"{churn_training.base}/jobs?api-version=2.0",
        data=data,
        headers={**churn_training.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert error_codes(response) == (400, "BadArgument", "RequestBodyInvalid")


@pytest.mark.parametrize(
    "connection_string",
    ["AccountName=x", "not a connection string", "AccountName=a;AccountKey=b;BlobEndpoint=ftp://host/a"],
)
def test_bad_connection_string(churn_training, churn_job, connection_string):
    body = churn_job()
    body["Inputs"]["input1"]["ConnectionString"] = connection_string
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "InvalidBlobConnectionString")


def test_no_inputs_and_unknown_input_name(churn_training, churn_job):
    body = churn_job()
    inputs = body.pop("Inputs")
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "BatchJobInputsNotSpecified")
    body["Inputs"] = {"input2": inputs["input1"]}
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "InvalidInputNames")


def test_missing_output_override(churn_training, churn_job):
    body = churn_job()
    del body["Outputs"]["output2"]
    assert error_codes(churn_training.submit(body)) == (400, "BadArgument", "MissingOutputOverrideSpecification")


def test_unknown_job_and_service(emulator, churn_training):
    missing = requests.get(
        f"{churn_training.base}/jobs/{'0' * 32}?api-version=2.0", headers=churn_training.headers(), timeout=30
    )
    assert error_codes(missing) == (404, "NotFound", "JobNotFound")
    workspace = emulator.workspace["id"]
    unknown = requests.get(
        f"{emulator.url}/workspaces/{workspace}/services/{'1' * 32}/jobs/x?api-version=2.0", timeout=30
    )
    assert error_codes(unknown) == (404, "NotFound", "WebServiceIdNotFoundInWorkspace")


def test_jobs_of_one_service_are_invisible_to_another(emulator, churn_training, churn_job):
    from support.emulator import DataPlane

    job_id = churn_training.submit_ok(churn_job())
    scoring_default = emulator.classic_endpoint("predictive")
    other = DataPlane(scoring_default["api_location"], scoring_default["primary_key"])
    response = requests.get(f"{other.base}/jobs/{job_id}?api-version=2.0", headers=other.headers(), timeout=30)
    assert error_codes(response) == (404, "NotFound", "JobNotFound")
