"""The Studio (classic) BES sample for Python, as a web service's API help page generated it.

Users ran this in a ``PythonOperator`` before there was a BES operator: submit the job, start it, then
GET its status every second until it ends. Ported from the sample's urllib2 to urllib; the loop, the
one-second wait and the status handling are the sample's. ``sleep`` is a parameter only so that the
status-call benchmark can run the same loop on a compressed clock.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any


def run_studio_sample(
    *,
    api_location: str,
    api_key: str,
    storage_connection_string: str,
    input_blob: str,
    outputs: Mapping[str, str],
    global_parameters: Mapping[str, str],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Run one BES job the sample's way; returns its id and final status."""
    base_url = f"{api_location}/jobs"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + api_key}

    def reference(location: str) -> dict[str, str]:
        return {"ConnectionString": storage_connection_string, "RelativeLocation": location}

    def call(url: str, body: bytes | None = None) -> Any:
        # The URL is the configured web service's, never user input.
        request = urllib.request.Request(url, body, headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            content = response.read()
        return json.loads(content) if content else None

    payload = {
        "Inputs": {"input1": reference(input_blob)},
        "Outputs": {name: reference(location) for name, location in outputs.items()},
        "GlobalParameters": dict(global_parameters),
    }
    job_id = call(f"{base_url}?api-version=2.0", json.dumps(payload).encode())
    call(f"{base_url}/{job_id}/start?api-version=2.0", b"")
    while True:
        result = call(f"{base_url}/{job_id}?api-version=2.0")
        status = result["StatusCode"]
        if status in (2, "Failed", 3, "Cancelled"):
            raise RuntimeError(f"BES job {job_id} {status}: {result.get('Details')}")
        if status in (4, "Finished"):
            return {"job_id": job_id, "status": status}
        sleep(1)  # "wait one second" between status requests, as the sample does
