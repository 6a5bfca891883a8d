"""Pydantic validation errors as people read them: each names the field (dotted path), says what is
wrong, and, for a misspelt field, which field was probably meant."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        found.extend(_models_in(argument))
    return found


def _model_at(root: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields are validated at ``path`` (list indexes and union tags skipped)."""
    candidates: list[type[BaseModel]] = [root]
    for part in path:
        if isinstance(part, int):
            continue
        by_tag = [c for c in candidates if part not in c.model_fields and _tag_of(c) == part]
        if by_tag:
            candidates = by_tag
            continue
        following: list[type[BaseModel]] = []
        for model in candidates:
            field = model.model_fields.get(str(part))
            if field is not None:
                following.extend(_models_in(field.annotation))
        if not following:
            return None
        candidates = following
    return candidates[0] if len(candidates) == 1 else None


def _tag_of(model: type[BaseModel]) -> str | None:
    """The discriminator value of a tagged union member (its ``kind: Literal[...]``)."""
    field = model.model_fields.get("kind")
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return None
    (tag, *_) = typing.get_args(field.annotation)
    return str(tag)


def _location(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path)


def explain(error: ValidationError, root: type[BaseModel], what: str) -> list[tuple[str, str]]:
    """``(field, message)`` for each error of validating ``root`` (``what`` names it in messages,
    e.g. "a retraining config"); field is "" for the top level."""
    explained = []
    for item in error.errors():
        path = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden" and path:
            model = _model_at(root, path[:-1])
            parent = _location(path[:-1])
            message = f"not a field of {what}" if not parent else f"not a field of '{parent}'"
            if model is not None:
                fields = list(model.model_fields)
                close = difflib.get_close_matches(str(path[-1]), fields, n=1, cutoff=0.6)
                message += f"; did you mean {close[0]!r}?" if close else f"; its fields are: {', '.join(fields)}"
        explained.append((_location(path), message))
    return explained
