"""Write docs/configuration.md, the reference of a retraining config's fields, from the pydantic
models in ``plugins/azureml_retrain/config.py``.

The page follows the JSON schema of :class:`~azureml_retrain.config.RetrainingConfig`: one section
per object (the top level, ``training``, ``data``, ..., each kind of target), and per field its
type, its bounds, its default and its description. The description is the field's own
(``Field(description=...)``) or, when it has none, the string right below the field in its class
(an attribute docstring). ``tests/devtools/test_config_reference.py`` fails while the page is not
what this writes, and names each field that has no description.

    python -m devtools.config_reference           # rewrite the page
    python -m devtools.config_reference --check   # exit 1 if the page is stale or a field undescribed
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import re
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from devtools.services import AIRFLOW_HOME, ROOT

PAGE = ROOT / "docs" / "configuration.md"
COMMAND = "python -m devtools.config_reference"
ROOT_MODEL = "azureml_retrain.config.RetrainingConfig"
EXAMPLE = "dags/retraining/churn.yaml"

JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
    "object": "mapping",
}


@dataclass(frozen=True)
class Section:
    """One object of the schema: where it sits in a config file, and its pydantic model."""

    path: str
    title: str
    model: type[BaseModel]

    @property
    def anchor(self) -> str:
        return slug(self.title)


def slug(title: str) -> str:
    """The id MkDocs (and GitHub) give a heading: lower case, punctuation dropped, spaces as ``-``."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title.lower()).strip())


def root_model() -> type[BaseModel]:
    module, _, name = ROOT_MODEL.rpartition(".")
    model = getattr(__import__(module, fromlist=[name]), name)
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's annotation (``X | None``, ``list[X]``, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in nested_models(argument)]


def models_by_name(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """``model`` and every model its fields use, by class name (the schema's ``$defs`` keys)."""
    found = {model.__name__: model}
    for field in model.model_fields.values():
        for inner in nested_models(field.annotation):
            if inner.__name__ not in found:
                found.update(models_by_name(inner))
    return found


def attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The string literal right below each field of ``model``'s class body (and its base classes')."""
    found: dict[str, str] = {}
    for owner in reversed(model.__mro__):
        if not (isinstance(owner, type) and issubclass(owner, BaseModel)) or owner is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(owner))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        assert isinstance(body, ast.ClassDef)
        for statement, following in zip(body.body, body.body[1:], strict=False):
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            match following:
                case ast.Expr(value=ast.Constant(value=str() as text)):
                    found[statement.target.id] = " ".join(text.split())
    return found


def resolve(schema: dict[str, Any]) -> str | None:
    """The ``$defs`` name a schema refers to, if it is a plain reference."""
    reference = schema.get("$ref")
    return str(reference).rsplit("/", 1)[-1] if reference else None


def referenced(schema: dict[str, Any]) -> list[str]:
    """The ``$defs`` names a field's schema uses (through ``anyOf``, ``oneOf`` and ``items``)."""
    if name := resolve(schema):
        return [name]
    names: list[str] = []
    for key in ("anyOf", "oneOf"):
        for variant in schema.get(key, []):
            names += referenced(variant)
    if "items" in schema:
        names += referenced(schema["items"])
    return names


def code(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def type_text(schema: dict[str, Any], links: dict[str, Section]) -> str:
    """A field's type in words, with links to the sections of the objects it holds."""
    kind = schema.get("type")
    variants = schema.get("anyOf") or schema.get("oneOf")
    if name := resolve(schema):
        text = f"[{links[name].title}](#{links[name].anchor})"
    elif "const" in schema:
        text = code(schema["const"])
    elif "enum" in schema:
        text = " or ".join(code(value) for value in schema["enum"])
    elif variants:
        text = " or ".join(dict.fromkeys(type_text(variant, links) for variant in variants))
    elif kind == "array":
        text = "list of " + type_text(schema.get("items", {}), links)
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = "mapping of name to " + type_text(schema["additionalProperties"], links)
    elif kind == "string" and schema.get("format") == "date-time":
        text = "date-time (ISO 8601)"
    else:
        text = JSON_TYPES.get(kind, kind) if isinstance(kind, str) else "any"
    return text


def bounds_text(schema: dict[str, Any]) -> str:
    """The schema's own checks of a value (ranges, lengths, patterns)."""
    checks: list[str] = []
    for variant in [schema, *schema.get("anyOf", [])]:
        words = {
            "minimum": ">= {}",
            "exclusiveMinimum": "> {}",
            "maximum": "<= {}",
            "exclusiveMaximum": "< {}",
            "minLength": "at least {} characters",
            "maxLength": "at most {} characters",
            "minItems": "at least {} item(s)",
            "pattern": "matches `{}`",
        }
        checks += [text.format(variant[key]) for key, text in words.items() if key in variant]
    return ", ".join(checks)


def default_text(model: type[BaseModel], name: str, schema: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" in schema:
        return code(schema["default"])
    # A default_factory leaves no default in the schema: the value it makes.
    value = model.model_fields[name].get_default(call_default_factory=True)
    if isinstance(value, BaseModel):  # a section with defaults of its own: its fields' values
        value = value.model_dump(mode="json")
    return code(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sections(model: type[BaseModel] | None = None) -> tuple[list[Section], dict[str, Any]]:
    """Every object of the schema of ``model`` (the config's), in reading order (depth first), and
    the schema itself."""
    model = model or root_model()
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    classes = models_by_name(model)
    found: list[Section] = [Section("top level", "Top level", model)]
    seen = {model.__name__}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for field, field_schema in properties.items():
            names = [name for name in referenced(field_schema) if name not in seen]
            many = field_schema.get("type") == "array"
            for name in names:
                seen.add(name)
                path = f"{prefix}{field}[]" if many else f"{prefix}{field}"
                kind = defs[name].get("properties", {}).get("kind", {}).get("const")
                title = f"{path} ({kind})" if kind else path
                found.append(Section(path, title, classes[name]))
                walk(defs[name].get("properties", {}), f"{path}.")

    walk(schema.get("properties", {}), "")
    return found, schema


def undescribed(model: type[BaseModel] | None = None) -> list[str]:
    """Each field that has neither a ``Field(description=...)`` nor an attribute docstring."""
    missing: list[str] = []
    for section in sections(model)[0]:
        texts = attribute_docstrings(section.model)
        for name, field in section.model.model_fields.items():
            if not (field.description or texts.get(name)):
                missing.append(
                    f"{section.model.__name__}.{name} ({section.path}): no description; add a string below the field"
                )
    return missing


def render(model: type[BaseModel] | None = None) -> str:
    """The page, from the models as they are now (deterministic)."""
    found, schema = sections(model)
    defs = schema.get("$defs", {})
    links = {section.model.__name__: section for section in found}
    lines = [
        "# Configuration reference",
        "",
        f"*Generated by `{COMMAND}` from the pydantic models in `plugins/azureml_retrain/config.py`:",
        "change those and run it again, do not edit this page.*",
        "",
        "Each retrained model is one YAML file, `dags/retraining/<model>.yaml`; the DAG file "
        "`dags/retraining_dags.py` builds the DAG `retrain_<model>` from it. A file is checked when it is "
        "parsed, and each error names the file, the field and the fix. Check one before you commit it:",
        "",
        "```bash",
        ".venv/bin/python -m azureml_retrain.config check dags/retraining/<model>.yaml",
        "```",
        "",
        f"`{EXAMPLE}` is a complete example. Besides the bounds listed here, the checks cover what a schema "
        "cannot say: metric names are Studio's for the kind of model, thresholds and guards lie in the metric's "
        "range, the time zone is an IANA name, the schedule fires within a year, container names follow "
        "Azure's rules, and `{window_start}` / `{window_end}` are the only placeholders. A field a model does "
        "not have is an error.",
        "",
        "Sections: " + ", ".join(f"[{section.title}](#{section.anchor})" for section in found),
        "",
    ]
    for section in found:
        own = defs.get(section.model.__name__, schema) if section.path != "top level" else schema
        required = set(own.get("required", []))
        texts = attribute_docstrings(section.model)
        summary = " ".join(inspect.cleandoc(section.model.__doc__ or "").split())
        summary = re.sub(r"``(.+?)``", r"`\1`", re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", summary))
        lines += [f"## {section.title}", "", summary, ""]
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, field_schema in own.get("properties", {}).items():
            field = section.model.model_fields[name]
            description = field.description or texts.get(name, "")
            bounds = bounds_text(field_schema)
            type_cell = type_text(field_schema, links) + (f" ({bounds})" if bounds else "")
            default = default_text(section.model, name, field_schema, name in required)
            lines.append(f"| `{name}` | {cell(type_cell)} | {cell(default)} | {cell(description)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is stale")
    args = parser.parse_args(argv)
    # Importing Airflow creates its home's folders: the project's, not ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", str(AIRFLOW_HOME))
    found = undescribed()
    for problem in found:
        print(problem, file=sys.stderr)
    page = render()
    stale = not PAGE.exists() or PAGE.read_text() != page
    if args.check:
        if stale:
            print(f"{PAGE.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if stale or found else 0
    if stale:
        PAGE.write_text(page)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
