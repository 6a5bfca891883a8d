"""Hypothesis strategies and checks shared by the fuzz tests (tests/fuzz/).

Everything is bounded (few leaves, short text) so a run stays within its time budget, and the
profile is derandomized so CI sees the same examples on every run.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

import requests
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st

# One profile for every fuzz test: reproducible (derandomize), no per-example deadline (a request to
# a real server has jitter), and function-scoped fixtures are fine (they are reset once per test,
# not per example, on purpose: the examples must not depend on a fresh state).
FUZZ_SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Printable ASCII without control characters: anything requests can put in a header or a URL.
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SHORT_TEXT = st.text(max_size=12)
ASCII_TEXT = st.text(PRINTABLE, max_size=24)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | SHORT_TEXT
)
# Any JSON value (NaN/Infinity included: Python's json module writes and reads them).
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(SHORT_TEXT, children, max_size=4),
    max_leaves=12,
)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def bodies(*shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes | None]:
    """A request body: half the time a near-valid shape (when given), else no body, arbitrary JSON
    or bytes that are not JSON."""
    anything = st.one_of(
        st.none(),
        st.just(b""),
        st.binary(max_size=48),
        st.sampled_from([b"{", b"[1,", b"\xff\xfe", b"null", b'"x"', b"{}", b"[]", b"NaN", b"   "]),
        JSON_VALUES.map(json_bytes),
    )
    if not shaped:
        return anything
    near_valid = st.one_of(*shaped).map(json_bytes)
    return st.integers(0, 1).flatmap(lambda n: near_valid if n == 0 else anything)


def usually(valid: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four (so examples get past auth and lookups), else ``other``."""
    return st.integers(0, 3).flatmap(lambda n: st.just(valid) if n < 3 else other)


def segments(*valid: str) -> st.SearchStrategy[str]:
    """A URL path segment: a real id (to get past lookups) or arbitrary text, percent-encoded."""
    odd = st.text(min_size=1, max_size=40).map(lambda s: quote(s, safe=""))
    options: list[st.SearchStrategy[str]] = [odd, st.sampled_from(["..", "%2F", "%00", "a" * 300, "DEFAULT"])]
    if valid:
        options.insert(0, st.sampled_from(list(valid)))
    return st.one_of(*options)


def auth_headers(*valid_tokens: str) -> st.SearchStrategy[dict[str, str]]:
    """``Authorization`` variants: a valid token, none, another scheme, empty, garbage."""
    options: list[st.SearchStrategy[dict[str, str]]] = [
        st.just({}),
        ASCII_TEXT.map(lambda t: {"Authorization": f"Bearer {t}".strip()}),
        ASCII_TEXT.map(lambda t: {"Authorization": t.strip()}),
        st.sampled_from(["Basic dXNlcjpwYXNz", "Bearer", "bearer", "Bearer a b c", "BEARER  x"]).map(
            lambda t: {"Authorization": t}
        ),
    ]
    if valid_tokens:
        options.insert(0, st.sampled_from([{"Authorization": f"Bearer {t}"} for t in valid_tokens]))
    return st.one_of(*options)


def queries(api_versions: list[str], **extra: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Query parameters: api-version right, wrong or missing; known extras with odd values; junk keys."""
    version = st.sampled_from(api_versions) | ASCII_TEXT if api_versions else ASCII_TEXT
    optional = {name: st.sampled_from(values) | ASCII_TEXT for name, values in extra.items()}
    return st.fixed_dictionaries(
        {},
        optional={"api-version": version, **optional},
    ).flatmap(lambda q: st.dictionaries(ASCII_TEXT, ASCII_TEXT, max_size=2).map(lambda junk: {**junk, **q}))


# --- checking answers -------------------------------------------------------------------------------

STUDIO_CLASSES = frozenset(
    {
        "BadArgument",
        "BadUserArgument",
        "InvalidOperation",
        "Unauthorized",
        "NotFound",
        "MethodNotAllowed",
        "TooManyRequests",
        "InternalError",
        "NotImplemented",
        "ServiceUnavailable",
    }
)


def envelope_kind(response: requests.Response) -> str | None:
    """Which documented error envelope the body is ("studio", "arm", "aad"), or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str) and isinstance(body.get("error_description"), str):
        return "aad"
    if (
        not isinstance(error, dict)
        or not isinstance(error.get("code"), str)
        or not isinstance(error.get("message"), str)
    ):
        return None
    details = error.get("details")
    if (
        error["code"] in STUDIO_CLASSES
        and isinstance(details, list)
        and details
        and all(
            isinstance(d, dict) and isinstance(d.get("code"), str) and isinstance(d.get("message"), str)
            for d in details
        )
    ):
        return "studio"
    # ARM: code and message, details a list, target a string when present (absent, never null).
    return "arm" if isinstance(details, list) and isinstance(error.get("target", ""), str) else None


def _detail_code(response: requests.Response) -> str:
    """The most specific error code of a response (for hypothesis' statistics)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        details = error.get("details")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            return str(details[0].get("code"))
        return str(error.get("code"))
    return str(error or "")


def check_answer(response: requests.Response, *envelopes: str, context: str = "") -> None:
    """No 5xx (but the documented 501 NotImplemented); every error is a documented envelope."""
    where = f"{response.request.method} {response.request.path_url[:200]} {context}"
    status = response.status_code
    if currently_in_test_context():
        event(f"{context} -> {status} {_detail_code(response)}")
    if status == 501:
        assert envelope_kind(response) == "studio", f"{where}: 501 without the Studio envelope: {response.text[:300]}"
        assert response.json()["error"]["code"] == "NotImplemented", where
        return
    assert status < 500, f"{where}: HTTP {status}: {response.text[:500]}"
    if 200 <= status < 400:
        return
    kind = envelope_kind(response)
    assert kind is not None, f"{where}: HTTP {status} body is not an error envelope: {response.text[:500]}"
    # Unknown paths and methods answer in the Studio envelope (one catch-all handler), but on Resource
    # Manager's paths, where they answer in its envelope like every other ARM error.
    studio_catch_all = (
        kind == "studio"
        and response.json()["error"]["code"] in ("NotFound", "MethodNotAllowed")
        and not resource_manager_path(response.request.path_url)
    )
    assert kind in envelopes or studio_catch_all, f"{where}: HTTP {status} in the {kind} envelope, expected {envelopes}"


def resource_manager_path(path_url: str) -> bool:
    """``/subscriptions/{sub}/resourceGroups/...``, ``/subscriptions/{sub}/providers/...`` or
    ``/providers/...``, as the server sees the path (percent-decoded, without the query)."""
    segments = unquote(path_url.split("?", 1)[0]).lower().split("/")
    if segments[:2] == ["", "providers"]:
        return True
    return (
        len(segments) > 3
        and segments[1] == "subscriptions"
        and segments[2] != ""
        and segments[3]
        in (
            "resourcegroups",
            "providers",
        )
    )
