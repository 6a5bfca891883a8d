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


def test_a_job_held_until_its_status_is_read(emulator, churn_training, churn_job):
    """``hang`` with ``status_reads``: Running for its first N status reads, however long they take,
    then it trains and ends as usual. Admin views and faulted requests are not reads."""
    emulator.admin("POST", "faults/jobs", json={"outcome": "hang", "status_reads": 2, "count": 1})
    held = churn_training.submit_ok(churn_job(rows=200))
    assert churn_training.start(held).status_code == 200
    assert not any(fault["remaining"] for fault in emulator.admin("GET", "faults").json()["jobs"])  # taken
    assert churn_training.status(held)["StatusCode"] == "Running"
    emulator.admin(
        "POST", "faults", json={"route": "bes.status", "count": 1, "action": {"kind": "status", "status": 503}}
    )
    unavailable = requests.get(
        f"{churn_training.base}/jobs/{held}?api-version=2.0", headers=churn_training.headers(), timeout=30
    )
    assert unavailable.status_code == 503
    # The same job without the fault, started later, trains and ends while the held one waits.
    assert churn_training.run(churn_job(rows=200, tag="free"), timeout=120)["StatusCode"] == "Finished"
    assert emulator.admin("GET", f"state/jobs/{held}").json()["status"] == "Running"
    assert churn_training.status(held)["StatusCode"] == "Running"  # the second read, which releases it
    assert churn_training.wait(held, timeout=120)["StatusCode"] == "Finished"


def test_a_job_held_until_read_can_be_cancelled_and_the_option_is_for_hang_only(emulator, churn_training, churn_job):
    refused = requests.post(
        f"{emulator.url}/_emulator/faults/jobs", json={"outcome": "fail", "status_reads": 1}, timeout=30
    )
    assert refused.status_code == 400
    emulator.admin("POST", "faults/jobs", json={"outcome": "hang", "status_reads": 5})
    job_id = churn_training.submit_ok(churn_job(rows=200))
    assert churn_training.start(job_id).status_code == 200
    assert churn_training.status(job_id)["StatusCode"] == "Running"
    assert churn_training.delete(job_id).status_code == 200
    assert churn_training.status(job_id)["StatusCode"] == "Cancelled"


def test_a_hung_job_goes_on_when_released(emulator, churn_training, churn_job):
    emulator.admin("POST", "faults/jobs", json={"outcome": "hang", "count": 1})
    job_id = churn_training.submit_ok(churn_job(rows=200))
    not_started = emulator.admin("POST", f"jobs/{job_id}/release").json()
    assert not_started == {"id": job_id, "status": "NotStarted"}  # nothing to release yet
    assert churn_training.start(job_id).status_code == 200
    assert not any(fault["remaining"] for fault in emulator.admin("GET", "faults").json()["jobs"])  # taken
    for _ in range(3):
        assert churn_training.status(job_id)["StatusCode"] == "Running"
    assert emulator.admin("POST", f"jobs/{job_id}/release").json() == {"id": job_id, "status": "Running"}
    assert churn_training.wait(job_id, timeout=120)["StatusCode"] == "Finished"
    unknown = requests.post(f"{emulator.url}/_emulator/jobs/{'0' * 32}/release", timeout=30)
    assert unknown.status_code == 404
