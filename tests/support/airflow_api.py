"""Airflow's own API server app in the test's process, logged in as an admin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ADMIN_PASSWORD = "api-test"


def api_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ``TestClient`` of Airflow's API server app (``create_app(apps="core")``: the REST API, the
    UI's routes and the plugins from plugins/) with an admin's bearer token. The app reads the
    configuration when it is built: set what it should see (``AIRFLOW__CORE__DAGS_FOLDER``, ...) first.
    Runs it triggers stay queued: no scheduler runs them."""
    from fastapi.testclient import TestClient

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": ADMIN_PASSWORD}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "a-test-secret-long-enough-for-hs512-" * 2)
    from airflow.api_fastapi.app import create_app

    client = TestClient(create_app(apps="core"))
    response = client.post("/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return client
