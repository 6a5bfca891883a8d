"""Airflow's "Test" button for our connection types: ``POST /api/v2/connections/test`` on Airflow's own
API server app (``[core] test_connection = Enabled``), against the emulator."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from support.airflow_api import api_client
from support.emulator import RunningEmulator

pytestmark = pytest.mark.integration

# The connections the test session points at the emulator (devtools.services.airflow_connections).
SEEDED = {
    "azureml_web_service": "azureml_churn_training",
    "azureml_classic_management": "azureml_classic_management_default",
    "azureml_resource_manager": "azureml_resource_manager_default",
}
WRONG = "wrong-key-0123456789abcdef"
REFUSED = {
    "azureml_web_service": ["HTTP 401", "ScoreRequestUnauthorized", "Password (the endpoint's API key)"],
    "azureml_classic_management": ["HTTP 401", "Password (the workspace authorization token"],
    "azureml_resource_manager": ["get Azure AD token failed", "AuthenticationFailed", "secret and tenant_id"],
}
ACCEPTED = {
    "azureml_web_service": "API key accepted by service workspaces/",
    "azureml_classic_management": "authorization token accepted for workspace ",
    "azureml_resource_manager": "token accepted for subscription ",
}


def seeded_connection(conn_type: str) -> dict[str, Any]:
    return dict(json.loads(os.environ[f"AIRFLOW_CONN_{SEEDED[conn_type].upper()}"]))


def request_body(conn_type: str, **changes: Any) -> dict[str, Any]:
    """The form's fields as the UI posts them, under an id no stored connection has."""
    seeded = {**seeded_connection(conn_type), **changes}
    body = {"connection_id": f"{conn_type}_under_test", "conn_type": conn_type}
    body |= {field: seeded[field] for field in ("host", "schema", "login", "password") if seeded.get(field)}
    if seeded.get("extra"):
        body["extra"] = json.dumps(seeded["extra"])
    return body


@pytest.fixture
def api(emulator: RunningEmulator, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    return api_client(tmp_path, monkeypatch)


@pytest.mark.parametrize("conn_type", SEEDED)
def test_a_working_connection_tests_true(api: Any, conn_type: str) -> None:
    response = api.post("/api/v2/connections/test", json=request_body(conn_type))

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] is True, result["message"]
    assert ACCEPTED[conn_type] in result["message"]


@pytest.mark.parametrize("conn_type", SEEDED)
def test_a_wrong_key_tests_false_with_a_clear_message(api: Any, conn_type: str) -> None:
    right = seeded_connection(conn_type)["password"]

    response = api.post("/api/v2/connections/test", json=request_body(conn_type, password=WRONG))

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] is False
    for part in REFUSED[conn_type]:
        assert part in result["message"], result["message"]
    assert WRONG not in result["message"] and right not in result["message"]


def test_testing_stays_off_unless_enabled(
    emulator: RunningEmulator, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__CORE__TEST_CONNECTION", raising=False)
    api = api_client(tmp_path, monkeypatch)

    response = api.post("/api/v2/connections/test", json=request_body("azureml_classic_management"))

    assert response.status_code == 403
