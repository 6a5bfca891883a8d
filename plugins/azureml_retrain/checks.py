"""Connectivity checks behind the `check_connections` DAG: prove each service answers, end to end."""

from __future__ import annotations

import time
import uuid
from typing import Any

CHECK_CONTAINER = "airflow-checks"


def check_blob_storage(wasb_conn_id: str = "wasb_default", container: str = CHECK_CONTAINER) -> dict[str, Any]:
    """Write, read back and delete a marker blob through the Azure provider's WasbHook.

    Returns only locations and timings (never connection details), so the result is safe in XCom.
    """
    from azureml_retrain.storage import storage_call, wasb_hook

    hook = wasb_hook(wasb_conn_id)
    blob_name = f"connection-check/{uuid.uuid4().hex}.txt"
    payload = f"written at {time.time():.3f}"
    started = time.monotonic()
    with storage_call(wasb_conn_id, f"writing, reading back and deleting {container}/{blob_name}"):
        hook.create_container(container)
        hook.load_string(payload, container_name=container, blob_name=blob_name)
        read_back = hook.read_file(container_name=container, blob_name=blob_name)
        hook.delete_file(container_name=container, blob_name=blob_name, ignore_if_missing=True)
    if read_back != payload:
        raise RuntimeError(
            f"Blob storage check failed: {container}/{blob_name} read back {len(read_back)} bytes "
            f"that differ from the {len(payload)} written; check the '{wasb_conn_id}' connection."
        )
    return {"container": container, "blob": blob_name, "round_trip_seconds": round(time.monotonic() - started, 3)}
