"""Hooks: the only code that talks to the Azure ML services."""

from __future__ import annotations

from azureml_retrain.hooks.classic_management import AzureMLClassicManagementHook
from azureml_retrain.hooks.resource_manager import AzureMLResourceManagerHook
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook

__all__ = ["AzureMLClassicManagementHook", "AzureMLResourceManagerHook", "AzureMLWebServiceHook"]
