"""Triggers of one process share their hooks and storage clients: one connection read per connection
for all of them (a round trip to the triggerer's supervisor each), read again after a minute."""

from __future__ import annotations

import pytest

from azureml_retrain.triggers import shared
from azureml_retrain.triggers.bes_job import BesJobTrigger
from azureml_retrain.triggers.shared import SHARED_SECONDS, shared_client


def test_many_triggers_read_their_connection_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import BaseHook
    from airflow.sdk.definitions.connection import Connection

    reads: list[str] = []

    def get_connection(conn_id: str) -> Connection:
        reads.append(conn_id)
        return Connection(
            conn_id=conn_id,
            conn_type="azureml_web_service",
            host=f"https://ussouthcentral.services.azureml.net/workspaces/ws/services/{conn_id}",
            password="key-0123456789abcdef",
        )

    monkeypatch.setattr(BaseHook, "get_connection", staticmethod(get_connection))
    triggers = [BesJobTrigger(azureml_conn_id=f"svc{i % 2}", job_id=f"job{i}", end_time=0.0) for i in range(100)]
    locations = {trigger._hook().api_location for trigger in triggers}
    assert sorted(reads) == ["svc0", "svc1"]  # 100 before
    assert len(locations) == 2


def test_a_shared_client_is_built_again_after_a_while() -> None:
    now = [0.0]
    built: list[int] = []

    def build() -> int:
        built.append(len(built))
        return built[-1]

    assert shared_client("k", build, clock=lambda: now[0]) == 0
    now[0] = SHARED_SECONDS - 1
    assert shared_client("k", build, clock=lambda: now[0]) == 0
    assert shared_client("other", build, clock=lambda: now[0]) == 1
    now[0] = SHARED_SECONDS + 1
    assert shared_client("k", build, clock=lambda: now[0]) == 2  # a rotated key is read within a minute
    assert set(shared._clients) == {"k", "other"}
