"""`make airflow`: Airflow standalone on 127.0.0.1 with the local connections pre-set.

Runs in the foreground; Ctrl-C sends SIGINT to the whole process group, which is the one signal on
which `airflow standalone` stops all its components cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from devtools import services

UI_URL = f"http://{services.HOST}:8080"
PASSWORD_FILE = services.AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"


def main() -> int:
    env = {**os.environ, **services.airflow_environment()}
    # standalone starts its components as `airflow ...` looked up on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    print(f"Airflow UI: {UI_URL}  (user 'admin'; password in {PASSWORD_FILE.relative_to(services.ROOT)})")
    print("Stop with Ctrl-C.", flush=True)
    # A shell's background job inherits SIGINT as ignored; standalone only shuts down cleanly on
    # SIGINT, so give it back its default meaning before exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    airflow = str(Path(sys.executable).parent / "airflow")
    os.execve(airflow, [airflow, "standalone"], env)


if __name__ == "__main__":
    sys.exit(main())
