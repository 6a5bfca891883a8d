"""`make demo`: run the main job end to end against the local services and say what it did.

Starts whichever local services are not running yet (and stops exactly those at the end), then runs
the demo DAG through `airflow dags test` in the project's AIRFLOW_HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from devtools import services

DEMO_DAG_ID = "check_connections"


def main() -> int:
    env = {**os.environ, **services.airflow_environment()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = services.start_all()
    try:
        began = time.monotonic()
        print(f"demo: running DAG '{DEMO_DAG_ID}' with `airflow dags test` (log: .airflow/logs/demo.log)")
        log_path = services.LOG_DIR / "demo.log"
        with log_path.open("w") as log:
            result = subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "dags", "test", DEMO_DAG_ID],
                cwd=services.ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        elapsed = time.monotonic() - began
        if result.returncode != 0:
            print(f"demo: FAILED after {elapsed:.1f}s; the last lines of {log_path}:", file=sys.stderr)
            print("\n".join(log_path.read_text().splitlines()[-30:]), file=sys.stderr)
            return result.returncode
        print(f"demo: DAG '{DEMO_DAG_ID}' succeeded in {elapsed:.1f}s:")
        print("  - wrote, read back and deleted a marker blob in Azurite through the wasb_default connection")
        return 0
    finally:
        if started:
            services.stop_all(started)


if __name__ == "__main__":
    sys.exit(main())
