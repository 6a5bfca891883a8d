"""Parse DAG files the way the DAG processor's child does, and report time and modules per parse.

``python -m devtools.bench.parse_probe SPEC``, SPEC being JSON ``{"files": [{"name", "path",
"bundle_path"}], "rounds": N, "out": PATH}``, writes JSON samples to PATH (Airflow logs to stdout).
Like the DAG processor manager, this process imports the manager, loads the plugins (as the
manager's job does when it starts) and pre-imports the Airflow modules each file names, once; each
parse then runs in a forked child (``BundleDagBag`` of the file, then serialisation of its DAGs),
which counts the modules it had to import itself: what every re-parse of the file costs again.

After the timed rounds, one more child per file parses it under ``cProfile`` and counts the function
calls (Python and built-in) of the parse: the work of a parse in a figure that does not depend on the
machine's speed or load, which the smoke run's regression limits check. Every sample of the file
carries it as ``calls``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def parse_in_child(path: str, bundle_path: str, log: Any, *, count_calls: bool = False) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.dag_processing.processor import _serialize_dags

    profile = None
    if count_calls:  # imported only then: a timed child does not pay for it
        import cProfile

        profile = cProfile.Profile()
    before = set(sys.modules)
    with profile or contextlib.nullcontext():  # a Profile records while its block runs
        started = time.perf_counter()
        bag = BundleDagBag(
            dag_folder=path, bundle_path=Path(bundle_path), bundle_name="dags-folder", load_op_links=False
        )
        parsed = time.perf_counter()
        serialized, errors = _serialize_dags(bag, log)
        done = time.perf_counter()
    new = sorted(set(sys.modules) - before)
    return {
        "calls": sum(entry.callcount for entry in profile.getstats()) if profile is not None else None,
        "shape": [dag_shape(dag) for dag in bag.dags.values()],
        "parse_seconds": parsed - started,
        "serialize_seconds": done - parsed,
        "seconds": done - started,
        "dags": len(serialized),
        "tasks": sum(len(dag.tasks) for dag in bag.dags.values()),
        "errors": sorted({**bag.import_errors, **errors}),
        "modules": len(new),
        "module_names": new,
        "package_file": getattr(sys.modules.get("azureml_retrain"), "__file__", None),
    }


def dag_shape(dag: Any) -> dict[str, Any]:
    """What a same-shape baseline needs of a DAG: its tasks and the edges between them (``upstream``:
    for each task, the positions of its upstream tasks), its trigger-form params, and what the DAG
    itself declares (schedule, start date, tags, docs, default arguments), so that the baseline
    differs in what its tasks are only."""
    from airflow.sdk.definitions._internal.types import is_arg_set

    position = {task.task_id: index for index, task in enumerate(dag.tasks)}
    params = {}
    for name, param in dag.params.items():
        params[name] = {
            "default": param.value if is_arg_set(param.value) else None,
            "description": param.description,
            "schema": param.schema,
        }
    timetable = dag.timetable
    cron = getattr(timetable, "expression", None)  # the SDK's cron timetables
    defaults = dag.default_args or {}
    return {
        "dag_id": dag.dag_id,
        "tasks": len(dag.tasks),
        "upstream": [sorted(position[u] for u in task.upstream_task_ids) for task in dag.tasks],
        "params": params,
        "cron": {"expression": cron, "timezone": str(timetable.timezone)} if cron else None,
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "catchup": bool(dag.catchup),
        "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags or []),
        "doc_md": dag.doc_md,
        "description": dag.description,
        "default_args": {
            "owner": defaults.get("owner", "airflow"),
            "retries": defaults.get("retries", 0),
            "retry_delay_seconds": defaults["retry_delay"].total_seconds() if "retry_delay" in defaults else 300,
            "retry_exponential_backoff": bool(defaults.get("retry_exponential_backoff", False)),
        },
    }


def forked_sample(path: str, bundle_path: str, log: Any, *, count_calls: bool = False) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: parse, report, leave without running any exit handler of the parent
        os.close(read_end)
        try:
            payload = json.dumps(parse_in_child(path, bundle_path, log, count_calls=count_calls)).encode()
        except BaseException as error:
            payload = json.dumps({"failure": repr(error)}).encode()
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    sample = dict(json.loads(data))
    sample["process_seconds"] = time.perf_counter() - started
    return sample


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    import structlog
    from airflow.dag_processing import manager  # noqa: F401  (what the manager process has imported)
    from airflow.dag_processing.processor import _pre_import_airflow_modules
    from airflow.listeners.listener import get_listener_manager

    log = structlog.get_logger("parse_probe")
    get_listener_manager()  # what a job does as it starts (airflow.jobs.job.Job): the plugins load
    for item in spec["files"]:
        _pre_import_airflow_modules(item["path"], log)
    samples: dict[str, list[dict[str, Any]]] = {item["name"]: [] for item in spec["files"]}
    for _ in range(int(spec["rounds"])):
        # Interleaved, so that load on the machine hits every file alike.
        for item in spec["files"]:
            samples[item["name"]].append(forked_sample(item["path"], item["bundle_path"], log))
    for item in spec["files"]:
        counted = forked_sample(item["path"], item["bundle_path"], log, count_calls=True)
        if "failure" in counted:  # reported as the file's failure, as a timed parse's would be
            samples[item["name"]] = [counted]
            continue
        for sample in samples[item["name"]]:
            sample["calls"] = counted["calls"]
    Path(spec["out"]).write_text(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
