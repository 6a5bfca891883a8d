"""``python -m devtools.bench``: run the benchmarks, print the table, write the raw numbers."""

from __future__ import annotations

import argparse
import compileall
import importlib
import json
import os
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from devtools.bench.core import DATABASES, Bench, Measurement, cpu_reference_seconds, machine, render_table
from devtools.services import ROOT

# In table order (the numbering).
MEASUREMENTS = (
    "parse_cost",
    "worker_slots",
    "loop_latency",
    "sensor_listing",
    "status_calls",
    "scale",
    "models",
    "backfill",
)
# Those that need no Airflow scheduler: the smoke run, seconds each (scale's and worker_slots' smoke parts
# run in process).
SMOKE = ("parse_cost", "worker_slots", "sensor_listing", "status_calls", "scale", "models")
# Those that run on an Airflow, so once per database; models starts an Airflow of its own.
ON_AIRFLOW = frozenset({"worker_slots", "loop_latency", "scale", "models", "backfill"})
ON_AIRFLOW_IN_SMOKE = ON_AIRFLOW - {"worker_slots", "scale", "models"}  # their smoke parts run in process
NEEDS_CLUSTER = ON_AIRFLOW - {"models"}
# --database: one of DATABASES, or all of them in turn (the measurements without Airflow run once).
DATABASE_CHOICES = (*DATABASES, "both")


def on_airflow(smoke: bool) -> frozenset[str]:
    return ON_AIRFLOW_IN_SMOKE if smoke else ON_AIRFLOW


def measure(bench: Bench, names: list[str]) -> list[Measurement]:
    """Run the named measurements in table order; one that fails is recorded with its error."""
    modules = {name: importlib.import_module(f"devtools.bench.{name}") for name in names}
    measurements: list[Measurement] = []
    try:
        bench.start_services()
        for module in modules.values():
            prepare = getattr(module, "prepare", None)
            if prepare is not None:
                prepare(bench)
        if (NEEDS_CLUSTER & on_airflow(bench.smoke)).intersection(names):
            bench.cluster  # noqa: B018  (start it now, so its start-up is not billed to one measurement)
        for name, module in modules.items():
            database = bench.database if name in on_airflow(bench.smoke) else None
            print(
                f"[{MEASUREMENTS.index(name) + 1}] {module.TITLE}" + (f" on {DATABASES[database]}" if database else "")
            )
            began = time.monotonic()
            load = os.getloadavg()[0]
            try:
                measurement = module.run(bench)
            except Exception as error:
                measurement = Measurement(name, module.TITLE, error=f"{error!r}\n{traceback.format_exc()}")
                print(f"  error: {error!r}")
            measurement.seconds = time.monotonic() - began
            measurement.database = database
            measurement.load_average = [round(load, 2), round(os.getloadavg()[0], 2)]
            print(f"  done in {measurement.seconds:.0f}s (load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
            measurements.append(measurement)
    finally:
        bench.stop()
    return measurements


def table_order(measurements: list[Measurement]) -> list[Measurement]:
    """By number, and each number's databases in the order of DATABASES (none first)."""
    databases = list(DATABASES)
    return sorted(
        measurements,
        key=lambda m: (MEASUREMENTS.index(m.key), -1 if m.database is None else databases.index(m.database)),
    )


def report(
    measurements: list[Measurement],
    out: Path,
    *,
    smoke: bool,
    database: str,
    wall: float,
    load: tuple[float, ...],
    cpu: float,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    host = machine((load[0], load[1], load[2]), cpu)
    measurements = table_order(measurements)
    document = {
        "mode": "smoke" if smoke else "full",
        "database": database,
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_seconds": round(wall, 1),
        "passed": all(m.passed for m in measurements),
        "machine": host,
        "measurements": {m.id: m.to_json() for m in measurements},
    }
    out.write_text(json.dumps(document, indent=2))
    print()
    print(render_table(measurements, numbers={name: MEASUREMENTS.index(name) + 1 for name in MEASUREMENTS}))
    for m in measurements:
        on = f" {m.database_label}" if m.database else ""
        for note in m.notes:
            print(f"  [{MEASUREMENTS.index(m.key) + 1}{on}] {note}")
    verdict = "all targets met" if document["passed"] else "targets missed (FAIL rows)"
    loads = f"{load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    cpus = (
        f"{host['cpu_reference_seconds_at_start']:.2f} s at start, {host['cpu_reference_seconds_at_end']:.2f} s at end"
    )
    print(f"\nbench: {wall:.0f}s in all (load average {loads}; CPU reference {cpus}); raw numbers in {out}; {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="the reduced, quick set that CI runs")
    parser.add_argument("--out", type=Path, help="JSON file for the raw numbers")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, help="run only these measurements")
    parser.add_argument(
        "--database",
        choices=DATABASE_CHOICES,
        default="sqlite",
        help="Airflow's metadata database for the measurements that run on Airflow (2, 3, 6, 7, 8); "
        "both: SQLite, then PostgreSQL (default: sqlite)",
    )
    parser.add_argument(
        "--airflow-only",
        action="store_true",
        help="only the measurements that run on Airflow (2, 3, 6, 7, 8; in the smoke set: those that start it)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="scratch folder (default: a new temp dir); on PostgreSQL as root, the folders above it must be "
        "open to the postgres user",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, Airflow home)")
    args = parser.parse_args(argv)
    names = [n for n in MEASUREMENTS if n in (args.only or (SMOKE if args.smoke else MEASUREMENTS))]
    if args.airflow_only:
        names = [n for n in names if n in on_airflow(args.smoke)]
    out = args.out or ROOT / "test-artifacts" / ("bench-smoke.json" if args.smoke else "bench.json")

    started = time.monotonic()
    load = os.getloadavg()
    cpu = cpu_reference_seconds()
    # Every parse and every task start imports the DAG files and the package again. The venv's own
    # packages are installed compiled; without this, ours would be compiled from source each time
    # wherever the environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE).
    for folder in ("plugins/azureml_retrain", "dags", "devtools/bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    databases = list(DATABASES) if args.database == "both" else [args.database]
    measurements: list[Measurement] = []
    for position, database in enumerate(databases):
        # After the first database, only what runs on Airflow: the others do not depend on it.
        here = names if position == 0 else [n for n in names if n in on_airflow(args.smoke)]
        if not here:
            continue
        work_dir = args.work_dir / database if args.work_dir and len(databases) > 1 else args.work_dir
        bench = Bench(smoke=args.smoke, work_dir=work_dir, database=database)
        bench.configure_process()
        run_kind = "smoke" if args.smoke else "full"
        print(f"bench: {run_kind} run of {', '.join(here)} on {DATABASES[database]}; scratch in {bench.work}")
        done = measure(bench, here)
        measurements += done
        errors = [m.key for m in done if m.error]
        if errors or args.keep:
            kept = f"errors in {', '.join(errors)}; logs in" if errors else "kept"
            print(f"bench: {kept} {bench.work}")
        elif work_dir is None:
            shutil.rmtree(bench.work, ignore_errors=True)
    wall = time.monotonic() - started
    report(measurements, out, smoke=args.smoke, database=args.database, wall=wall, load=load, cpu=cpu)

    errors = [m.id for m in measurements if m.error]
    # The smoke run is a gate; the full run is a measurement whose FAIL rows are its findings.
    return 1 if errors or (args.smoke and not all(m.passed for m in measurements)) else 0


if __name__ == "__main__":
    sys.exit(main())
