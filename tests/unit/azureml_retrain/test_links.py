from __future__ import annotations

from azureml_retrain.links import AzureMLLink, classic_service_link, resource_manager_link
from azureml_retrain.operators import PatchEndpointOperator, SubmitBesJobOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.provider_info import get_provider_info

RESOURCE = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.MachineLearning/webServices/energy"


def test_resource_manager_services_link_to_the_azure_portal():
    assert resource_manager_link("https://management.azure.com", RESOURCE) == (
        f"https://portal.azure.com/#resource{RESOURCE}/overview"
    )


def test_classic_services_link_to_the_studio_portal():
    api = "https://ussouthcentral.services.azureml.net/workspaces/ws/services/abc"
    assert classic_service_link(api) == "https://services.azureml.net/"
    assert classic_service_link("https://management.azureml.net") == "https://services.azureml.net/"


def test_the_emulator_links_to_its_state_view():
    assert classic_service_link("http://127.0.0.1:8765/workspaces/ws/services/abc") == (
        "http://127.0.0.1:8765/_emulator/state"
    )
    assert resource_manager_link("http://127.0.0.1:8765", RESOURCE) == "http://127.0.0.1:8765/_emulator/state"


def test_operators_declare_the_link_and_the_provider_registers_it():
    for operator in (SubmitBesJobOperator, PatchEndpointOperator, UpdateWebServiceDefinitionOperator):
        assert any(isinstance(link, AzureMLLink) for link in operator.operator_extra_links)
    assert "azureml_retrain.links.AzureMLLink" in get_provider_info()["extra-links"]
