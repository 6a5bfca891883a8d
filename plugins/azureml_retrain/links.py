"""Extra links: from a task in the Airflow UI to what it acted on.

Each operator stores the link's URL in XCom when it knows it (a link can then never point at the
wrong run): the Azure portal page of a Resource Manager web service, the Studio web services portal
for classic services, or the local emulator's state view when the connection points at it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperatorLink

LINK_XCOM_KEY = "azureml_link"
STUDIO_PORTAL = "https://services.azureml.net/"
AZURE_PORTAL = "https://portal.azure.com/#resource"


def _is_azure(host: str, suffix: str) -> bool:
    return (urlsplit(host).hostname or "").endswith(suffix)


def _emulator_view(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/_emulator/state"


def classic_service_link(url: str) -> str:
    """For a classic data-plane or management URL: the Studio web services portal, or the emulator."""
    return STUDIO_PORTAL if _is_azure(url, "azureml.net") else _emulator_view(url)


def resource_manager_link(base_url: str, resource_id: str) -> str:
    """For a Resource Manager web service: its Azure portal page, or the emulator."""
    if _is_azure(base_url, "management.azure.com"):
        return f"{AZURE_PORTAL}{resource_id}/overview"
    return _emulator_view(base_url)


class AzureMLLink(BaseOperatorLink):
    """Opens the web service, endpoint or job the task acted on."""

    name = "Azure ML"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return str(XCom.get_value(ti_key=ti_key, key=LINK_XCOM_KEY) or "")
