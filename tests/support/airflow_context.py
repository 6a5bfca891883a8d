"""Minimal stand-ins for the parts of an Airflow task context that operators touch in unit tests."""

from __future__ import annotations

from typing import Any


class DictStateStore:
    """The task-instance state store API (get/set) over a dict."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(initial or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.data[key] = value


class RecordingTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def make_context(store: DictStateStore | None = None, **extra: Any) -> dict[str, Any]:
    return {"ti": RecordingTI(), "task_state_store": store if store is not None else DictStateStore(), **extra}
