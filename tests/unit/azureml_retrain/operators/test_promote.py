from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import TaskDeferred

from azureml_retrain.exceptions import ConfigurationError, PromotionVerificationError
from azureml_retrain.operators.promote import (
    PatchEndpointOperator,
    UpdateWebServiceDefinitionOperator,
    find_trained_model_asset,
    input_locations,
)
from azureml_retrain.storage import StorageAccount
from azureml_retrain.triggers.arm_operation import ArmOperationTrigger
from support.airflow_context import make_context
from support.fake_transport import FakeTransport, Reply, install_arm, set_classic_management_connection

MGMT = "https://management.azureml.net"
RESOURCE = "Customer Churn [trained model]"
MODEL = "models/run7/model.ilearner"


@pytest.fixture(autouse=True)
def connections(monkeypatch):
    set_classic_management_connection(monkeypatch, MGMT)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZUREML_RESOURCE_MANAGER_DEFAULT",
        json.dumps(
            {
                "conn_type": "azureml_resource_manager",
                "host": "https://management.azure.com",
                "extra": {"subscription_id": "sub1", "resource_group": "rg1"},
            }
        ),
    )


def endpoint(relative_location: str | None, name: str = "retrain01") -> Reply:
    return Reply(
        200,
        {
            "Name": name,
            "ApiLocation": "https://ussouthcentral.services.azureml.net/workspaces/ws1/services/ep1",
            "PrimaryKey": "endpoint-primary-key-123",
            "Resources": [
                {
                    "Name": RESOURCE,
                    "Kind": "TrainedModel",
                    "Location": {
                        "BaseLocation": StorageAccount("wasb_default").base_location if relative_location else None,
                        "RelativeLocation": relative_location,
                        "SasBlobToken": None,
                    },
                }
            ],
        },
    )


def patch_operator(*script, **kwargs):
    op = PatchEndpointOperator(
        task_id="promote",
        web_service_id="predictive1",
        endpoint_name=kwargs.pop("endpoint_name", "retrain01"),
        model=kwargs.pop(
            "model",
            {"job_id": "j", "outputs": {"output1": {"container": "models", "blob_name": "run7/model.ilearner"}}},
        ),
        verify_poll_interval=0,
        **kwargs,
    )
    transport = FakeTransport(*script)
    op.hook.session.mount("https://", transport)
    return op, transport


def methods(transport):
    return [f"{r.method} {r.path_url}" for r in transport.requests]


def test_default_endpoint_is_refused_before_any_call():
    op, transport = patch_operator(endpoint_name="default")
    with pytest.raises(ConfigurationError, match=r"'default' endpoint .* cannot be replaced"):
        op.execute(make_context())
    assert transport.requests == []


def test_missing_endpoint_without_create_is_a_clear_error():
    op, _ = patch_operator(Reply(404, {"error": {"code": "NotFound", "message": "no such endpoint"}}))
    with pytest.raises(ConfigurationError, match=r"has no endpoint 'retrain01'.*create_endpoint=True"):
        op.execute(make_context())


def test_patch_sends_fresh_read_only_sas_and_verifies():
    op, transport = patch_operator(
        endpoint("models/run6/model.ilearner"), Reply(200), endpoint("models/run6/model.ilearner"), endpoint(MODEL)
    )
    result = op.execute(make_context())
    sent = json.loads(transport.requests[1].body)
    location = sent["Resources"][0]["Location"]
    assert sent["Resources"][0]["Name"] == RESOURCE
    assert location["RelativeLocation"] == MODEL
    assert "sig=" in location["SasBlobToken"] and "sp=r&" in location["SasBlobToken"]
    assert result["changed"] is True
    assert result["previous"]["relative_location"] == "models/run6/model.ilearner"
    assert "sig=" not in json.dumps(result)
    assert [r.method for r in transport.requests] == ["GET", "PATCH", "GET", "GET"]


def test_already_serving_is_a_no_op():
    op, transport = patch_operator(endpoint(MODEL))
    assert op.execute(make_context())["changed"] is False
    assert [r.method for r in transport.requests] == ["GET"]


def test_verification_failure_is_reported(monkeypatch):
    from datetime import timedelta

    op, _ = patch_operator(endpoint(None), Reply(200), *[endpoint(None)] * 50, verify_timeout=timedelta(seconds=0))
    with pytest.raises(PromotionVerificationError, match="not seen within"):
        op.execute(make_context())


def test_unknown_resource_name_lists_the_updatable_ones():
    op, _ = patch_operator(endpoint(None), trained_model_name="Churn [trained model]")
    with pytest.raises(ConfigurationError, match=r"updatable resources: \['Customer Churn \[trained model\]'\]"):
        op.execute(make_context())


def test_create_endpoint_when_missing():
    op, transport = patch_operator(
        Reply(404, {"error": {"code": "NotFound", "message": "x"}}),
        Reply(200),
        endpoint(None),
        Reply(200),
        endpoint(MODEL),
        create_endpoint=True,
    )
    op.execute(make_context())
    assert [r.method for r in transport.requests] == ["GET", "PUT", "GET", "PATCH", "GET"]


DEFINITION = {
    "name": "energy-predictive",
    "properties": {
        "packageType": "Graph",
        "swaggerLocation": "https://x.services.azureml.net/subscriptions/s/services/abc/swagger.json",
        "Assets": {
            "asset1": {"Name": "Linear Regression", "Type": "Module", "LocationInfo": {"Uri": "aml://module/1"}},
            "asset2": {
                "Name": "Energy Efficiency [trained model]",
                "Type": "Resource",
                "LocationInfo": {"Uri": "https://acct.blob.core.windows.net/models/old.ilearner"},
            },
        },
    },
}


def test_find_trained_model_asset_ignores_member_casing():
    asset_id, asset = find_trained_model_asset(DEFINITION, None)
    assert asset_id == "asset2"
    with pytest.raises(ConfigurationError, match="Resource assets: \\['Energy Efficiency \\[trained model\\]'\\]"):
        find_trained_model_asset(DEFINITION, "Other [trained model]")


def arm_operator(*script, **kwargs):
    op = UpdateWebServiceDefinitionOperator(
        task_id="update", web_service_name="energy-predictive", model=MODEL, **kwargs
    )
    transport = install_arm(op.hook, FakeTransport(*script))
    return op, transport


def test_update_patches_the_asset_uri_and_defers_on_the_operation():
    op, transport = arm_operator(
        Reply(200, DEFINITION),
        Reply(
            200, {"name": "energy-predictive"}, headers={"Azure-AsyncOperation": "https://management.azure.com/op/1"}
        ),
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context())
    body = json.loads(transport.requests[1].body)
    assert transport.requests[1].method == "PATCH"
    uri = body["properties"]["Assets"]["asset2"]["LocationInfo"]["Uri"]
    assert uri.endswith("/devstoreaccount1/models/run7/model.ilearner") and "sig=" not in uri
    assert transport.requests[0].headers["Authorization"] == "Bearer aad-token-value-xyz"
    trigger = deferred.value.trigger
    assert isinstance(trigger, ArmOperationTrigger)
    assert trigger.status_url == "https://management.azure.com/op/1"
    assert "aad-token-value-xyz" not in json.dumps(trigger.serialize())  # the token carries no credential
    assert deferred.value.kwargs["result"]["previous_uri"].endswith("models/old.ilearner")


def test_failed_operation_fails_the_task_with_its_error():
    op, _ = arm_operator()
    event = {
        "status": "terminal",
        "operation": {"provisioningState": "Failed", "errorInfo": {"code": "InvalidModel", "message": "not a model"}},
    }
    with pytest.raises(PromotionVerificationError, match="ended Failed: InvalidModel not a model"):
        op.execute_complete(make_context(), event, result={"current_uri": "x", "changed": True})


@pytest.mark.parametrize(
    ("training_inputs", "recorded"),
    [
        (None, None),
        ("training-data/churn/day.csv", ["training-data/churn/day.csv"]),
        ({"container": "training-data", "blob_name": "a.csv"}, ["training-data/a.csv"]),
        (["c/a.csv", "c/b.csv?sv=2024&sig=secret"], ["c/a.csv", "c/b.csv"]),
        ({"input1": "c/a.csv", "input2": {"container": "c", "blob_name": "b.csv"}}, ["c/a.csv", "c/b.csv"]),
        ('["c/a.csv"]', ["c/a.csv"]),  # a rendered template's JSON text
    ],
)
def test_training_inputs_are_recorded_as_locations_without_a_sas(training_inputs, recorded):
    assert input_locations(training_inputs) == recorded


def test_a_training_input_that_is_no_location_fails_before_anything_changes():
    with pytest.raises(ConfigurationError, match="training_inputs"):
        input_locations("no-slash")
