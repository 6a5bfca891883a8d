"""Operators: the retraining steps a DAG wires together."""

from __future__ import annotations

from azureml_retrain.operators.evaluate import DECISION_XCOM_KEY, EvaluateModelOperator
from azureml_retrain.operators.promote import PatchEndpointOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator

__all__ = [
    "DECISION_XCOM_KEY",
    "EvaluateModelOperator",
    "PatchEndpointOperator",
    "SubmitBesJobOperator",
    "UpdateWebServiceDefinitionOperator",
]
