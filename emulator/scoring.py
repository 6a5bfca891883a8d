"""Request-Response Service: score rows with the model the endpoint currently serves.

Request and response shapes follow the contract (section 2): table form (``ColumnNames`` +
``Values``) answered with ``{"type": "table", "value": ...}`` (names and types only with
``details=true``), or ``format=swagger`` row objects answered with row objects. Values are strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulator import learning
from emulator.catalog import WebServiceKind
from emulator.errors import api_error

if TYPE_CHECKING:
    from emulator.backend import Backend, DataPlaneService

_REQUEST_MEMBERS = ("Inputs", "GlobalParameters")


class ScoringService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def execute(self, service: DataPlaneService, body: Any, *, swagger: bool, details: bool) -> dict[str, Any]:
        if service.kind is not WebServiceKind.PREDICTIVE:
            raise api_error(
                "NotImplemented", "Request-response scoring of a training web service is not emulated; use BES."
            )
        model = self.backend.model(service.model_id) if service.model_id else None
        if model is None:
            raise api_error("ModelPackageNotFound", f"Web service '{service.name}' has no trained model to score with.")
        experiment = service.experiment
        records = self._records(body, experiment.input_name, swagger=swagger)
        try:
            scored = learning.score(model, records, allowed_extra={experiment.label})
        except learning.ScoringInputError as exc:
            raise api_error("InputMismatchError" if exc.mismatch else "InputParseError", str(exc)) from exc
        columns = learning.score_columns(model)
        names = [name for name, _ in columns]
        output = experiment.scoring_output
        if swagger:
            return {"Results": {output: [dict(zip(names, row, strict=True)) for row in scored]}}
        value: dict[str, Any] = {"Values": scored}
        if details:
            value = {"ColumnNames": names, "ColumnTypes": [kind for _, kind in columns], "Values": scored}
        return {"Results": {output: {"type": "table", "value": value}}}

    @staticmethod
    def _records(body: Any, input_name: str, *, swagger: bool) -> list[dict[str, object]]:
        if not isinstance(body, dict):
            raise api_error("InputParseError", "The request body must be a JSON object.", error_class="BadUserArgument")
        unknown = sorted(set(body) - set(_REQUEST_MEMBERS))
        if unknown:
            raise api_error("RequestBodyInvalid", f"Unknown member(s) {unknown}; expected {list(_REQUEST_MEMBERS)}.")
        parameters = body.get("GlobalParameters") or {}
        if not isinstance(parameters, dict):
            raise api_error("InputParseError", "'GlobalParameters' must be an object.")
        if parameters:
            raise api_error(
                "UnexpectedParameter",
                f"Unexpected global parameter(s) {sorted(parameters)}; the web service declares none.",
                error_class="BadUserArgument",
            )
        inputs = body.get("Inputs")
        if not isinstance(inputs, dict) or not inputs:
            raise api_error("MissingRequestInput", f"The request needs 'Inputs' with '{input_name}'.")
        unknown_inputs = sorted(set(inputs) - {input_name})
        if unknown_inputs:
            raise api_error("InvalidInputNames", f"Unknown input name(s) {unknown_inputs}; expected ['{input_name}'].")
        table = inputs.get(input_name)
        if swagger:
            if not isinstance(table, list) or not all(isinstance(row, dict) for row in table):
                raise api_error(
                    "InputParseError", f"With format=swagger, '{input_name}' must be a list of row objects."
                )
            return [dict(row) for row in table]
        if not isinstance(table, dict) or not isinstance(table.get("ColumnNames"), list):
            raise api_error("InputParseError", f"'{input_name}' must be an object with 'ColumnNames' and 'Values'.")
        names = _column_names(table["ColumnNames"], input_name)
        rows = table.get("Values")
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise api_error("InputParseError", f"'{input_name}.Values' must be a list of rows.")
        for number, row in enumerate(rows, start=1):
            if len(row) != len(names):
                raise api_error(
                    "InputParseError", f"Row {number} has {len(row)} values; 'ColumnNames' has {len(names)}."
                )
        return [dict(zip(names, row, strict=True)) for row in rows]


def _column_names(names: list[Any], input_name: str) -> list[str]:
    """``ColumnNames`` of a table request: a non-string name cannot match a column (nor be hashed)."""
    if not all(isinstance(name, str) for name in names):
        raise api_error("InputParseError", f"'{input_name}.ColumnNames' must be a list of column names (strings).")
    return names
