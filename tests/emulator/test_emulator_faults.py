"""Fault injection and the request log, through real HTTP."""

from __future__ import annotations

import pytest
import requests

from support.emulator import CHURN_COLUMNS, CHURN_ROWS, table_request


def test_status_sequence_with_retry_after(emulator, churn_scoring):
    body = table_request(CHURN_COLUMNS, CHURN_ROWS)
    emulator.admin(
        "POST",
        "faults",
        json={
            "route": "rrs.execute",
            "sequence": [
                {"kind": "status", "status": 429, "retry_after_seconds": 2},
                None,
                {"kind": "status", "status": 503},
                {"kind": "status", "status": 500},
            ],
        },
    )
    throttled = churn_scoring.execute(body)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error"]["details"][0]["code"] == "TooManyRequests"
    assert churn_scoring.execute(body).status_code == 200
    unavailable = churn_scoring.execute(body)
    assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (503, "ServiceUnavailable")
    assert churn_scoring.execute(body).status_code == 500
    assert churn_scoring.execute(body).status_code == 200  # sequence used up


def test_delay_triggers_a_client_read_timeout(emulator, churn_training):
    emulator.admin(
        "POST", "faults", json={"route": "bes.status", "count": 1, "action": {"kind": "delay", "delay_seconds": 2}}
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            f"{churn_training.base}/jobs/{'0' * 32}?api-version=2.0", headers=churn_training.headers(), timeout=0.5
        )


def test_dropped_connection(emulator, churn_training):
    emulator.admin("POST", "faults", json={"route": "bes.submit", "count": 1, "action": {"kind": "drop"}})
    with pytest.raises(requests.exceptions.ConnectionError):
        churn_training.submit({})
    assert churn_training.submit({}).status_code == 400  # served normally again


def test_malformed_body(emulator, churn_scoring):
    emulator.admin(
        "POST",
        "faults",
        json={"method": "POST", "path": r"/workspaces/.*/execute", "count": 1, "action": {"kind": "malformed"}},
    )
    response = churn_scoring.execute(table_request(CHURN_COLUMNS, CHURN_ROWS))
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()


def test_rate_is_deterministic_by_seed(emulator, churn_scoring):
    body = table_request(CHURN_COLUMNS, CHURN_ROWS)
    rule = {"route": "rrs.execute", "rate": 0.5, "seed": 3, "action": {"kind": "status", "status": 503}}
    emulator.admin("POST", "faults", json=rule)
    first = [churn_scoring.execute(body).status_code for _ in range(12)]
    emulator.admin("DELETE", "faults")
    emulator.admin("POST", "faults", json=rule)
    second = [churn_scoring.execute(body).status_code for _ in range(12)]
    assert first == second
    assert {200, 503} == set(first)


def test_arm_and_authority_faults_use_their_envelopes(emulator):
    tenant = emulator.principal[0]
    emulator.admin(
        "POST", "faults", json={"route": "authority.token", "count": 1, "action": {"kind": "status", "status": 503}}
    )
    response = requests.post(
        f"{emulator.tls_url}/{tenant}/oauth2/v2.0/token", data={}, verify=emulator.cert_path, timeout=30
    )
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"


def test_fault_api_validation_and_listing(emulator):
    bad = requests.post(f"{emulator.url}/_emulator/faults", json={"route": "x"}, timeout=30)
    assert bad.status_code == 400
    rule = emulator.admin("POST", "faults", json={"route": "bes.start", "action": {"kind": "drop"}}).json()
    assert emulator.admin("GET", "faults").json()["rules"][0]["id"] == rule["id"]
    emulator.admin("DELETE", f"faults/{rule['id']}")
    assert emulator.admin("GET", "faults").json()["rules"] == []


def test_request_log_counts_routes_without_secrets(emulator, churn_training, churn_job):
    emulator.admin("DELETE", "requests")
    body = churn_job()
    for _ in range(2):
        churn_training.submit(body)
    log = emulator.admin("GET", "requests", params={"route": "bes.submit"}).json()["requests"]
    assert len(log) == 2
    entry = log[0]
    assert set(entry) == {"route", "method", "path", "status", "time", "duration_ms"}
    assert (entry["method"], entry["status"]) == ("POST", 200)
    assert "?" not in entry["path"]
