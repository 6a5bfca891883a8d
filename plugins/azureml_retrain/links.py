"""Extra links: from a task in the Airflow UI to what it acted on.

Each operator stores the link's URL in XCom when it knows it (a link can then never point at the
wrong run): the Azure portal page of a Resource Manager web service, the Studio web services portal
for classic services, or, when the connection points at the local emulator, the emulator's view of
the very job, endpoint or web service the task acted on.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

LINK_XCOM_KEY = "azureml_link"
STUDIO_PORTAL = "https://services.azureml.net/"
AZURE_PORTAL = "https://portal.azure.com/#resource"


def _is_azure(host: str, suffix: str) -> bool:
    return (urlsplit(host).hostname or "").endswith(suffix)


def _emulator_view(url: str, path: str = "") -> str:
    """The emulator's state view of one resource (``path`` mirrors the resource's own path)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/_emulator/state{path}"


def bes_job_link(api_location: str, job_id: str) -> str:
    """For a BES job: the Studio web services portal, or the emulator's view of the job."""
    if _is_azure(api_location, "azureml.net"):
        return STUDIO_PORTAL
    return _emulator_view(api_location, f"/jobs/{quote(job_id, safe='')}")


def classic_endpoint_link(management_url: str, workspace_id: str, web_service_id: str, endpoint_name: str) -> str:
    """For an endpoint of a classic web service: the Studio web services portal, or the emulator's view of it."""
    if _is_azure(management_url, "azureml.net"):
        return STUDIO_PORTAL
    workspace, service, endpoint = (quote(part, safe="") for part in (workspace_id, web_service_id, endpoint_name))
    return _emulator_view(management_url, f"/workspaces/{workspace}/webservices/{service}/endpoints/{endpoint}")


def resource_manager_link(base_url: str, resource_id: str) -> str:
    """For a Resource Manager web service: its Azure portal page, or the emulator's view of it."""
    if _is_azure(base_url, "management.azure.com"):
        return f"{AZURE_PORTAL}{resource_id}/overview"
    return _emulator_view(base_url, resource_id)


class AzureMLLink(BaseOperatorLink):
    """Opens the web service, endpoint or job the task acted on.

    The "Azure ML" extra link of the BES and promotion operators: it opens the URL the task
    instance pushed to its ``azureml_link`` XCom (nothing before the task pushed one).
    """

    name = "Azure ML"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return str(XCom.get_value(ti_key=ti_key, key=LINK_XCOM_KEY) or "")
