"""Provider metadata: makes Airflow list our connection types (with labelled fields) in the UI.

Read by Airflow's providers manager through the ``apache_airflow_provider`` entry point declared
in ``plugins/pyproject.toml``; it imports nothing heavy. Laid out as published providers' (``hooks``,
``operators``, ``sensors``, ``triggers`` list modules per integration, as ``airflow providers hooks``
and the docs read them); the version is the package's ``__version__``.
"""

from __future__ import annotations

from typing import Any

from azureml_retrain import __version__

# The extras every hook reads (``hooks/base.py``): retries, timeouts and the CA bundle to trust.
_HTTP_FIELDS: dict[str, Any] = {
    "max_attempts": {
        "label": "Attempts per call",
        "description": "Tries of one HTTP call on connection errors, timeouts, 429 and 5xx (default 5).",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "retry_base_delay": {
        "label": "First retry delay (s)",
        "description": "Wait before the first retry; doubles per retry, with jitter (default 1).",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "retry_max_delay": {
        "label": "Longest retry delay (s)",
        "description": "Cap of the doubling wait between retries (default 30).",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "description": "Seconds to wait for a connection before retrying (default 10).",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
    "read_timeout": {
        "label": "Read timeout (s)",
        "description": "Seconds to wait for a response before retrying (default 60).",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
    "ca_bundle": {
        "label": "CA bundle",
        "description": "Path of a CA certificate file to trust for the host (default: the system's).",
        "schema": {"type": ["string", "null"]},
    },
}


_INTEGRATION = "Azure Machine Learning Studio (classic)"


def _modules(package: str, *names: str) -> list[dict[str, Any]]:
    return [{"integration-name": _INTEGRATION, "python-modules": [f"azureml_retrain.{package}.{n}" for n in names]}]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "azureml-retrain",
        "name": "Azure ML retraining",
        "description": "Retrain Azure Machine Learning Studio (classic) web services and promote better models.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://learn.microsoft.com/en-us/previous-versions/azure/machine-learning/classic/",
                "tags": ["azure"],
            }
        ],
        "hooks": _modules("hooks", "web_service", "classic_management", "resource_manager"),
        "operators": [
            *_modules("operators", "submit_bes_job", "evaluate", "promote"),
            {"integration-name": _INTEGRATION, "python-modules": ["azureml_retrain.approval_operator"]},
        ],
        "sensors": _modules("sensors", "blob_arrival"),
        "triggers": _modules("triggers", "bes_job", "arm_operation", "blob_arrival"),
        "extra-links": ["azureml_retrain.links.AzureMLLink"],
        "connection-types": [
            {
                "connection-type": "azureml_web_service",
                "hook-class-name": "azureml_retrain.hooks.web_service.AzureMLWebServiceHook",
                "hook-name": "Azure ML Studio web service (BES/RRS)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "API location", "password": "API key"},
                    "placeholders": {
                        "host": "https://ussouthcentral.services.azureml.net/workspaces/<ws>/services/<id>",
                        "password": "<the endpoint's API key>",
                    },
                },
                "conn-fields": _HTTP_FIELDS,
            },
            {
                "connection-type": "azureml_classic_management",
                "hook-class-name": "azureml_retrain.hooks.classic_management.AzureMLClassicManagementHook",
                "hook-name": "Azure ML Studio classic management",
                "ui-field-behaviour": {
                    "hidden-fields": ["port", "login"],
                    "relabeling": {
                        "host": "Management host",
                        "schema": "Workspace id",
                        "password": "Authorization token",
                    },
                    "placeholders": {
                        "host": "https://management.azureml.net",
                        "schema": "<workspace id>",
                        "password": "<the workspace's authorization token>",
                    },
                },
                "conn-fields": _HTTP_FIELDS,
            },
            {
                "connection-type": "azureml_resource_manager",
                "hook-class-name": "azureml_retrain.hooks.resource_manager.AzureMLResourceManagerHook",
                "hook-name": "Azure ML web services (Resource Manager)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "Resource Manager endpoint",
                        "login": "Client ID",
                        "password": "Client secret",
                    },
                    "placeholders": {
                        "host": "https://management.azure.com",
                        "login": "<service principal's client id; empty: the default Azure credential>",
                        "password": "<the service principal's client secret>",
                    },
                },
                "conn-fields": {
                    "tenant_id": {
                        "label": "Tenant ID",
                        "description": "Azure AD tenant of the service principal.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "subscription_id": {
                        "label": "Subscription ID",
                        "description": "Subscription of the web services.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "resource_group": {
                        "label": "Resource group",
                        "description": "Resource group of the web services.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "authority_host": {
                        "label": "Authority host",
                        "description": "Token authority; default https://login.microsoftonline.com.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "managed_identity_client_id": {
                        "label": "Managed Identity Client ID",
                        "description": (
                            "Without Client ID and secret: the client id of a user-assigned managed identity "
                            "(or of the workload identity's app) for the default Azure credential."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "workload_identity_tenant_id": {
                        "label": "Workload Identity Tenant ID",
                        "description": (
                            "Without Client ID and secret: the tenant of the workload identity (with the managed "
                            "identity client id)."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "api_version": {
                        "label": "API version",
                        "description": "api-version of Microsoft.MachineLearning/webServices (default 2017-01-01).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "scope": {
                        "label": "Token scope",
                        "description": "Scope of the access token (default https://management.azure.com/.default).",
                        "schema": {"type": ["string", "null"]},
                    },
                    **_HTTP_FIELDS,
                    "ca_bundle": {
                        "label": "CA bundle",
                        "description": (
                            "Path of a CA certificate file to trust for the host and the authority "
                            "(default: the system's)."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                },
            },
        ],
    }
