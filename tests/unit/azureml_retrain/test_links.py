from __future__ import annotations

from azureml_retrain.links import AzureMLLink, bes_job_link, classic_endpoint_link, resource_manager_link
from azureml_retrain.operators import PatchEndpointOperator, SubmitBesJobOperator, UpdateWebServiceDefinitionOperator
from azureml_retrain.provider_info import get_provider_info

RESOURCE = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.MachineLearning/webServices/energy"


def test_resource_manager_services_link_to_the_azure_portal():
    assert resource_manager_link("https://management.azure.com", RESOURCE) == (
        f"https://portal.azure.com/#resource{RESOURCE}/overview"
    )


def test_classic_services_link_to_the_studio_portal():
    api = "https://ussouthcentral.services.azureml.net/workspaces/ws/services/abc"
    assert bes_job_link(api, "0123abcd") == "https://services.azureml.net/"
    assert classic_endpoint_link("https://management.azureml.net", "ws", "svc", "retrain01") == (
        "https://services.azureml.net/"
    )


def test_the_emulator_links_to_its_view_of_the_job_endpoint_or_web_service():
    api = "http://127.0.0.1:8765/workspaces/ws/services/abc"
    assert bes_job_link(api, "0123abcd") == "http://127.0.0.1:8765/_emulator/state/jobs/0123abcd"
    assert classic_endpoint_link("http://127.0.0.1:8765", "ws", "svc", "retrain01") == (
        "http://127.0.0.1:8765/_emulator/state/workspaces/ws/webservices/svc/endpoints/retrain01"
    )
    assert (
        resource_manager_link("http://127.0.0.1:8765", RESOURCE) == f"http://127.0.0.1:8765/_emulator/state{RESOURCE}"
    )
    # Whatever a name holds stays inside its path segment.
    assert bes_job_link(api, "../reset?x") == "http://127.0.0.1:8765/_emulator/state/jobs/..%2Freset%3Fx"


def test_operators_declare_the_link_and_the_provider_registers_it():
    for operator in (SubmitBesJobOperator, PatchEndpointOperator, UpdateWebServiceDefinitionOperator):
        assert any(isinstance(link, AzureMLLink) for link in operator.operator_extra_links)
    assert "azureml_retrain.links.AzureMLLink" in get_provider_info()["extra-links"]
