"""Fuzz every route family of the emulator over real HTTP (the session's emulator process).

Each example sends an arbitrary body (JSON of any shape, near-valid request shapes with wrong types,
bytes that are not JSON), odd query strings, path segments and ``Authorization`` headers. The
emulator must never answer 5xx (no fault is injected here; the documented 501 ``NotImplemented`` is
the one exception), every error must be the plane's documented envelope, and it must stay up.
Derandomized: CI sees the same examples every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from support.emulator import RunningEmulator
from support.fuzzing import (
    ASCII_TEXT,
    FUZZ_SETTINGS,
    JSON_VALUES,
    SHORT_TEXT,
    auth_headers,
    bodies,
    check_answer,
    queries,
    segments,
    usually,
)

pytestmark = pytest.mark.integration

ARM_VERSIONS = ["2017-01-01", "2016-05-01-preview"]
ARM_SCOPE = "https://management.azure.com/.default"
EXAMPLES = 100


class Targets:
    """Real ids, keys and a token from the running emulator, so examples reach past the lookups."""

    def __init__(self, emulator: RunningEmulator) -> None:
        self.url = emulator.url
        state = emulator.admin("GET", "state").json()
        workspace = state["workspaces"][0]
        self.workspace_id = workspace["id"]
        self.workspace_token = workspace["authorization_token"]
        self.classic_services = [s["id"] for s in workspace["web_services"]]
        self.endpoint_names = sorted({e["name"] for s in workspace["web_services"] for e in s["endpoints"]})
        endpoints = [e for s in workspace["web_services"] for e in s["endpoints"]]
        self.classic_planes = [(workspace["id"], e["service_id"]) for e in endpoints]
        self.arm = state["arm_web_services"]
        self.arm_planes = [(s["subscription"], s["data_plane_id"]) for s in self.arm]
        # (path prefix, owner, service id, key) of every data plane.
        self.planes = [
            ("/workspaces", workspace["id"], e["service_id"], e["primary_key"])
            for s in workspace["web_services"]
            for e in s["endpoints"]
        ] + [("/subscriptions", s["subscription"], s["data_plane_id"], s["primary_key"]) for s in self.arm]
        kinds = [s["kind"] for s in workspace["web_services"] for e in s["endpoints"]] + [s["kind"] for s in self.arm]
        self.predictive_planes = [p for p, kind in zip(self.planes, kinds, strict=True) if kind == "predictive"]
        self.training_planes = [p for p, kind in zip(self.planes, kinds, strict=True) if kind == "training"]
        self.keys = [e["primary_key"] for e in endpoints] + [s["primary_key"] for s in self.arm]
        tenant = state["tenants"][0]
        principal = tenant["service_principals"][0]
        self.tenant, self.client_id, self.client_secret = (
            tenant["id"],
            principal["client_id"],
            principal["client_secret"],
        )
        answer = requests.post(
            f"{self.url}/{self.tenant}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "scope": ARM_SCOPE,
            },
            timeout=30,
        )
        answer.raise_for_status()
        self.arm_token = answer.json()["access_token"]


@pytest.fixture
def targets(emulator: RunningEmulator) -> Iterator[Targets]:
    assert emulator.admin("GET", "faults").json() == {"rules": [], "jobs": [], "operations": []}
    yield Targets(emulator)
    # Still up, and no fuzz example left a fault or a 5xx in the request log.
    assert requests.get(f"{emulator.url}/_emulator/health", timeout=10).json() == {"status": "ok"}
    logged = emulator.admin("GET", "requests").json()["requests"]
    server_errors = [r for r in logged if (r["status"] or 0) >= 500 and r["status"] != 501]
    assert not server_errors, server_errors[:5]
    emulator.admin("DELETE", "faults")
    emulator.admin("POST", "reset")


def reset(targets: Targets) -> None:
    requests.post(f"{targets.url}/_emulator/reset", timeout=30).raise_for_status()


def send(
    base: str, method: str, path: str, *, params: dict[str, str], headers: dict[str, str], body: bytes | None
) -> requests.Response:
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    return requests.request(method, base + path, params=params, headers=headers, data=body, timeout=30)


# --- near-valid shapes (right member names, arbitrary values) ------------------------------------------

REFERENCE = st.fixed_dictionaries(
    {},
    optional={
        "ConnectionString": ASCII_TEXT | JSON_VALUES,
        "RelativeLocation": ASCII_TEXT | JSON_VALUES,
        "BaseLocation": ASCII_TEXT | JSON_VALUES,
        "SasBlobToken": ASCII_TEXT | JSON_VALUES,
    },
)
PORTS = st.dictionaries(
    st.sampled_from(["input1", "output1", "output2", "Input1", "x"]), REFERENCE | JSON_VALUES, max_size=3
)
NEAR_VALID_BES = st.fixed_dictionaries(
    {
        "Inputs": st.fixed_dictionaries({"input1": REFERENCE}),
        "Outputs": st.fixed_dictionaries({"output1": REFERENCE, "output2": REFERENCE}),
    },
    optional={
        "GlobalParameters": st.dictionaries(st.sampled_from(["Number of trees", "Training window"]), JSON_VALUES)
    },
)
BES_BODY = NEAR_VALID_BES | st.fixed_dictionaries(
    {},
    optional={
        "Inputs": PORTS | JSON_VALUES,
        "Outputs": PORTS | JSON_VALUES,
        "GlobalParameters": st.dictionaries(SHORT_TEXT, JSON_VALUES, max_size=3) | JSON_VALUES,
    },
)
COLUMNS = ["Tenure", "MonthlyCharges", "SupportCalls", "ContractMonths", "Age", "RelativeCompactness"]
COLUMN_NAME = st.sampled_from(COLUMNS) | JSON_VALUES
CELL = st.sampled_from(["3", "110.5", "", "NaN", "1e400", "-0", " 7 "]) | JSON_VALUES


@st.composite
def aligned_table(draw: st.DrawFn) -> dict[str, Any]:
    """``ColumnNames`` + ``Values`` rows of the same width (so the request gets past the row check)."""
    names = draw(st.lists(COLUMN_NAME, min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELL, min_size=len(names), max_size=len(names)), min_size=1, max_size=3))
    return {"ColumnNames": names, "Values": rows}


TABLE = aligned_table() | st.fixed_dictionaries(
    {},
    optional={
        "ColumnNames": st.lists(COLUMN_NAME, max_size=6) | JSON_VALUES,
        "Values": st.lists(st.lists(JSON_VALUES, max_size=6), max_size=3) | JSON_VALUES,
    },
)
ROW_OBJECT = st.dictionaries(st.sampled_from(COLUMNS) | SHORT_TEXT, CELL, max_size=6)
RRS_BODY = st.fixed_dictionaries(
    {"Inputs": st.fixed_dictionaries({"input1": TABLE | st.lists(ROW_OBJECT, max_size=3)})},
    optional={"GlobalParameters": st.just({}) | JSON_VALUES},
) | st.fixed_dictionaries(
    {},
    optional={
        "Inputs": st.dictionaries(
            st.sampled_from(["input1", "x"]), TABLE | st.lists(ROW_OBJECT, max_size=3) | JSON_VALUES, max_size=2
        )
        | JSON_VALUES,
        "GlobalParameters": st.dictionaries(SHORT_TEXT, JSON_VALUES, max_size=2) | JSON_VALUES,
    },
)
LOCATION = st.fixed_dictionaries(
    {},
    optional={
        "BaseLocation": ASCII_TEXT | JSON_VALUES,
        "RelativeLocation": ASCII_TEXT | st.just("c/model.ilearner") | JSON_VALUES,
        "SasBlobToken": ASCII_TEXT | JSON_VALUES,
        "ConnectionString": ASCII_TEXT | JSON_VALUES,
    },
)
RESOURCE = st.fixed_dictionaries(
    {},
    optional={
        "Name": st.sampled_from(["Customer Churn [trained model]", "x"]) | JSON_VALUES,
        "Kind": JSON_VALUES,
        "Location": LOCATION | JSON_VALUES,
    },
)
PATCH_BODY = st.fixed_dictionaries(
    {}, optional={"Resources": st.lists(RESOURCE | JSON_VALUES, max_size=2) | JSON_VALUES}
)
PUT_BODY = st.fixed_dictionaries(
    {},
    optional={
        "Description": JSON_VALUES,
        "ThrottleLevel": st.sampled_from(["Low", "High", "low"]) | JSON_VALUES,
        "MaxConcurrentCalls": st.integers(-5, 300) | JSON_VALUES,
    },
)
REFRESH_BODY = st.fixed_dictionaries(
    {}, optional={"OverwriteResources": st.sampled_from(["True", "false", True]) | JSON_VALUES}
)
ASSET = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["Energy Efficiency [trained model]", "x"]) | JSON_VALUES,
        "type": st.sampled_from(["Resource", "Module"]) | JSON_VALUES,
        "locationInfo": st.fixed_dictionaries(
            {}, optional={"uri": ASCII_TEXT | JSON_VALUES, "credentials": JSON_VALUES}
        )
        | JSON_VALUES,
    },
)
ARM_BODY = st.fixed_dictionaries(
    {},
    optional={
        "location": JSON_VALUES,
        "tags": JSON_VALUES,
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "packageType": st.just("Graph") | JSON_VALUES,
                "title": JSON_VALUES,
                "assets": st.dictionaries(SHORT_TEXT, ASSET | JSON_VALUES, max_size=2) | JSON_VALUES,
                "storageAccount": st.fixed_dictionaries({}, optional={"name": JSON_VALUES, "key": JSON_VALUES})
                | JSON_VALUES,
                "package": JSON_VALUES,
                "input": JSON_VALUES,
                "output": JSON_VALUES,
                "parameters": JSON_VALUES,
                "realtimeConfiguration": JSON_VALUES,
                "commitmentPlan": JSON_VALUES,
                "keys": JSON_VALUES,
            },
        )
        | JSON_VALUES,
    },
)


# --- data plane: BES and RRS on classic and ARM services ----------------------------------------------


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
def test_bes_routes_never_fail_on_client_input(targets: Targets, data: st.DataObject) -> None:
    # Mostly a training service (BES on a predictive service is the documented 501).
    planes = st.sampled_from(targets.training_planes)
    prefix, owner, service, key = data.draw(
        st.integers(0, 3).flatmap(lambda n: planes if n < 3 else st.sampled_from(targets.planes))
    )
    owner = data.draw(usually(owner, segments()))
    service = data.draw(usually(service, segments()))
    job = data.draw(segments("0" * 32, "f" * 32))
    route = data.draw(st.sampled_from(["submit", "start", "status", "delete"]))
    method, path, body = {
        "submit": ("POST", "/jobs", data.draw(bodies(BES_BODY))),
        "start": ("POST", f"/jobs/{job}/start", data.draw(bodies())),
        "status": ("GET", f"/jobs/{job}", None),
        "delete": ("DELETE", f"/jobs/{job}", None),
    }[route]
    response = send(
        targets.url,
        method,
        f"{prefix}/{owner}/services/{service}{path}",
        params=data.draw(usually({"api-version": "2.0"}, queries(["2.0"]))),
        headers=data.draw(usually({"Authorization": f"Bearer {key}"}, auth_headers(*targets.keys))),
        body=body,
    )
    check_answer(response, "studio", context=route)
    if route == "submit" and response.status_code == 200:
        # A submitted job id is usable: its status answers.
        job_id = response.json()
        status = send(
            targets.url,
            "GET",
            f"{prefix}/{owner}/services/{service}/jobs/{job_id}",
            params={"api-version": "2.0"},
            headers=dict(response.request.headers),
            body=None,
        )
        assert status.status_code == 200, status.text


@settings(FUZZ_SETTINGS, max_examples=2 * EXAMPLES)
@given(data=st.data())
def test_rrs_execute_never_fails_on_client_input(targets: Targets, data: st.DataObject) -> None:
    # Mostly a predictive service (RRS on a training service is the documented 501).
    planes = st.sampled_from(targets.predictive_planes)
    prefix, owner, service, key = data.draw(
        st.integers(0, 3).flatmap(lambda n: planes if n < 3 else st.sampled_from(targets.planes))
    )
    shape = data.draw(st.sampled_from([{"details": "true"}, {}, {"format": "swagger"}]))
    params = {**data.draw(queries(["2.0"], details=["true", "false"], format=["swagger", "SWAGGER"])), **shape}
    if data.draw(usually(True, st.just(False))):
        params["api-version"] = "2.0"
    response = send(
        targets.url,
        "POST",
        f"{prefix}/{owner}/services/{data.draw(usually(service, segments()))}/execute",
        params=params,
        headers=data.draw(usually({"Authorization": f"Bearer {key}"}, auth_headers(*targets.keys))),
        body=data.draw(bodies(RRS_BODY)),
    )
    check_answer(response, "studio", context=str(shape))


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
def test_swagger_route_never_fails(targets: Targets, data: st.DataObject) -> None:
    prefix, owner, service, _ = data.draw(st.sampled_from(targets.planes))
    response = send(
        targets.url,
        "GET",
        f"{prefix}/{data.draw(st.just(owner) | segments())}/services/{data.draw(st.just(service) | segments())}"
        "/swagger.json",
        params=data.draw(queries(["2.0"])),
        headers=data.draw(auth_headers()),
        body=None,
    )
    check_answer(response, "studio")


# --- classic management -------------------------------------------------------------------------------


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
def test_classic_management_never_fails_on_client_input(targets: Targets, data: st.DataObject) -> None:
    workspace = data.draw(usually(targets.workspace_id, segments()))
    service = data.draw(segments(*targets.classic_services))
    name = data.draw(segments(*targets.endpoint_names, "newendpoint1", "Bad_Name"))
    base = f"/workspaces/{workspace}/webservices"
    route = data.draw(
        st.sampled_from(["list", "get_ws", "delete_ws", "list_ep", "get", "put", "patch", "delete", "refresh"])
    )
    method, path, body = {
        "list": ("GET", base, None),
        "get_ws": ("GET", f"{base}/{service}", None),
        "delete_ws": ("DELETE", f"{base}/{service}", None),
        "list_ep": ("GET", f"{base}/{service}/endpoints", None),
        "get": ("GET", f"{base}/{service}/endpoints/{name}", None),
        "put": ("PUT", f"{base}/{service}/endpoints/{name}", data.draw(bodies(PUT_BODY))),
        "patch": ("PATCH", f"{base}/{service}/endpoints/{name}", data.draw(bodies(PATCH_BODY))),
        "delete": ("DELETE", f"{base}/{service}/endpoints/{name}", None),
        "refresh": ("POST", f"{base}/{service}/endpoints/{name}/refresh", data.draw(bodies(REFRESH_BODY))),
    }[route]
    response = send(
        targets.url,
        method,
        path,
        params=data.draw(queries(["2.0"])),
        headers=data.draw(usually({"Authorization": f"Bearer {targets.workspace_token}"}, auth_headers(*targets.keys))),
        body=body,
    )
    check_answer(response, "studio", context=route)
    if method == "DELETE" and response.status_code == 200:
        reset(targets)  # deleted a seeded resource: later examples need it back


# --- ARM -------------------------------------------------------------------------------------------------


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
def test_arm_never_fails_on_client_input(targets: Targets, data: st.DataObject) -> None:
    service = data.draw(st.sampled_from(targets.arm))
    subscription = data.draw(usually(service["subscription"], segments()))
    group = data.draw(usually(service["resource_group"], segments()))
    name = data.draw(usually(service["name"], segments("energy-new")))
    provider = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.MachineLearning"
    route = data.draw(
        st.sampled_from(["get", "put", "patch", "delete", "listkeys", "list", "list_sub", "asyncop", "asyncop_result"])
    )
    operations = f"/subscriptions/{subscription}/providers/Microsoft.MachineLearning/locations/"
    method, path, body = {
        "get": ("GET", f"{provider}/webServices/{name}", None),
        "put": ("PUT", f"{provider}/webServices/{name}", data.draw(bodies(ARM_BODY))),
        "patch": ("PATCH", f"{provider}/webServices/{name}", data.draw(bodies(ARM_BODY))),
        "delete": ("DELETE", f"{provider}/webServices/{name}", None),
        "listkeys": ("GET", f"{provider}/webServices/{name}/listKeys", None),
        "list": ("GET", f"{provider}/webServices", None),
        "list_sub": ("GET", f"/subscriptions/{subscription}/providers/Microsoft.MachineLearning/webServices", None),
        "asyncop": (
            "GET",
            f"{operations}{data.draw(segments('southcentralus'))}/operationsStatus/{data.draw(segments())}",
            None,
        ),
        "asyncop_result": (
            "GET",
            f"{operations}{data.draw(segments('southcentralus'))}/operationResults/{data.draw(segments())}",
            None,
        ),
    }[route]
    response = send(
        targets.url,
        method,
        path,
        params=data.draw(usually({"api-version": ARM_VERSIONS[0]}, queries(ARM_VERSIONS))),
        headers=data.draw(usually({"Authorization": f"Bearer {targets.arm_token}"}, auth_headers())),
        body=body,
    )
    check_answer(response, "arm", context=route)
    for header in ("Azure-AsyncOperation", "Location"):
        operation = response.headers.get(header)
        if operation:
            # The operation the emulator handed out answers too.
            followed = requests.get(operation, headers={"Authorization": f"Bearer {targets.arm_token}"}, timeout=30)
            check_answer(followed, "arm", context=f"follow {header}")
    if method == "DELETE" and response.status_code == 202 and name.lower() == service["name"].lower():
        reset(targets)  # a seeded service was deleted (a DELETE of another name is a 202 too)


# --- the token authority ------------------------------------------------------------------------------

FORM_VALUE = st.one_of(ASCII_TEXT, st.text(max_size=10))


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
def test_authority_never_fails_on_client_input(targets: Targets, data: st.DataObject) -> None:
    tenant = data.draw(usually(targets.tenant, segments()))
    if data.draw(st.booleans()):
        response = send(
            targets.url,
            "GET",
            f"/{tenant}/v2.0/.well-known/openid-configuration",
            params=data.draw(queries([])),
            headers={},
            body=None,
        )
        check_answer(response, "aad", context="openid")
        return
    form = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "grant_type": st.just("client_credentials") | FORM_VALUE,
                "client_id": st.just(targets.client_id) | FORM_VALUE,
                "client_secret": st.just(targets.client_secret) | FORM_VALUE,
                "scope": st.just(ARM_SCOPE) | FORM_VALUE,
            },
        )
    )
    raw = data.draw(st.none() | st.binary(max_size=48))
    response = requests.post(
        f"{targets.url}/{tenant}/oauth2/v2.0/token",
        data=raw if raw is not None else form,
        headers=data.draw(auth_headers()),
        timeout=30,
    )
    check_answer(response, "aad", context="token")


# --- admin routes (no auth; loopback only) -----------------------------------------------------------


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
def test_admin_routes_never_fail_on_client_input(targets: Targets, data: st.DataObject) -> None:
    fault = st.fixed_dictionaries(
        {},
        optional={
            "route": st.sampled_from(["bes.submit", "nope"]) | JSON_VALUES,
            "method": JSON_VALUES,
            "path": st.sampled_from(["(", "[a-", "*", ".*"]) | JSON_VALUES,
            "action": JSON_VALUES
            | st.fixed_dictionaries({"kind": st.sampled_from(["status", "delay", "drop", "malformed", "x"])}),
            "sequence": JSON_VALUES,
            "count": JSON_VALUES,
            "rate": JSON_VALUES,
            "seed": JSON_VALUES,
        },
    )
    job_fault = st.fixed_dictionaries(
        {},
        optional={
            "outcome": st.sampled_from(["fail", "hang"]) | JSON_VALUES,
            "details": JSON_VALUES,
            "count": JSON_VALUES,
        },
    )
    operation_fault = st.fixed_dictionaries(
        {}, optional={"outcome": st.sampled_from(["hang", "fail"]) | JSON_VALUES, "count": JSON_VALUES}
    )
    knobs = st.dictionaries(
        st.sampled_from(["job_min_duration_seconds", "operation_min_duration_seconds", "token_lifetime_seconds"])
        | SHORT_TEXT,
        JSON_VALUES,
        max_size=3,
    )
    route = data.draw(
        st.sampled_from(
            ["requests", "settings", "patch_settings", "faults", "add", "jobs", "operations", "release", "remove"]
        )
    )
    method, path, body = {
        "requests": ("GET", "/_emulator/requests", None),
        "settings": ("GET", "/_emulator/settings", None),
        "patch_settings": ("PATCH", "/_emulator/settings", data.draw(bodies(knobs))),
        "faults": ("GET", "/_emulator/faults", None),
        "add": ("POST", "/_emulator/faults", data.draw(bodies(fault))),
        "jobs": ("POST", "/_emulator/faults/jobs", data.draw(bodies(job_fault))),
        "operations": ("POST", "/_emulator/faults/operations", data.draw(bodies(operation_fault))),
        "release": ("POST", f"/_emulator/operations/{data.draw(segments())}/release", None),
        "remove": ("DELETE", f"/_emulator/faults/{data.draw(segments())}", None),
    }[route]
    extra = {"route": data.draw(ASCII_TEXT)} if route == "requests" else {}
    try:
        response = send(targets.url, method, path, params=extra, headers=data.draw(auth_headers()), body=body)
        check_answer(response, "studio", context=route)
    finally:
        # A valid fault rule or knob from this example must not bleed into the next one.
        requests.delete(f"{targets.url}/_emulator/faults", timeout=30)
        if route in ("patch_settings", "operations"):
            requests.post(f"{targets.url}/_emulator/reset", timeout=30)


def test_unknown_paths_and_methods_answer_the_envelope(targets: Targets) -> None:
    for method, path in [("GET", "/"), ("PUT", "/_emulator/health"), ("OPTIONS", "/workspaces/x"), ("GET", "/%ff")]:
        check_answer(send(targets.url, method, path, params={}, headers={}, body=None), "studio")
