"""1. DAG parse cost: each shipped DAG file against a one-task EmptyOperator DAG.

The DAG processor re-parses every file every ``min_file_process_interval`` in a child forked from
its manager: the child imports the file (with whatever the file pulls in that the manager has not
imported), builds its DAGs and serialises them. ``parse_probe`` does exactly that for each file,
interleaved over several rounds; the figure is the median time of that child's work and the number
of modules it had to import. In the full run the DAG processor of the bench cluster also parses
copies of the same files, and its own ``last_parse_duration`` (what the UI shows) is reported next
to the probe's figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from devtools.bench.core import DAG_TEMPLATES, Bench, Check, Measurement, fmt_seconds, median, run_python
from devtools.services import ROOT, python_path

TARGET_RATIO = 1.3
BASELINE = "bench_parse_baseline.py"
# The smoke run checks the function calls of a parse (counted, so the same on any machine under any
# load; the time ratios, reported beside them, moved by a third in busy test runs) against the
# EmptyOperator DAGs of the same shape where the file has several tasks, else against the one-task
# DAG: within the 1.3x target, or for the two files that miss the time target against one task
# (docs/performance.md) within a regression limit, about 10% over their counts of 2026-12-08 (1.31x
# and 1.07x against their same-shape files).
CALLS_LIMITS = {
    "example_handwritten_retraining.py": 1.45,
    "retraining_dags.py": 1.18,
}

TITLE = "DAG parse cost"


def shipped_dag_files() -> list[str]:
    """The shipped DAG files, relative to the DAGs folder."""
    return sorted(p.name for p in (ROOT / "dags").glob("*.py"))


SAME_SHAPE_TEMPLATE = """\
\"\"\"Same shape as {name}: its DAGs (schedule, start date, tags, docs, default arguments), tasks
and the edges between them, and trigger-form params, every task an EmptyOperator.\"\"\"

from __future__ import annotations

import json
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

SHAPE = json.loads({shape!r})

for spec in SHAPE:
    params = {{
        k: Param(v["default"], description=v["description"], schema=v["schema"]) for k, v in spec["params"].items()
    }}
    cron = spec.get("cron")
    defaults = spec.get("default_args") or {{}}
    with DAG(
        dag_id="same_shape_" + spec["dag_id"],
        schedule=CronDataIntervalTimetable(cron["expression"], timezone=cron["timezone"]) if cron else None,
        start_date=pendulum.parse(spec["start_date"]) if spec.get("start_date") else pendulum.datetime(2026, 1, 1),
        catchup=spec.get("catchup", False),
        max_active_runs=spec.get("max_active_runs") or 16,
        tags=spec.get("tags") or [],
        doc_md=spec.get("doc_md"),
        description=spec.get("description"),
        default_args={{
            "owner": defaults.get("owner", "airflow"),
            "retries": defaults.get("retries", 0),
            "retry_delay": timedelta(seconds=defaults.get("retry_delay_seconds", 300)),
            "retry_exponential_backoff": defaults.get("retry_exponential_backoff", False),
        }},
        params=params,
    ):
        tasks = [EmptyOperator(task_id=f"task_{{i}}") for i in range(spec["tasks"])]
        for task, upstream in zip(tasks, spec["upstream"], strict=True):
            task.set_upstream([tasks[i] for i in upstream])
"""


def same_shape_file(bench: Bench, name: str, shape: list[dict[str, Any]]) -> Path:
    """An EmptyOperator file with ``name``'s DAGs, their schedules, tasks, edges and trigger-form params."""
    folder = bench.work / "same-shape"
    folder.mkdir(exist_ok=True)
    path = folder / f"same_shape_{name.replace('/', '_')}"
    path.write_text(SAME_SHAPE_TEMPLATE.format(name=name, shape=json.dumps(shape)))
    return path


def probe(
    bench: Bench,
    rounds: int,
    extra: dict[str, Path] | None = None,
    *,
    plugins: Path | None = None,
    shipped: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Samples of each file's parse (the baseline's and the shipped files' too unless ``shipped`` is
    False), in a probe process importing the package from ``plugins`` (default: the project's)."""
    out = bench.work / "parse-probe.json"
    files = []
    if shipped:
        files.append({"name": BASELINE, "path": str(DAG_TEMPLATES / BASELINE), "bundle_path": str(DAG_TEMPLATES)})
        files += [
            {"name": name, "path": str(ROOT / "dags" / name), "bundle_path": str(ROOT / "dags")}
            for name in shipped_dag_files()
        ]
    files += [
        {"name": name, "path": str(path), "bundle_path": str(path.parent)} for name, path in (extra or {}).items()
    ]
    spec = {"files": files, "rounds": rounds, "out": str(out)}
    environment = bench.environment()
    package = (plugins or ROOT / "plugins") / "azureml_retrain" / "__init__.py"
    if plugins is not None:
        environment = {
            **environment,
            "PYTHONPATH": python_path(plugins, ROOT),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        }
    run_python(
        f"import sys; from devtools.bench.parse_probe import main; sys.exit(main([{json.dumps(json.dumps(spec))}]))",
        environment,
    )
    samples: dict[str, list[dict[str, Any]]] = json.loads(out.read_text())
    failures = {name: s[0] for name, s in samples.items() if s and "failure" in s[0]}
    if failures:
        raise RuntimeError(f"parsing failed: {failures}")
    errors = {name: s[0]["errors"] for name, s in samples.items() if s[0]["errors"]}
    if errors:
        raise RuntimeError(f"import errors while parsing: {errors}")
    imported = {s[0]["package_file"] for s in samples.values()} - {None}
    if imported and imported != {str(package)}:
        raise RuntimeError(f"the probe imported the package from {imported}, not {package}")
    return samples


def processor_samples(bench: Bench, files: list[str], wanted: int, timeout: float = 240.0) -> dict[str, list[float]]:
    """``last_parse_duration`` of each file, one sample per re-parse, from the running DAG processor."""
    cluster = bench.cluster
    seen: dict[str, dict[str, float]] = {name: {} for name in files}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for dag in cluster.api("GET", "dags", params={"limit": 1000})["dags"]:
            name = str(dag.get("relative_fileloc") or dag.get("fileloc", ""))
            if name in seen and dag.get("last_parse_duration") is not None and dag.get("last_parsed_time"):
                seen[name][str(dag["last_parsed_time"])] = float(dag["last_parse_duration"])
        if all(len(values) >= wanted for values in seen.values()):
            break
        time.sleep(1)
    # A file's DAGs share one parse: keep one sample per distinct parse duration.
    return {name: sorted(set(values.values())) for name, values in seen.items()}


def best_time_ratio(ours: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float:
    """Best time of the file over best time of the baseline, over rounds that interleave them.

    The best of several rounds, as ``timeit`` takes it: load from other processes only ever adds
    time, so a median of per-round ratios still moves with it (1.05x-1.33x for the same file).
    """
    return float(min(o[key] for o in ours)) / float(min(b[key] for b in base))


# "Today" for the layout's cost: the last commit with the layout issue 16 replaced, one DAG file that
# built every config and failed as a whole on any broken one (its own code, its own configs' format).
TODAY_COMMIT = "b874ff7"
TODAY_DAG_FILE = "retraining_dags.py"
# The alternative that was measured and rejected: one DAG file per config (robust to any failure of a
# config, but every file pays Airflow's fork and the package's imports again: about 2x the CPU).
DAG_FILE_PER_CONFIG = """\
\"\"\"Airflow DAG of the config named like this file.\"\"\"
from pathlib import Path

import airflow.providers.common.io.assets.file
import airflow.providers.standard.decorators.branch_python
import airflow.providers.standard.decorators.python  # noqa: F401

from azureml_retrain.config import load_config
from azureml_retrain.factory import build_dag

dag = build_dag(load_config(Path(__file__).with_suffix(".yaml")))
"""
ROLLBACK_FILE_PER_CONFIG = """\
\"\"\"Airflow DAG: the rollback DAG over every valid config.\"\"\"
from pathlib import Path

import airflow.providers.common.io.assets.file
import airflow.providers.standard.decorators.branch_python
import airflow.providers.standard.decorators.python  # noqa: F401

from azureml_retrain.config import scan_configs
from azureml_retrain.factory import build_rollback_dag

dag = build_rollback_dag(list(scan_configs(Path(__file__).parent / "retraining").configs))
"""
SHIPPED_LAYOUT = ("retraining_dags.py", "retraining_config_errors.py")
LAYOUT_SIZES = (2, 10)


def today_tree(bench: Bench) -> Path | None:
    """The plugins and DAG file of ``TODAY_COMMIT`` (None without the repository's history)."""
    import io
    import shutil
    import subprocess
    import tarfile

    tree = bench.work / f"today-{TODAY_COMMIT}"
    git = shutil.which("git")
    if not (tree / "plugins").is_dir():
        if git is None:
            return None
        archive = subprocess.run(
            [git, "archive", TODAY_COMMIT, "plugins", f"dags/{TODAY_DAG_FILE}", "dags/retraining"],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            return None
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as files:
            files.extractall(tree, filter="data")
    return tree


def layout_files(folder: Path, models: int, today: Path | None) -> dict[str, dict[str, Path]]:
    """``models`` copies of the churn config under ``folder``, laid out three ways: today's (one file,
    its own code), the shipped one and a DAG file per config. Model names differ by layout, so that
    all sit in one DAGs folder; start dates lie ahead, so nothing is scheduled.
    {layout: {file name relative to ``folder``: path}}."""
    import yaml

    sources = {"today": today, "shipped": ROOT, "per-config": ROOT}
    layouts: dict[str, dict[str, Path]] = {}
    for layout, source in sources.items():
        if source is None:
            continue
        root = folder / f"{layout.replace('-', '_')}{models}"
        (root / "retraining").mkdir(parents=True, exist_ok=True)
        churn = yaml.safe_load((source / "dags" / "retraining" / "churn.yaml").read_text())
        for index in range(models):
            model = f"{root.name}_{index:03d}"
            config = {**churn, "model": model, "start_date": "2099-01-01T00:00:00Z"}
            config["targets"] = [{**t, "name": f"{model}-{t['name']}"} for t in churn["targets"]]
            (root / "retraining" / f"{model}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            if layout == "per-config":
                (root / "retraining" / f"{model}.py").write_text(DAG_FILE_PER_CONFIG)
        if layout == "per-config":
            (root / "rollback.py").write_text(ROLLBACK_FILE_PER_CONFIG)
        else:
            for name in [TODAY_DAG_FILE] if layout == "today" else SHIPPED_LAYOUT:
                (root / name).write_text((source / "dags" / name).read_text())
        files = {f"{root.name}/{p.relative_to(root)}": p for p in sorted(root.rglob("*.py"))}
        layouts[layout] = files
    return layouts


def files_count(count: float) -> str:
    return f"{count:.0f} file{'s' * (count != 1)}"


def layout_checks(bench: Bench, rounds: int, notes: list[str]) -> list[Check]:
    """What the shipped layout costs against today's (before issue 16) and against a DAG file per
    config, for N models: the CPU of a full re-parse of the folder, the sum over its files of each
    file's forked child (best of ``rounds``); today's runs with its own code, in a probe of its own."""
    import shutil

    folder = bench.work / "layouts"
    today = today_tree(bench)
    checks = []
    try:
        for models in LAYOUT_SIZES:
            layouts = layout_files(folder, models, today)
            figures: dict[str, dict[str, float]] = {}
            for layout, files in layouts.items():
                plugins = today / "plugins" if layout == "today" and today else None
                samples = probe(bench, rounds, files, plugins=plugins, shipped=False)
                best = [min(sample["process_seconds"] for sample in samples[name]) for name in files]
                figures[layout] = {"cpu": sum(best), "longest": max(best), "files": len(files)}
            shipped = figures["shipped"]
            for other, label in (
                ("today", f"today's one file ({TODAY_COMMIT})"),
                ("per-config", "a DAG file per config"),
            ):
                if other not in figures:
                    notes.append(f"{models} models: no git history to build {label} from; not compared")
                    continue
                theirs = figures[other]
                checks.append(
                    Check(
                        case=f"{models} models: CPU of parsing them, the shipped layout vs {label}",
                        value=round(shipped["cpu"] / theirs["cpu"], 2),
                        unit="x",
                        target=1.0 if other == "today" else None,
                        ours=f"{fmt_seconds(shipped['cpu'])} ({files_count(shipped['files'])})",
                        baseline=f"{fmt_seconds(theirs['cpu'])} ({files_count(theirs['files'])})",
                        note=f"the longest single parse: {fmt_seconds(shipped['longest'])} vs "
                        f"{fmt_seconds(theirs['longest'])}",
                    )
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return checks


def run(bench: Bench) -> Measurement:
    m = Measurement("parse_cost", TITLE)
    rounds = 7 if bench.smoke else 9
    # A file of several DAGs cannot parse like one task: a baseline of the same shape (EmptyOperator
    # tasks, the same trigger form) shows what the project's operators add to Airflow's own cost.
    shapes = probe(bench, 1)
    extra = {
        f"same shape as {name}": same_shape_file(bench, name, shapes[name][0]["shape"])
        for name in shipped_dag_files()
        if shapes[name][0]["tasks"] > 1
    }
    samples = probe(bench, rounds, extra)
    base = samples[BASELINE]
    base_seconds = median(s["process_seconds"] for s in base)
    base_modules = median(s["modules"] for s in base)
    m.raw["probe"] = {
        name: {
            "process_seconds": [round(s["process_seconds"], 4) for s in values],
            "parse_seconds": [round(s["parse_seconds"], 4) for s in values],
            "serialize_seconds": [round(s["serialize_seconds"], 4) for s in values],
            "dags": values[0]["dags"],
            "tasks": values[0]["tasks"],
            "modules": values[0]["modules"],
            "module_names": values[0]["module_names"],
        }
        for name, values in samples.items()
    }

    for name in shipped_dag_files():
        values = samples[name]
        dags, tasks = values[0]["dags"], values[0]["tasks"]
        info = f"{dags} DAG{'s' * (dags != 1)}, {tasks} task{'s' * (tasks != 1)}"
        m.checks.append(
            Check(
                case=f"{name} parse time ({info})",
                value=round(best_time_ratio(values, base, "process_seconds"), 2),
                unit="x",
                target=None if bench.smoke else TARGET_RATIO,
                ours=fmt_seconds(median(s["process_seconds"] for s in values)),
                baseline=fmt_seconds(base_seconds),
                note="reported; the smoke run checks the calls" if bench.smoke else "",
            )
        )
        twin = samples.get(f"same shape as {name}")
        # Against what the file would be made of EmptyOperators where it has several tasks: against one
        # task, calls say little (the baseline's parse is mostly Airflow's fixed work, much of it C).
        counted = twin or base
        m.checks.append(
            Check(
                case=f"{name} function calls per parse vs "
                + ("EmptyOperator DAGs of the same shape" if twin else "the one-task DAG"),
                value=round(values[0]["calls"] / counted[0]["calls"], 2),
                unit="x",
                target=CALLS_LIMITS.get(name, TARGET_RATIO) if bench.smoke else None,
                ours=f"{values[0]['calls']:,}",
                baseline=f"{counted[0]['calls']:,}",
                note="regression limit" if bench.smoke and name in CALLS_LIMITS else "",
            )
        )
        if twin is not None:
            m.checks.append(
                Check(
                    case=f"{name} parse time vs EmptyOperator DAGs of the same shape",
                    value=round(best_time_ratio(values, twin, "process_seconds"), 2),
                    unit="x",
                    target=None,
                    ours=fmt_seconds(median(s["process_seconds"] for s in values)),
                    baseline=fmt_seconds(median(s["process_seconds"] for s in twin)),
                    note="what the project's operators add; the same trigger form on each retraining DAG",
                )
            )
        modules = median(s["modules"] for s in values)
        m.checks.append(
            Check(
                case=f"{name} modules imported per parse",
                value=round(modules / base_modules, 2),
                unit="x",
                target=TARGET_RATIO,
                ours=f"{modules:.0f}",
                baseline=f"{base_modules:.0f}",
            )
        )
    if not bench.smoke:
        m.checks.extend(layout_checks(bench, rounds=5, notes=m.notes))
        # The DAG processor reports a parse duration per DAG: a file that builds none has no figure.
        with_dags = [name for name in shipped_dag_files() if samples[name][0]["dags"]]
        found = processor_samples(bench, [BASELINE, *with_dags], wanted=4)
        m.raw["dag_processor_last_parse_duration"] = found
        base_processor = median(found[BASELINE])
        for name in with_dags:
            seconds = median(found[name])
            m.checks.append(
                Check(
                    case=f"{name} as the DAG processor reports it",
                    value=round(seconds / base_processor, 2),
                    unit="x",
                    target=None,
                    ours=fmt_seconds(seconds),
                    baseline=fmt_seconds(base_processor),
                    note=f"last_parse_duration, median of {len(found[name])}",
                )
            )
    m.notes.append(
        "parse time: a child forked from a process like the DAG processor manager imports, builds and serialises "
        f"the file's DAGs; best of {rounds} interleaved rounds of the file over the baseline's best. Modules: those "
        "the child had to import itself. Function calls: counted under cProfile in one more child per file."
    )
    return m
