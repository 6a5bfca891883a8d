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

from devtools.bench.core import Bench, Measurement, cpu_reference_seconds, machine, render_table
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
NEEDS_CLUSTER = frozenset({"worker_slots", "loop_latency", "scale", "backfill"})  # models starts an Airflow of its own
NEEDS_CLUSTER_IN_SMOKE = NEEDS_CLUSTER - {"scale", "worker_slots"}


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
        if (NEEDS_CLUSTER_IN_SMOKE if bench.smoke else NEEDS_CLUSTER).intersection(names):
            bench.cluster  # noqa: B018  (start it now, so its start-up is not billed to one measurement)
        for name, module in modules.items():
            print(f"[{MEASUREMENTS.index(name) + 1}] {module.TITLE}")
            began = time.monotonic()
            try:
                measurement = module.run(bench)
            except Exception as error:
                measurement = Measurement(name, module.TITLE, error=f"{error!r}\n{traceback.format_exc()}")
                print(f"  error: {error!r}")
            measurement.seconds = time.monotonic() - began
            print(f"  done in {measurement.seconds:.0f}s")
            measurements.append(measurement)
    finally:
        bench.stop()
    return measurements


def report(
    measurements: list[Measurement], out: Path, *, smoke: bool, wall: float, load: tuple[float, ...], cpu: float
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    host = machine((load[0], load[1], load[2]), cpu)
    document = {
        "mode": "smoke" if smoke else "full",
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_seconds": round(wall, 1),
        "passed": all(m.passed for m in measurements),
        "machine": host,
        "measurements": {m.key: m.to_json() for m in measurements},
    }
    out.write_text(json.dumps(document, indent=2))
    print()
    print(render_table(measurements, numbers={name: MEASUREMENTS.index(name) + 1 for name in MEASUREMENTS}))
    for m in measurements:
        for note in m.notes:
            print(f"  [{MEASUREMENTS.index(m.key) + 1}] {note}")
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
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, Airflow home)")
    args = parser.parse_args(argv)
    names = [n for n in MEASUREMENTS if n in (args.only or (SMOKE if args.smoke else MEASUREMENTS))]
    out = args.out or ROOT / "test-artifacts" / ("bench-smoke.json" if args.smoke else "bench.json")

    started = time.monotonic()
    load = os.getloadavg()
    cpu = cpu_reference_seconds()
    # Every parse and every task start imports the DAG files and the package again. The venv's own
    # packages are installed compiled; without this, ours would be compiled from source each time
    # wherever the environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE).
    for folder in ("plugins/azureml_retrain", "dags", "devtools/bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    bench = Bench(smoke=args.smoke, work_dir=args.work_dir)
    bench.configure_process()
    print(f"bench: {'smoke' if args.smoke else 'full'} run of {', '.join(names)}; scratch in {bench.work}")
    measurements = measure(bench, names)
    report(measurements, out, smoke=args.smoke, wall=time.monotonic() - started, load=load, cpu=cpu)

    errors = [m.key for m in measurements if m.error]
    if errors or args.keep:
        print(f"bench: errors in {', '.join(errors)}; logs in {bench.work}" if errors else f"bench: kept {bench.work}")
    elif args.work_dir is None:
        shutil.rmtree(bench.work, ignore_errors=True)
    # The smoke run is a gate; the full run is a measurement whose FAIL rows are its findings.
    return 1 if errors or (args.smoke and not all(m.passed for m in measurements)) else 0


if __name__ == "__main__":
    sys.exit(main())
