"""The parse probe's call count: the work of a parse in a figure that does not depend on the machine's
speed, which the smoke run's regression limits check."""

from __future__ import annotations

import structlog

from devtools.bench.parse_probe import forked_sample

DAG_FILE = """\
import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(dag_id="probe_{tasks}", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    previous = None
    for index in range({tasks}):
        task = EmptyOperator(task_id=f"task_{{index}}")
        if previous is not None:
            previous >> task
        previous = task
"""


def write_dag(folder, tasks):
    path = folder / f"probe_{tasks}.py"
    path.write_text(DAG_FILE.format(tasks=tasks))
    return path


def test_the_call_count_is_the_same_for_the_same_parse_and_grows_with_the_work(tmp_path):
    log = structlog.get_logger("test_parse_probe")
    one, twenty = write_dag(tmp_path, 1), write_dag(tmp_path, 20)

    first = forked_sample(str(one), str(tmp_path), log, count_calls=True)
    again = forked_sample(str(one), str(tmp_path), log, count_calls=True)
    larger = forked_sample(str(twenty), str(tmp_path), log, count_calls=True)
    timed = forked_sample(str(one), str(tmp_path), log)

    assert "failure" not in first, first
    assert first["dags"] == 1 and larger["tasks"] == 20
    assert first["calls"] > 1000
    # Hash randomisation is fixed for the forks of one process: the same parse, the same count.
    assert abs(again["calls"] - first["calls"]) <= first["calls"] * 0.001
    # Nineteen more tasks to build, wire and serialise (about 900 calls each on 2026-12-08).
    assert larger["calls"] - first["calls"] > 19 * 500
    # A timed parse is not profiled.
    assert timed["calls"] is None
