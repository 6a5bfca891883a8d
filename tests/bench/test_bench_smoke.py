"""The benchmark smoke run, as ``make bench-smoke`` runs it: every ratio within its target.

It is the same entry point as ``make bench`` (``python -m devtools.bench --smoke``), run as a separate
process because it starts its own Azurite, emulator and Airflow home; its raw numbers are kept in
``test-artifacts/bench-smoke.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devtools.services import ROOT

pytestmark = [pytest.mark.bench, pytest.mark.integration]

REPORT = ROOT / "test-artifacts" / "bench-smoke.json"


@pytest.mark.timeout(600)
def test_bench_smoke_ratios_within_targets():
    REPORT.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "--smoke", "--out", str(REPORT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = f"{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    assert REPORT.exists(), f"no report written (exit {result.returncode}):\n{output}"
    report = json.loads(REPORT.read_text())
    errors = {key: m["error"] for key, m in report["measurements"].items() if m["error"]}
    assert not errors, errors
    missed = [
        f"{key}: {check['case']}: {check['value']} {check['unit']} > {check['target']}"
        for key, m in report["measurements"].items()
        for check in m["checks"]
        if check["passed"] is False
    ]
    assert not missed, "past target:\n" + "\n".join(missed) + "\n\n" + output
    assert result.returncode == 0, output
