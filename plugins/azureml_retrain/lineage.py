"""OpenLineage datasets and facets of the retraining steps (see docs/lineage.md for the naming).

Blobs are named as the OpenLineage spec names Azure Blob Storage (``wasbs://<container>@<account>.dfs.core
.windows.net`` + the blob's path, through the client's own naming helper); a classic endpoint is
``azureml://<management host>`` + ``workspaces/<ws>/webservices/<id>/endpoints/<name>``, a Resource
Manager web service ``azureml://<ARM host>`` + its resource id. Every name is built from locations
without a query string, so no SAS, key or token can reach an event.

Everything OpenLineage is imported inside the functions: the operators' modules are imported when DAGs
are parsed, the provider only when an event is built.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from azureml_retrain.redaction import strip_query

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import RunFacet

    from azureml_retrain.blobs import BlobLocation

    #: What the operators' ``get_openlineage_facets_on_*`` methods return.
    Lineage = OperatorLineage[Dataset, RunFacet]

#: The custom facets' JSON Schema, shipped with the package; its ``$id`` is their ``_schemaURL``'s base.
FACET_SCHEMA_FILE = Path(__file__).with_name("openlineage_facets.json")
BES_JOB_FACET = "azuremlBesJob"
EVALUATION_FACET = "azuremlModelEvaluation"
#: Facet key → its definition in :data:`FACET_SCHEMA_FILE`.
FACET_DEFINITIONS = {BES_JOB_FACET: "AzuremlBesJobRunFacet", EVALUATION_FACET: "AzuremlModelEvaluationRunFacet"}


def blob_dataset(account: str, location: BlobLocation) -> Dataset:
    """A blob as the spec names Azure Blob Storage datasets."""
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.naming.dataset import WASBS

    naming = WASBS(container=location.container, service_name=account, object_key=location.blob_name)
    return Dataset(namespace=naming.get_namespace(), name=naming.get_name())


def model_dataset(account: str, model: Mapping[str, str | None]) -> Dataset:
    """The model a target serves: a blob of ``account`` (``{"base_location", "relative_location"}``,
    as the promotion operators resolve it) or a model URI the service holds (``aml://...``)."""
    from openlineage.client.event_v2 import Dataset

    from azureml_retrain.blobs import BlobLocation

    base = strip_query(str(model.get("base_location") or ""))
    relative = strip_query(str(model.get("relative_location") or "")).lstrip("/")
    if base.startswith(("http://", "https://")) and "/" in relative:
        return blob_dataset(_account_of(base) or account, BlobLocation.parse(relative, "model"))
    uri = urlsplit(base.rstrip("/") + "/" + relative if base else relative)
    return Dataset(namespace=f"{uri.scheme}://{uri.netloc}", name=uri.path.lstrip("/") or "/")


def classic_endpoint_dataset(base_url: str, workspace_id: str, web_service_id: str, endpoint_name: str) -> Dataset:
    from openlineage.client.event_v2 import Dataset

    return Dataset(
        namespace=f"azureml://{urlsplit(base_url).netloc}",
        name=f"workspaces/{workspace_id}/webservices/{web_service_id}/endpoints/{endpoint_name}",
    )


def arm_web_service_dataset(base_url: str, subscription_id: str, resource_group: str, name: str) -> Dataset:
    from openlineage.client.event_v2 import Dataset

    return Dataset(
        namespace=f"azureml://{urlsplit(base_url).netloc}",
        name=(
            f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.MachineLearning/webServices/{name}"
        ),
    )


def bes_job_facet(job_id: str, service: str, status: str | None) -> RunFacet:
    """The BES job a training step ran, on the training web service (its API location, no key)."""
    return _run_facet(BES_JOB_FACET, {"jobId": job_id, "service": strip_query(service), "status": status})


def evaluation_facet(decision: Mapping[str, Any]) -> RunFacet:
    """EvaluateModelOperator's verdict with the challenger's and the champion's metrics."""
    return _run_facet(
        EVALUATION_FACET,
        {
            "promote": bool(decision.get("promote")),
            "reason": decision.get("reason"),
            "metric": decision.get("metric"),
            "higherIsBetter": decision.get("higher_is_better"),
            "challenger": _json_safe(decision.get("challenger")),
            "champion": _json_safe(decision.get("champion")),
        },
    )


def operator_lineage(
    inputs: Iterable[Dataset] = (), outputs: Iterable[Dataset] = (), run_facets: Mapping[str, RunFacet] | None = None
) -> Lineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=list(inputs), outputs=list(outputs), run_facets=dict(run_facets or {}))


def _account_of(base_location: str) -> str | None:
    """The account of a blob endpoint: ``<account>.blob.core.windows.net`` or Azurite's path style."""
    parts = urlsplit(base_location)
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    path = parts.path.strip("/")
    return path.split("/", 1)[0] if path else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):  # NaN is not JSON
        return None
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _run_facet(name: str, fields: Mapping[str, Any]) -> RunFacet:
    """A custom run facet: the spec's ``RunFacet`` (``_producer``, ``_schemaURL``) with ``fields``."""
    from openlineage.client.facet_v2 import RunFacet

    facet = cast("RunFacet", RunFacet().with_additional_properties(**fields))
    facet._schemaURL = f"{facet_schema_id()}#/$defs/{FACET_DEFINITIONS[name]}"
    return facet


@functools.cache
def facet_schema_id() -> str:
    """The ``$id`` of :data:`FACET_SCHEMA_FILE` (read once, when the first facet is built)."""
    return str(json.loads(FACET_SCHEMA_FILE.read_text())["$id"])
