from __future__ import annotations

import json

import pytest

from azureml_retrain.blobs import BlobLocation, resolve_output
from azureml_retrain.exceptions import ConfigurationError

RESULT = {
    "job_id": "j1",
    "status": "Finished",
    "outputs": {
        "output1": {
            "base_location": "https://acct.blob.core.windows.net/",
            "relative_location": "models/churn/model.ilearner",
            "container": "models",
            "blob_name": "churn/model.ilearner",
        }
    },
}


@pytest.mark.parametrize(
    "value",
    [
        RESULT,
        # A trigger that ends its task sets the XCom through Airflow core, which stores it JSON-encoded:
        # the next task reads this text.
        json.dumps(RESULT),
        "models/churn/model.ilearner",
        {"container": "models", "blob_name": "churn/model.ilearner"},
    ],
)
def test_resolve_output_accepts_the_result_its_json_text_or_a_location(value):
    assert resolve_output(value, "output1", field="model") == BlobLocation("models", "churn/model.ilearner")


def test_resolve_output_names_the_field_for_unreadable_text():
    with pytest.raises(ConfigurationError, match=r"^model: the rendered text \(\d+ characters\) is neither JSON"):
        resolve_output("{not json", "output1", field="model")
