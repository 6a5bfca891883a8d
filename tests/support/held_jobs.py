"""BES jobs on the emulator for the tests that run a real Airflow: which jobs a test created, where
they write, and releasing a job the emulator holds Running once a given process has looked at it."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from support.emulator import RunningEmulator
from support.retrain import jobs, requests_log
from support.waiting import wait_until


def reset_emulator(emulator: RunningEmulator) -> None:
    """No faults or knobs; the request log cleared (jobs of earlier runs stay)."""
    emulator.admin("DELETE", "faults")
    emulator.admin("DELETE", "requests")
    emulator.admin("PATCH", "settings", json={"job_min_duration_seconds": 0})


def upload_training_inputs(blob_service: Any, container_name: str, models: tuple[str, ...] = ("churn",)) -> None:
    """``<container>/input/<model>.csv`` for each model: what the test DAGs train on."""
    from emulator.datasets import generate_csv

    container = blob_service.get_container_client(container_name)
    if not container.exists():
        container.create_container()
    for model in models:
        data = generate_csv(model, rows=200, window=1, seed=4).encode()
        container.upload_blob(f"input/{model}.csv", data, overwrite=True)


def job_ids(emulator: RunningEmulator) -> set[str]:
    return {job["id"] for job in jobs(emulator)}


def new_jobs(emulator: RunningEmulator, known: set[str]) -> list[dict[str, Any]]:
    return [job for job in jobs(emulator) if job["id"] not in known]


def job_status(emulator: RunningEmulator, job_id: str) -> str:
    return str(next(job["status"] for job in jobs(emulator) if job["id"] == job_id))


def service_of(emulator: RunningEmulator, model: str) -> str:
    """The data-plane service id of the model's training web service (classic for churn, ARM else)."""
    if model == "churn":
        return str(emulator.classic_endpoint("training")["service_id"])
    return str(emulator.arm_service("training")["data_plane_id"])


def job_output(emulator: RunningEmulator, job_id: str, output: str = "output1") -> str:
    """The blob URL the job writes ``output`` to: which task submitted it (each task has its own)."""
    return str(emulator.admin("GET", f"state/jobs/{job_id}").json()["outputs"][output])


def jobs_per_output(emulator: RunningEmulator, job_ids: set[str] | list[str]) -> Counter[str]:
    """How many of these jobs write each first output: a task that submitted twice counts 2."""
    return Counter(job_output(emulator, job_id) for job_id in job_ids)


def requests_on_job_since(emulator: RunningEmulator, route: str, job_id: str, moment: datetime) -> list[datetime]:
    """When each ``route`` request on ``job_id`` that began after ``moment`` began (the service's clock)."""
    began = []
    for entry in requests_log(emulator, route):
        if entry["path"].endswith(f"/jobs/{job_id}"):
            start = datetime.fromisoformat(entry["time"]) - timedelta(milliseconds=entry["duration_ms"])
            if start > moment:
                began.append(start)
    return began


def release_once_read_since(emulator: RunningEmulator, job_id: str, moment: datetime, what: str) -> None:
    """Release a held job once its status has been read by a request that began after ``moment``
    (after a kill: by the process that took over, not by the one that died mid-request)."""
    wait_until(lambda: requests_on_job_since(emulator, "bes.status", job_id, moment), what, timeout=240)
    emulator.admin("POST", f"jobs/{job_id}/release")
