"""Blob locations: how operators name blobs (container + path + wasb connection), never by key or SAS."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

from azureml_retrain.exceptions import ConfigurationError


@dataclass(frozen=True)
class BlobLocation:
    """A blob in the storage account behind a wasb connection."""

    container: str
    blob_name: str

    @classmethod
    def parse(cls, value: str | dict[str, Any] | BlobLocation, field: str = "blob") -> BlobLocation:
        """Accept ``"container/path/to/blob"``, ``{"container": .., "blob_name": ..}`` or a BlobLocation.

        ``field`` names the argument in errors, so a bad value points at what to fix.
        """
        if isinstance(value, BlobLocation):
            return value
        if isinstance(value, dict):
            container = value.get("container")
            blob_name = value.get("blob_name")
            if isinstance(container, str) and isinstance(blob_name, str) and container and blob_name:
                return cls(container, blob_name)
            raise ConfigurationError(f"{field}: expected keys 'container' and 'blob_name', got {sorted(value)}")
        if isinstance(value, str):
            container, _, blob_name = value.strip().lstrip("/").partition("/")
            if container and blob_name:
                return cls(container, blob_name)
        raise ConfigurationError(f"{field}: expected 'container/path/to/blob', got {value!r}")

    @property
    def relative_location(self) -> str:
        """The BES/management-plane form: ``container/blob`` without a leading slash."""
        return f"{self.container}/{self.blob_name}"

    def to_dict(self) -> dict[str, str]:
        return {"container": self.container, "blob_name": self.blob_name}

    def __str__(self) -> str:
        return self.relative_location


def parse_structured(value: Any, field_name: str) -> Any:
    """Turn a string holding a dict/list (JSON or Python repr) back into data.

    Such strings come from rendered templates, and from XComs a trigger set when it ended its task:
    Airflow 3.3 stores those JSON-encoded, so the next task reads the JSON text."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith(("{", "[")):
        return value
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        # The text is not echoed: a rendered XCom may carry more than this operator should log.
        raise ConfigurationError(
            f"{field_name}: the rendered text ({len(text)} characters) is neither JSON nor a Python literal: {err}"
        ) from None


def resolve_output(value: str | dict[str, Any] | BlobLocation, output_name: str, field: str) -> BlobLocation:
    """A blob location given directly, or picked by name from SubmitBesJobOperator's XCom result.

    ``value`` may be ``"container/path"``, ``{"container", "blob_name"}``, or the operator's return
    value ``{"job_id": ..., "outputs": {output_name: {"container", "blob_name", "relative_location"}}}``.
    Only location fields are read (never a SAS token), and errors list output *names* only.
    ``field`` names the argument in errors.
    """
    value = parse_structured(value, field)
    if not (isinstance(value, dict) and "outputs" in value):
        return BlobLocation.parse(value, field=field)
    outputs = value["outputs"]
    if not isinstance(outputs, dict) or not outputs:
        raise ConfigurationError(f"{field}['outputs']: expected a non-empty mapping of BES outputs")
    if output_name not in outputs:
        raise ConfigurationError(
            f"output_name: BES job {value.get('job_id', '?')} has no output {output_name!r}; "
            f"outputs are {sorted(str(k) for k in outputs)} (names are case-sensitive)"
        )
    output = outputs[output_name]
    output_field = f"{field}['outputs'][{output_name!r}]"
    if not isinstance(output, dict):
        raise ConfigurationError(f"{output_field}: expected a mapping with 'container' and 'blob_name'")
    if output.get("container") and output.get("blob_name"):
        return BlobLocation.parse({"container": output["container"], "blob_name": output["blob_name"]}, output_field)
    if isinstance(output.get("relative_location"), str):
        return BlobLocation.parse(output["relative_location"], f"{output_field}['relative_location']")
    raise ConfigurationError(f"{output_field}: expected 'container' + 'blob_name' or 'relative_location'")
