"""The ARM surface as Microsoft's own runtime drives it: azure-mgmt-core's pipeline and poller.

Every generated azure-mgmt SDK sends its requests through an ``ARMPipelineClient`` (bearer tokens from
azure-identity, which azure-core sends over https only) and waits out long-running operations with
``LROPoller`` + ``ARMPolling``, accepting only the status codes the spec lists. The helpers below do
what a generated ``begin_create_or_update`` / ``begin_delete`` does, against the emulator's TLS
listener, and every body is checked against a JSON Schema derived from the 2017-01-01 spec
(``schemas/``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, map_error
from azure.core.pipeline import PipelineResponse, policies
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.policies import (
    ARMAutoResourceProviderRegistrationPolicy,
    ARMChallengeAuthenticationPolicy,
    ARMHttpLoggingPolicy,
)
from azure.mgmt.core.polling.arm_polling import ARMPolling

from support.emulator import ENERGY_COLUMNS, ENERGY_ROWS, DataPlane, RunningEmulator, table_request

API_VERSION = "2017-01-01"
SCOPE = "https://management.azure.com/.default"
POLL_INTERVAL = 0.05  # generated clients default to 30 s when the service sends no Retry-After
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "webservices-2017-01-01.schema.json").read_text())
# What generated clients accept from each operation's first response (anything else raises).
PUT_STATUSES, PATCH_STATUSES, DELETE_STATUSES = (200, 201), (200,), (202, 204)

_formats = jsonschema.FormatChecker()


@_formats.checks("date-time", raises=ValueError)
def _is_rfc3339_date_time(value: object) -> bool:
    if not isinstance(value, str) or "T" not in value.upper():
        return False
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def check_schema(body: Any, definition: str) -> None:
    """``body`` is a valid ``definition`` of the spec (e.g. ``WebService``); the error names the member."""
    schema = {**SCHEMA, "$ref": f"#/$defs/{definition}"}
    jsonschema.Draft202012Validator(schema, format_checker=_formats).validate(body)


class ArmSdk:
    """The ``_*_initial`` request plus ``LROPoller`` of a generated azure-mgmt operation."""

    def __init__(self, emulator: RunningEmulator) -> None:
        credential = emulator.credential()
        # The policies of a generated client's configuration, in its order.
        pipeline_policies = [
            policies.RequestIdPolicy(),
            policies.HeadersPolicy(),
            policies.UserAgentPolicy(sdk_moniker="emulator-tests"),
            policies.ProxyPolicy(),
            policies.ContentDecodePolicy(),
            ARMAutoResourceProviderRegistrationPolicy(),
            policies.RedirectPolicy(),
            policies.RetryPolicy(retry_total=0),
            ARMChallengeAuthenticationPolicy(credential, SCOPE),
            policies.CustomHookPolicy(),
            policies.NetworkTraceLoggingPolicy(),
            policies.DistributedTracingPolicy(),
            policies.SensitiveHeaderCleanupPolicy(),
            ARMHttpLoggingPolicy(),
        ]
        self.client: ARMPipelineClient[Any, Any] = ARMPipelineClient(
            base_url=emulator.tls_url, policies=pipeline_policies, connection_verify=emulator.cert_path
        )
        self.tls_url = emulator.tls_url

    def run(self, method: str, url: str, body: Any = None, accepted: tuple[int, ...] = (200,)) -> PipelineResponse:
        """One request; a status the operation does not list raises, as in generated code."""
        params = {} if "api-version=" in url else {"api-version": API_VERSION}
        request = HttpRequest(method, self.client.format_url(url), params=params, json=body)
        pipeline_response: PipelineResponse = self.client._pipeline.run(request)  # as generated code does
        response = pipeline_response.http_response
        if response.status_code not in accepted:
            map_error(status_code=response.status_code, response=response, error_map={404: ResourceNotFoundError})
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return pipeline_response

    def get(self, path: str) -> Any:
        return self.run("GET", path).http_response.json()

    def begin(self, method: str, path: str, body: Any, accepted: tuple[int, ...]) -> LROPoller[Any]:
        initial = self.run(method, path, body, accepted)

        def final_body(pipeline_response: PipelineResponse) -> Any:
            response = pipeline_response.http_response
            return response.json() if response.content else None

        return LROPoller(self.client, initial, final_body, ARMPolling(POLL_INTERVAL))


@pytest.fixture
def sdk(emulator: RunningEmulator) -> ArmSdk:
    return ArmSdk(emulator)


def resource_path(emulator: RunningEmulator, kind: str, name: str | None = None) -> str:
    """The ARM path (no host) of a seeded service, or of another name in its resource group."""
    service = emulator.arm_service(kind)
    path = str(service["resource_url"]).removeprefix(emulator.url)
    return path if name is None else path.rsplit("/", 1)[0] + "/" + name


def trained_model(definition: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in definition["properties"]["assets"].values() if a["name"].endswith("[trained model]"))


def operation_url(poller: LROPoller[Any]) -> str:
    initial = poller.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
    return str(initial.headers["Azure-AsyncOperation"])


@pytest.fixture
def retrained_energy_model(emulator: RunningEmulator, azurite: str, upload: Callable[..., str], container: str) -> str:
    """A new energy model, trained by BES into Azurite: its blob URL, path-style, without a SAS
    (what a retraining pipeline puts into the ``[trained model]`` asset)."""
    training = emulator.arm_service("training")
    relative = upload("training/energy-window3.csv", dataset="energy", rows=200, window=3, seed=7)
    output = {"ConnectionString": azurite, "RelativeLocation": f"{container}/models/energy-w3.ilearner"}
    status = DataPlane(training["api_location"], training["primary_key"]).run(
        {
            "Inputs": {"input1": {"ConnectionString": azurite, "RelativeLocation": relative}},
            "Outputs": {
                "output1": output,
                "output2": {"ConnectionString": azurite, "RelativeLocation": f"{container}/models/eval.csv"},
            },
            "GlobalParameters": {"Training window": "window-3"},
        },
        timeout=60,
    )
    assert status["StatusCode"] == "Finished", status
    model = status["Results"]["output1"]
    uri = model["BaseLocation"] + model["RelativeLocation"]
    assert uri.startswith("http://127.0.0.1:") and "/devstoreaccount1/" in uri and "?" not in uri
    return str(uri)


def test_get_list_and_keys_match_the_spec(emulator, sdk):
    definition = sdk.get(resource_path(emulator, "predictive"))
    check_schema(definition, "WebService")
    assert "keys" not in definition["properties"] and "key" not in definition["properties"]["storageAccount"]
    columns = definition["properties"]["input"]["properties"]["input1"]["properties"]
    assert {c["type"] for c in columns.values()} == {"Number"}
    assert {c["format"] for c in columns.values()} == {"Double"}
    assert definition["properties"]["swaggerLocation"].startswith(sdk.tls_url + "/")
    group = sdk.get(resource_path(emulator, "predictive").rsplit("/", 1)[0])
    check_schema(group, "PaginatedWebServicesList")
    assert sorted(s["name"] for s in group["value"]) == ["energy-predictive", "energy-training"]
    keys = sdk.get(resource_path(emulator, "predictive") + "/listKeys")
    check_schema(keys, "WebServiceKeys")
    assert keys["primary"] == emulator.arm_service("predictive")["primary_key"]


def test_put_creates_and_updates_to_completion_over_tls(emulator, sdk):
    definition = sdk.get(resource_path(emulator, "predictive"))
    copy = resource_path(emulator, "predictive", "energy-sdk-copy")

    created = sdk.begin(
        "PUT", copy, {"location": definition["location"], "properties": definition["properties"]}, PUT_STATUSES
    )
    assert operation_url(created).startswith(sdk.tls_url + "/")
    result = created.result(timeout=60)
    assert created.status() == "Succeeded"
    check_schema(result, "WebService")
    assert result["properties"]["provisioningState"] == "Succeeded"
    operation = sdk.get(operation_url(created))
    check_schema(operation, "AsyncOperationStatus")
    assert (operation["provisioningState"], operation["percentComplete"]) == ("Succeeded", 100.0)

    # The definition as GET shows it, PUT back unchanged: an update.
    shown = sdk.get(copy)
    updated = sdk.begin("PUT", copy, shown, PUT_STATUSES)
    assert updated.polling_method()._initial_response.http_response.status_code == 200  # type: ignore[attr-defined]
    assert updated.result(timeout=60)["properties"]["provisioningState"] == "Succeeded"
    assert trained_model(sdk.get(copy)) == trained_model(shown)


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_the_powershell_retraining_flow_round_trips(emulator, sdk, retrained_energy_model, tmp_path, method):
    """Get-AzMlWebService, Export-AzMlWebService to a JSON file, edit the .ilearner uri, Import, then
    Update-AzMlWebService (PATCH) or New-AzMlWebService (PUT); then PUT the result back unchanged."""
    path = resource_path(emulator, "predictive")
    scoring = DataPlane(
        emulator.arm_service("predictive")["api_location"], emulator.arm_service("predictive")["primary_key"]
    )
    before = scoring.execute(table_request(ENERGY_COLUMNS, ENERGY_ROWS)).json()

    exported = tmp_path / "energy-predictive.json"
    exported.write_text(json.dumps(sdk.get(path), indent=2))
    imported = json.loads(
        exported.read_text().replace(
            trained_model(json.loads(exported.read_text()))["locationInfo"]["uri"], retrained_energy_model
        )
    )
    poller = sdk.begin(method, path, imported, PATCH_STATUSES if method == "PATCH" else PUT_STATUSES)
    result = poller.result(timeout=60)
    check_schema(result, "WebService")
    assert result["properties"]["provisioningState"] == "Succeeded"
    assert trained_model(sdk.get(path))["locationInfo"]["uri"] == retrained_energy_model
    assert scoring.execute(table_request(ENERGY_COLUMNS, ENERGY_ROWS)).json() != before

    # Read back and sent again, unchanged: to the same service and as a new one. The uri is a blob
    # of the service's storage account (Azurite's, path-style), read with its key.
    shown = sdk.get(path)
    assert (
        sdk.begin("PUT", path, shown, PUT_STATUSES).result(timeout=60)["properties"]["provisioningState"] == "Succeeded"
    )
    copy = resource_path(emulator, "predictive", "energy-retrained-copy")
    created = sdk.begin("PUT", copy, shown, PUT_STATUSES)
    assert created.polling_method()._initial_response.http_response.status_code == 201  # type: ignore[attr-defined]
    assert created.result(timeout=60)["properties"]["provisioningState"] == "Succeeded"
    assert trained_model(sdk.get(copy))["locationInfo"]["uri"] == retrained_energy_model


def test_patch_of_tags_completes(emulator, sdk):
    path = resource_path(emulator, "training")
    poller = sdk.begin("PATCH", path, {"tags": {"team": "ml"}}, PATCH_STATUSES)
    assert operation_url(poller).startswith(sdk.tls_url + "/")
    assert poller.result(timeout=60)["tags"] == {"team": "ml"}
    assert sdk.get(path)["tags"] == {"team": "ml"}


def test_a_failing_operation_ends_failed_through_the_poller(emulator, sdk, upload, blob_service):
    path = resource_path(emulator, "predictive")
    definition = sdk.get(path)
    asset_id = next(k for k, a in definition["properties"]["assets"].items() if a["name"].endswith("[trained model]"))
    old_uri = definition["properties"]["assets"][asset_id]["locationInfo"]["uri"]
    bad_uri = blob_service.url + upload("models/broken.ilearner", b"not a model")
    patch = {
        "properties": {
            "assets": {asset_id: {**definition["properties"]["assets"][asset_id], "locationInfo": {"uri": bad_uri}}}
        }
    }

    poller = sdk.begin("PATCH", path, patch, PATCH_STATUSES)
    with pytest.raises(HttpResponseError) as failure:
        poller.result(timeout=60)
    assert poller.status() == "Failed"
    assert failure.value.error is not None and failure.value.error.code == "IncompatibleModel"
    assert "IncompatibleModel" in str(failure.value)
    operation = sdk.get(operation_url(poller))
    check_schema(operation, "AsyncOperationStatus")
    assert operation["errorInfo"]["code"] == "IncompatibleModel"
    assert operation["errorInfo"]["target"] == f"properties.assets.{asset_id}.locationInfo.uri"
    after = sdk.get(path)
    check_schema(after, "WebService")
    assert after["properties"]["provisioningState"] == "Failed"
    assert after["properties"]["assets"][asset_id]["locationInfo"]["uri"] == old_uri


def test_delete_completes_also_for_a_service_that_does_not_exist(emulator, sdk):
    path = resource_path(emulator, "training")
    poller = sdk.begin("DELETE", path, None, DELETE_STATUSES)
    assert operation_url(poller).startswith(sdk.tls_url + "/")
    poller.result(timeout=60)
    assert poller.status() == "Succeeded"
    check_schema(sdk.get(operation_url(poller)), "AsyncOperationStatus")
    with pytest.raises(ResourceNotFoundError):
        sdk.get(path)
    again = sdk.begin("DELETE", path, None, DELETE_STATUSES)
    again.result(timeout=60)
    assert again.status() == "Succeeded"
