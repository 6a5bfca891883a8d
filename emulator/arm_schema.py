"""The ARM ``WebService`` document (2017-01-01): casing, merge-patch, and the graphs we render.

The spec's own examples mix camelCase and PascalCase member names, so request bodies are read
case-insensitively: :func:`canonical` renames every *schema* member to the spec's camelCase while
leaving user-chosen keys (asset ids, node ids, column and parameter names) untouched.

The emulator runs graphs from its experiment catalogue. Each graph it renders carries an
experiment asset (``locationInfo.uri`` = ``aml://emulator/experiments/{key}``); PUT bodies must keep
it. Predictive graphs also carry the ``"<title> [trained model]"`` Resource asset whose uri decides
what the service scores with. The rest of the package is stored and echoed, not interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.catalog import Experiment, Task, WebServiceKind

EXPERIMENT_URI_PREFIX = "aml://emulator/experiments/"


@dataclass(frozen=True)
class _Object:
    fields: dict[str, Any]  # canonical member name -> kind of its value (None: leave as is)


@dataclass(frozen=True)
class _Map:
    value: Any


@dataclass(frozen=True)
class _List:
    item: Any


@dataclass(frozen=True)
class _Enum:
    """A string enum of the spec: read case-insensitively, stored and shown in the spec's casing."""

    values: tuple[str, ...]

    def spelled(self, value: str) -> str:
        return next((known for known in self.values if known.lower() == value.lower()), value)


def _obj(*names: str, **nested: Any) -> _Object:
    return _Object({**dict.fromkeys(names), **nested})


# Enums of the 2017-01-01 spec (x-ms-enum modelAsString: other values pass through unchanged).
COLUMN_TYPES = _Enum(("Boolean", "Integer", "Number", "String"))
COLUMN_FORMATS = _Enum(
    (
        "Byte",
        "Char",
        "Complex64",
        "Complex128",
        "Date-time",
        "Date-timeOffset",
        "Double",
        "Duration",
        "Float",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "Uint8",
        "Uint16",
        "Uint32",
        "Uint64",
    )
)
_PARAMETER_TYPES = _Enum(
    (
        "String",
        "Int",
        "Float",
        "Enumerated",
        "Script",
        "Mode",
        "Credential",
        "Boolean",
        "Double",
        "ColumnPicker",
        "ParameterRange",
        "DataGatewayName",
    )
)
_BLOB = _obj("uri", "credentials")
_PARAMETER = _obj("value", "certificateThumbprint")
_PORT = _obj(type=_Enum(("Dataset",)))
_COLUMN = _obj("enum", "x-ms-isnullable", "x-ms-isordered", type=COLUMN_TYPES, format=COLUMN_FORMATS)
_TABLE = _obj("title", "description", "type", "format", properties=_Map(_COLUMN))
_SCHEMA = _obj("title", "description", "type", properties=_Map(_TABLE))
_ASSET = _obj(
    "name",
    "id",
    type=_Enum(("Module", "Resource")),
    locationInfo=_BLOB,
    inputPorts=_Map(_PORT),
    outputPorts=_Map(_PORT),
    metadata=_Map(None),
    parameters=_List(_obj("name", "parameterType", "modeValuesInfo")),
)
_PACKAGE = _obj(
    nodes=_Map(_obj("assetId", "inputId", "outputId", parameters=_Map(_PARAMETER))),
    edges=_List(_obj("sourceNodeId", "sourcePortId", "targetNodeId", "targetPortId")),
    graphParameters=_Map(_obj("description", type=_PARAMETER_TYPES, links=_List(_obj("nodeId", "parameterKey")))),
)
_PROPERTIES = _obj(
    "title",
    "description",
    "createdOn",
    "modifiedOn",
    "provisioningState",
    "readOnly",
    "swaggerLocation",
    "exposeSampleData",
    "payloadsInBlobStorage",
    packageType=_Enum(("Graph",)),
    keys=_obj("primary", "secondary"),
    realtimeConfiguration=_obj("maxConcurrentCalls"),
    diagnostics=_obj("expiry", level=_Enum(("None", "Error", "All"))),
    storageAccount=_obj("name", "key"),
    machineLearningWorkspace=_obj("id"),
    commitmentPlan=_obj("id"),
    input=_SCHEMA,
    output=_SCHEMA,
    exampleRequest=_obj(inputs=_Map(None), globalParameters=_Map(None)),
    assets=_Map(_ASSET),
    parameters=_Map(_PARAMETER),
    package=_PACKAGE,
    payloadsLocation=_BLOB,
)
WEB_SERVICE = _obj("id", "name", "type", "location", tags=_Map(None), properties=_PROPERTIES)


def canonical(value: Any, kind: Any = WEB_SERVICE) -> Any:
    """``value`` with schema member names in canonical camelCase and enum values in the spec's
    casing (user keys untouched)."""
    if isinstance(kind, _Enum) and isinstance(value, str):
        return kind.spelled(value)
    if isinstance(kind, _Object) and isinstance(value, dict):
        lookup = {name.lower(): name for name in kind.fields}
        result = {}
        for key, item in value.items():
            name = lookup.get(str(key).lower(), str(key))
            result[name] = canonical(item, kind.fields.get(name))
        return result
    if isinstance(kind, _Map) and isinstance(value, dict):
        return {key: canonical(item, kind.value) for key, item in value.items()}
    if isinstance(kind, _List) and isinstance(value, list):
        return [canonical(item, kind.item) for item in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge member by member, ``null`` deletes."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def without_nulls(value: Any) -> Any:
    """``value`` without ``null`` object members, at any depth (list items are kept).

    The spec types its optional members as string or object, so an absent one is omitted, never
    ``null`` (generated clients reject ``null`` where they expect a string)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def experiment_key(properties: dict[str, Any]) -> str | None:
    """The catalogue experiment a graph runs (from its experiment asset)."""
    for asset in (properties.get("assets") or {}).values():
        uri = (asset.get("locationInfo") or {}).get("uri") if isinstance(asset, dict) else None
        if isinstance(uri, str) and uri.startswith(EXPERIMENT_URI_PREFIX):
            return uri[len(EXPERIMENT_URI_PREFIX) :]
    return None


def trained_model_asset(properties: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(asset id, asset) of the graph's ``[trained model]`` Resource asset, if any."""
    for asset_id, asset in (properties.get("assets") or {}).items():
        if (
            isinstance(asset, dict)
            and str(asset.get("type", "")).lower() == "resource"
            and str(asset.get("name", "")).endswith("[trained model]")
        ):
            return asset_id, asset
    return None


def _column(feature_type: str) -> dict[str, Any]:
    """A column of the service's input/output schema, typed in the spec's casing."""
    if feature_type == "Integer":
        return {"type": "Integer", "format": "Int32", "x-ms-isnullable": False}
    if feature_type == "String":
        return {"type": "String", "x-ms-isnullable": False}
    return {"type": "Number", "format": "Double", "x-ms-isnullable": False}


def _table(title: str, columns: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"type": "object", "title": title, "properties": columns}


def render_properties(
    experiment: Experiment,
    kind: WebServiceKind,
    *,
    title: str,
    description: str,
    model_uri: str | None,
    storage_account_name: str,
    commitment_plan: str,
) -> dict[str, Any]:
    """The ``properties`` of a seeded web service running ``experiment``."""
    input_columns = {feature.name: _column(feature.type) for feature in experiment.features}
    if kind is WebServiceKind.TRAINING:
        input_columns[experiment.label] = _column("Number" if experiment.task is Task.REGRESSION else "String")
        outputs = {
            experiment.model_output: _table("Trained model (.ilearner)", {}),
            experiment.evaluation_output: _table("Evaluation results", {}),
        }
    else:
        scored = {
            "Scored Labels": (
                {"type": "Number", "format": "Double"} if experiment.task is Task.REGRESSION else {"type": "String"}
            )
        }
        if experiment.task is Task.BINARY:
            scored["Scored Probabilities"] = {"type": "Number", "format": "Double"}
        outputs = {experiment.scoring_output: _table("Scored results", scored)}
    assets: dict[str, Any] = {
        "asset1": {
            "name": experiment.title,
            "type": "Module",
            "locationInfo": {"uri": f"{EXPERIMENT_URI_PREFIX}{experiment.key}"},
        },
        "asset2": {
            "name": experiment.learner.value.replace("_", " ").title(),
            "type": "Module",
            "locationInfo": {"uri": f"aml://module/{experiment.learner.value}"},
        },
    }
    nodes: dict[str, Any] = {
        "node1": {"inputId": experiment.input_name},
        "node2": {"assetId": "asset1", "parameters": {}},
        "node3": {"assetId": "asset2", "parameters": {}},
    }
    edges = [
        {"sourceNodeId": "node1", "targetNodeId": "node2", "targetPortId": "Dataset"},
        {
            "sourceNodeId": "node3",
            "sourcePortId": "Untrained model",
            "targetNodeId": "node2",
            "targetPortId": "Learner",
        },
    ]
    if model_uri is not None:
        assets["asset3"] = {
            "name": experiment.trained_model_resource,
            "type": "Resource",
            "locationInfo": {"uri": model_uri},
            "outputPorts": {"Results dataset": {"type": "Dataset"}},
        }
        nodes["node4"] = {"assetId": "asset3", "parameters": {}}
        edges.append({"sourceNodeId": "node4", "sourcePortId": "Results dataset", "targetNodeId": "node2"})
    for number, output in enumerate(outputs, start=5):
        nodes[f"node{number}"] = {"outputId": output}
        edges.append({"sourceNodeId": "node2", "sourcePortId": output, "targetNodeId": f"node{number}"})
    graph_parameters = {
        parameter.name: {
            "description": parameter.description or parameter.name,
            "type": parameter.type.value,
            "links": [{"nodeId": "node2", "parameterKey": parameter.learner_parameter or parameter.name}],
        }
        for parameter in experiment.global_parameters
    }
    parameters = {
        parameter.name: {"value": str(parameter.default)}
        for parameter in experiment.global_parameters
        if parameter.default is not None
    }
    return {
        "title": title,
        "description": description,
        "packageType": "Graph",
        "readOnly": False,
        "exposeSampleData": False,
        "payloadsInBlobStorage": False,
        "realtimeConfiguration": {"maxConcurrentCalls": 4},
        "diagnostics": {"level": "None"},
        "storageAccount": {"name": storage_account_name},
        "commitmentPlan": {"id": commitment_plan},
        "input": {
            "type": "object",
            "properties": {experiment.input_name: _table(experiment.input_name, input_columns)},
        },
        "output": {"type": "object", "properties": outputs},
        "exampleRequest": {
            "inputs": {experiment.input_name: [["0"] * len(input_columns)]},
            "globalParameters": {},
        },
        "parameters": parameters,
        "assets": assets,
        "package": {"nodes": nodes, "edges": edges, "graphParameters": graph_parameters},
    }
