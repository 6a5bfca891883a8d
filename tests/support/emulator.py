"""Helpers for the emulator tests: start an emulator process, talk BES/RRS to a service."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from devtools.services import emulator_service, free_port


@dataclass
class RunningEmulator:
    url: str
    tls_url: str
    log_path: Path
    pid: int
    state: dict[str, Any]

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.url}/_emulator/{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response

    @property
    def cert_path(self) -> str:
        return str(self.state["cert_path"])

    # Seeded resources, by role.
    @property
    def workspace(self) -> dict[str, Any]:
        return dict(self.state["workspaces"][0])

    def classic_service(self, kind: str) -> dict[str, Any]:
        return next(s for s in self.workspace["web_services"] if s["kind"] == kind)

    def classic_endpoint(self, kind: str, name: str = "default") -> dict[str, Any]:
        return next(e for e in self.classic_service(kind)["endpoints"] if e["name"] == name)

    def arm_service(self, kind: str) -> dict[str, Any]:
        return next(s for s in self.state["arm_web_services"] if s["kind"] == kind)

    @property
    def principal(self) -> tuple[str, str, str]:
        tenant = self.state["tenants"][0]
        principal = tenant["service_principals"][0]
        return tenant["id"], principal["client_id"], principal["client_secret"]

    def credential(self) -> Any:
        """azure-identity's ClientSecretCredential for the seeded service principal, from the emulator's
        token authority (its TLS listener, trusting its certificate)."""
        from azure.identity import ClientSecretCredential

        tenant, client_id, secret = self.principal
        return ClientSecretCredential(
            tenant,
            client_id,
            secret,
            authority=self.tls_url,
            disable_instance_discovery=True,
            connection_verify=self.cert_path,
        )


def start_emulator(
    log_path: Path,
    data_dir: Path | None = None,
    *,
    port: int | None = None,
    tls_port: int | None = None,
    in_memory: bool = False,
) -> RunningEmulator:
    port, tls_port = port or free_port(), tls_port or free_port()
    process = emulator_service(port, tls_port, data_dir, in_memory=in_memory).start(log_path)
    url = f"http://127.0.0.1:{port}"
    state = requests.get(f"{url}/_emulator/state", timeout=30).json()
    return RunningEmulator(url, f"https://127.0.0.1:{tls_port}", log_path, process.pid, state)


class DataPlane:
    """BES/RRS calls against one service id, with its key."""

    def __init__(self, api_location: str, key: str) -> None:
        self.base = api_location
        self.key = key

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def submit(self, body: Any, **kwargs: Any) -> requests.Response:
        return requests.post(
            f"{self.base}/jobs?api-version=2.0", json=body, headers=self.headers(), timeout=30, **kwargs
        )

    def submit_ok(self, body: Any) -> str:
        response = self.submit(body)
        assert response.status_code == 200, response.text
        job_id = response.json()
        assert isinstance(job_id, str)
        return job_id

    def start(self, job_id: str) -> requests.Response:
        return requests.post(f"{self.base}/jobs/{job_id}/start?api-version=2.0", headers=self.headers(), timeout=30)

    def status(self, job_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.base}/jobs/{job_id}?api-version=2.0", headers=self.headers(), timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def delete(self, job_id: str) -> requests.Response:
        return requests.delete(f"{self.base}/jobs/{job_id}?api-version=2.0", headers=self.headers(), timeout=30)

    def wait(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status["StatusCode"] in ("Finished", "Failed", "Cancelled"):
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {status['StatusCode']} after {timeout}s")

    def run(self, body: Any, timeout: float = 30.0) -> dict[str, Any]:
        job_id = self.submit_ok(body)
        assert self.start(job_id).status_code == 200
        return self.wait(job_id, timeout)

    def execute(self, body: Any, query: str = "details=true", key: str | None = None) -> requests.Response:
        return requests.post(
            f"{self.base}/execute?api-version=2.0&{query}", json=body, headers=self.headers(key), timeout=30
        )


def connection_reference(connection_string: str, relative: str) -> dict[str, str]:
    return {"ConnectionString": connection_string, "RelativeLocation": relative}


CHURN_COLUMNS = ["Tenure", "MonthlyCharges", "SupportCalls", "ContractMonths", "Age"]
CHURN_ROWS = [["3", "110", "4", "1", "30"], ["60", "30", "0", "24", "50"], ["12", "75.5", "2", "12", "41"]]
ENERGY_COLUMNS = ["RelativeCompactness", "SurfaceArea", "WallArea", "RoofArea", "OverallHeight", "GlazingArea"]
ENERGY_ROWS = [["0.7", "600", "300", "150", "7", "0.3"], ["0.9", "550", "280", "120", "3.5", "0.1"]]


def table_request(columns: list[str], rows: list[list[str]]) -> dict[str, Any]:
    return {"Inputs": {"input1": {"ColumnNames": columns, "Values": rows}}, "GlobalParameters": {}}


def error_codes(response: requests.Response) -> tuple[int, str, str]:
    """(status, class code, specific code) of a Studio error envelope."""
    error = response.json()["error"]
    return response.status_code, error["code"], error["details"][0]["code"]
