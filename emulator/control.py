"""What the admin API controls: fault rules, job outcome overrides, timing knobs, the request log.

Fault rules match a route by its stable name (``bes.submit``, ``rrs.execute``, ...) or by method
and a path regular expression, and answer with an injected status (429/500/503...), a delay, a
dropped connection or a malformed body: either a ``sequence`` of steps (``null`` = serve normally)
consumed one per matching request, an ``action`` for the next ``count`` matches (or all), or an
``action`` taken with probability ``rate``. Everything is off until a test turns it on.
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultAction(Strict):
    kind: Literal["status", "delay", "drop", "malformed"]
    status: int = Field(default=503, ge=400, le=599)
    retry_after_seconds: int | None = Field(default=None, ge=0)
    delay_seconds: float = Field(default=0.0, ge=0.0, le=600.0)


class FaultRuleSpec(Strict):
    route: str | None = None
    method: str | None = None
    path: str | None = None  # regular expression, matched against the whole path
    action: FaultAction | None = None
    sequence: list[FaultAction | None] | None = None
    count: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> FaultRuleSpec:
        if (self.action is None) == (self.sequence is None):
            raise ValueError("give exactly one of 'action' and 'sequence'")
        if self.route is None and self.path is None:
            raise ValueError("give 'route' or 'path'")
        if self.sequence is not None and (self.count is not None or self.rate is not None):
            raise ValueError("'count' and 'rate' go with 'action', not 'sequence'")
        if self.path is not None:
            re.compile(self.path)
        return self


class JobFaultSpec(Strict):
    outcome: Literal["fail", "hang"]
    details: str = "The job failed (forced by the emulator's fault injection)."
    service_id: str | None = None  # data-plane service id; None = any
    count: int | None = Field(default=None, ge=1)
    # "hang" only: hold the job Running until its status has been read this many times, then let it
    # run to its normal end; None = until it is cancelled or released. Lets a test meet a running
    # job whatever the machine's speed (training a small dataset can end before the second poll).
    status_reads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> JobFaultSpec:
        if self.status_reads is not None and self.outcome != "hang":
            raise ValueError("'status_reads' goes with the outcome 'hang'")
        return self


class OperationFaultSpec(Strict):
    """Resource Manager operations: ``hang`` keeps the next ``count`` (None = every) PUT, PATCH or
    DELETE operation running until it is released through the admin API (or the emulator is reset)."""

    outcome: Literal["hang"]
    count: int | None = Field(default=None, ge=1)


class Knobs(Strict):
    job_min_duration_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    operation_min_duration_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    token_lifetime_seconds: int = Field(default=3600, ge=1, le=86400)


class _Rule:
    def __init__(self, spec: FaultRuleSpec) -> None:
        self.id = uuid.uuid4().hex
        self.spec = spec
        self.pattern = re.compile(spec.path) if spec.path else None
        self.random = random.Random(spec.seed)
        self.steps: deque[FaultAction | None] | None = None
        if spec.sequence is not None:
            self.steps = deque(spec.sequence)
        elif spec.count is not None:
            self.steps = deque([spec.action] * spec.count)
        self.matched = 0

    def matches(self, route: str | None, method: str, path: str) -> bool:
        spec = self.spec
        if spec.route is not None and spec.route != route:
            return False
        if spec.method is not None and spec.method.upper() != method:
            return False
        return self.pattern is None or self.pattern.fullmatch(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.steps is not None and not self.steps

    def take(self) -> FaultAction | None:
        self.matched += 1
        if self.steps is not None:
            return self.steps.popleft()
        if self.spec.rate is not None and self.random.random() >= self.spec.rate:
            return None
        return self.spec.action

    def describe(self) -> dict[str, Any]:
        remaining = len(self.steps) if self.steps is not None else None
        return {"id": self.id, **self.spec.model_dump(), "matched": self.matched, "remaining": remaining}


class Control:
    """Thread-safe holder of the admin-controlled behaviour."""

    def __init__(self, knobs: Knobs | None = None, request_log_size: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._initial_knobs = knobs or Knobs()
        self.knobs = self._initial_knobs
        self._rules: list[_Rule] = []
        self._job_faults: list[list[Any]] = []  # [spec, remaining count or None]
        self._operation_faults: list[list[Any]] = []  # [spec, remaining count or None]
        # Counts resets: a held operation goes on once it changes (clearing the faults leaves it held,
        # so a test can still look at it after removing the faults it injected).
        self.resets = 0
        self._requests: deque[dict[str, Any]] = deque(maxlen=request_log_size)

    def reset(self) -> None:
        with self._lock:
            self.knobs = self._initial_knobs
            self._rules.clear()
            self._job_faults.clear()
            self._operation_faults.clear()
            self.resets += 1
            self._requests.clear()

    # fault rules
    def add_rule(self, spec: FaultRuleSpec) -> dict[str, Any]:
        rule = _Rule(spec)
        with self._lock:
            self._rules.append(rule)
        return rule.describe()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.describe() for rule in self._rules]

    def remove_rule(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [rule for rule in self._rules if rule.id != rule_id]
            return len(self._rules) != before

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self._job_faults.clear()
            self._operation_faults.clear()

    def fault_for(self, route: str | None, method: str, path: str) -> FaultAction | None:
        """The injected behaviour for this request, consuming a sequence step; None = serve."""
        with self._lock:
            for rule in self._rules:
                if not rule.exhausted and rule.matches(route, method, path):
                    return rule.take()
        return None

    # job outcome overrides
    def add_job_fault(self, spec: JobFaultSpec) -> None:
        with self._lock:
            self._job_faults.append([spec, spec.count])

    def take_job_fault(self, service_id: str) -> JobFaultSpec | None:
        with self._lock:
            for entry in self._job_faults:
                spec, remaining = entry
                if spec.service_id not in (None, service_id) or remaining == 0:
                    continue
                if remaining is not None:
                    entry[1] = remaining - 1
                return spec  # type: ignore[no-any-return]
        return None

    # Resource Manager operation holds
    def add_operation_fault(self, spec: OperationFaultSpec) -> None:
        with self._lock:
            self._operation_faults.append([spec, spec.count])

    def take_operation_fault(self) -> OperationFaultSpec | None:
        with self._lock:
            for entry in self._operation_faults:
                spec, remaining = entry
                if remaining == 0:
                    continue
                if remaining is not None:
                    entry[1] = remaining - 1
                return spec  # type: ignore[no-any-return]
        return None

    def operation_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**spec.model_dump(), "remaining": remaining} for spec, remaining in self._operation_faults]

    def job_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**spec.model_dump(), "remaining": remaining} for spec, remaining in self._job_faults]

    # knobs
    def set_knobs(self, changes: dict[str, Any]) -> Knobs:
        with self._lock:
            self.knobs = Knobs.model_validate({**self.knobs.model_dump(), **changes})
            return self.knobs

    # request log: route name, method, path, status, time; never headers or query strings
    def log_request(self, route: str | None, method: str, path: str, status: int | None, seconds: float) -> None:
        entry = {
            "route": route,
            "method": method,
            "path": path,
            "status": status,
            "time": datetime.now(UTC).isoformat(),
            "duration_ms": round(seconds * 1000, 1),
        }
        with self._lock:
            self._requests.append(entry)

    def requests(self, route: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [entry for entry in self._requests if route is None or entry["route"] == route]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
