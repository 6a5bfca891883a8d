"""The test clusters' REST client: a request that got no answer in time is sent again only where
that cannot do it twice (HTTP faked at the transport level: ``requests.request`` scripted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.cluster import AirflowCluster
from devtools.services import LocalPorts


class Scripted:
    """Answers ``requests.request`` from a script of responses or exceptions; records the calls."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.calls.append((method, url, kwargs.get("json")))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        status, body = step
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        return response


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AirflowCluster:
    ports = LocalPorts(azurite=1, emulator=2, emulator_tls=3, emulator_data_dir=tmp_path / "emulator")
    made = AirflowCluster(tmp_path / "home", ports)
    monkeypatch.setattr(made, "token", lambda: "token")
    return made


def test_a_trigger_without_an_answer_is_sent_again_with_the_same_run_id(cluster, monkeypatch):
    # The first POST created the run but its answer was lost; the second is refused as a duplicate.
    scripted = Scripted(requests.ReadTimeout("no answer"), (409, {"detail": "already exists"}))
    monkeypatch.setattr(requests, "request", scripted)
    run_id = cluster.trigger("retrain_churn", conf={"window": "w"})
    first, second = scripted.calls
    assert first[2]["dag_run_id"] == second[2]["dag_run_id"] == run_id
    assert run_id.startswith("manual__") and first[2]["conf"] == {"window": "w"}


def test_a_trigger_refused_at_once_is_an_error(cluster, monkeypatch):
    monkeypatch.setattr(requests, "request", Scripted((409, {"detail": "already exists"})))
    with pytest.raises(RuntimeError, match="409"):
        cluster.trigger("retrain_churn")


def test_a_post_other_than_a_trigger_is_not_sent_twice(cluster, monkeypatch):
    scripted = Scripted(requests.ReadTimeout("no answer"))
    monkeypatch.setattr(requests, "request", scripted)
    with pytest.raises(requests.Timeout):
        cluster.api("POST", "dags/retrain_churn/clearTaskInstances", json={})
    assert len(scripted.calls) == 1
