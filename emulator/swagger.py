"""The swagger (OpenAPI 2.0) document a data-plane service publishes at ``.../swagger.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from emulator.catalog import Task, WebServiceKind

if TYPE_CHECKING:
    from emulator.backend import DataPlaneService
    from emulator.learning import TrainedModel


def _column(feature_type: str) -> dict[str, Any]:
    if feature_type == "Integer":
        return {"type": "integer", "format": "int32"}
    return {"type": "number", "format": "double"}


def _array_of(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object", "properties": properties}}


def swagger_document(service: DataPlaneService, base_url: str, model: TrainedModel | None) -> dict[str, Any]:
    experiment = service.experiment
    columns = {feature.name: _column(feature.type) for feature in experiment.features}
    security: list[dict[str, list[str]]] = [{"Bearer": []}]
    paths: dict[str, Any] = {}
    if service.kind is WebServiceKind.PREDICTIVE:
        scored: dict[str, Any] = {"Scored Labels": {"type": "string"}}
        if experiment.task is Task.BINARY:
            scored["Scored Probabilities"] = {"type": "string"}
        body = {
            "name": "WebServiceRequest",
            "in": "body",
            "required": True,
            "schema": {"$ref": "#/definitions/Request"},
        }
        paths["/execute?api-version=2.0&format=swagger"] = {
            "post": {
                "summary": "Execute the web service and get a response synchronously",
                "operationId": "execute",
                "security": security,
                "parameters": [body],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/Response"}}},
            }
        }
        definitions: dict[str, Any] = {
            "Request": {
                "type": "object",
                "properties": {
                    "Inputs": {"type": "object", "properties": {experiment.input_name: _array_of(columns)}},
                    "GlobalParameters": {"type": "object"},
                },
            },
            "Response": {
                "type": "object",
                "properties": {
                    "Results": {"type": "object", "properties": {experiment.scoring_output: _array_of(scored)}}
                },
            },
        }
    else:
        operation = {"security": security, "responses": {"200": {"description": "OK"}}}
        paths["/jobs?api-version=2.0"] = {"post": {"operationId": "submit", **operation}}
        paths["/jobs/{jobId}/start?api-version=2.0"] = {"post": {"operationId": "start", **operation}}
        paths["/jobs/{jobId}?api-version=2.0"] = {
            "get": {"operationId": "status", **operation},
            "delete": {"operationId": "cancel", **operation},
        }
        definitions = {
            "GlobalParameters": {
                "type": "object",
                "properties": {
                    p.name: {"type": "string", "description": p.description or p.name}
                    for p in experiment.global_parameters
                },
                "required": [p.name for p in experiment.global_parameters if p.required],
            }
        }
    info: dict[str, Any] = {"title": service.name, "version": "2.0", "description": experiment.title}
    if model is not None:
        info["x-trained-at"] = model.metadata.trained_at
    url = urlsplit(base_url)
    return {
        "swagger": "2.0",
        "info": info,
        "host": url.netloc,
        "basePath": url.path,
        "schemes": [url.scheme],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
        "paths": paths,
        "definitions": definitions,
    }
