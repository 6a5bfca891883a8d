"""Admin routes, persistence across a restart, log redaction, CLI safety."""

from __future__ import annotations

import json
import subprocess
import sys

import requests

from devtools.services import ROOT, stop_process
from support.emulator import CHURN_COLUMNS, CHURN_ROWS, DataPlane, start_emulator, table_request


def test_health_and_state(emulator):
    assert emulator.admin("GET", "health").json() == {"status": "ok"}
    state = emulator.admin("GET", "state").json()
    assert state["cert_path"].endswith("tls/cert.pem")
    assert state["persistent"] is False
    assert {s["kind"] for s in state["workspaces"][0]["web_services"]} == {"training", "predictive"}
    assert state["tenants"][0]["authority"] == emulator.tls_url


def test_state_deep_links_show_one_job_endpoint_or_web_service_without_keys(
    emulator, churn_training, churn_job, azurite
):
    body = churn_job()
    job_id = churn_training.submit_ok(body)
    churn_training.start(job_id)
    churn_training.wait(job_id)
    job = emulator.admin("GET", f"state/jobs/{job_id}").json()
    assert job["status"] == "Finished"
    assert job["service"]["kind"] == "training" and job["service"]["endpoint"] == "default"
    assert job["inputs"]["input1"].endswith("/" + body["Inputs"]["input1"]["RelativeLocation"])

    workspace, predictive = emulator.workspace, emulator.classic_service("predictive")
    path = f"state/workspaces/{workspace['id']}/webservices/{predictive['id']}/endpoints/retrain01"
    endpoint = emulator.admin("GET", path).json()
    assert endpoint["endpoint"]["name"] == "retrain01"
    assert endpoint["web_service"]["kind"] == "predictive"
    assert endpoint["model_uri"]

    arm = emulator.arm_service("predictive")
    resource_id = arm["resource_url"].removeprefix(emulator.url)
    assert emulator.admin("GET", f"state{resource_id.lower()}").json()["name"] == arm["name"]

    secrets = [
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq",
        emulator.classic_endpoint("training")["primary_key"],
        emulator.classic_endpoint("predictive", "retrain01")["primary_key"],
        arm["primary_key"],
    ]
    shown = [emulator.admin("GET", p).text for p in (f"state/jobs/{job_id}", path, f"state{resource_id}")]
    for value in secrets:
        assert all(value not in text for text in shown)
    for unknown in ("state/jobs/0123", f"{path}x", f"state{resource_id}x"):
        response = requests.get(f"{emulator.url}/_emulator/{unknown}", timeout=30)
        assert response.status_code == 404
        assert response.json()["error"]["details"][0]["code"] == "ResourceNotFound"


def test_reset_goes_back_to_seed(emulator):
    workspace = emulator.workspace
    predictive = emulator.classic_service("predictive")
    url = f"{emulator.url}/workspaces/{workspace['id']}/webservices/{predictive['id']}/endpoints/extra"
    headers = {"Authorization": f"Bearer {workspace['authorization_token']}"}
    assert requests.put(url, json={}, headers=headers, timeout=30).status_code == 200
    emulator.admin("POST", "reset")
    assert requests.get(url, headers=headers, timeout=30).status_code == 404


def test_state_persists_across_restart_and_running_jobs_fail(tmp_path, azurite, upload, container):
    from support.emulator import connection_reference

    log_path = tmp_path / "emulator.log"
    first = start_emulator(log_path, data_dir=tmp_path / "data")
    try:
        workspace = first.workspace
        predictive = first.classic_service("predictive")
        headers = {"Authorization": f"Bearer {workspace['authorization_token']}"}
        url = f"{first.url}/workspaces/{workspace['id']}/webservices/{predictive['id']}/endpoints/kept"
        created = requests.put(url, json={"Description": "survives"}, headers=headers, timeout=30).json()
        training = first.classic_endpoint("training")
        plane = DataPlane(training["api_location"], training["primary_key"])
        body = {
            "Inputs": {"input1": connection_reference(azurite, upload("p.csv", dataset="churn", rows=100))},
            "Outputs": {
                "output1": connection_reference(azurite, f"{container}/p.ilearner"),
                "output2": connection_reference(azurite, f"{container}/p.csv"),
            },
        }
        first.admin("POST", "faults/jobs", json={"outcome": "hang"})
        running = plane.submit_ok(body)
        plane.start(running)
        waiting = plane.submit_ok(body)
    finally:
        stop_process(first.pid)

    second = start_emulator(log_path, data_dir=tmp_path / "data")
    try:
        assert second.state["persistent"] is True
        after = requests.get(url.replace(first.url, second.url), headers=headers, timeout=30).json()
        assert (after["Description"], after["PrimaryKey"]) == ("survives", created["PrimaryKey"])
        plane.base = plane.base.replace(first.url, second.url)
        failed = plane.status(running)
        assert failed["StatusCode"] == "Failed"
        # A failure of the service, not of the job's input: a library error, which a retry may not meet.
        error = json.loads(failed["Details"])["error"]
        assert error["code"] == "LibraryExecutionError" and "restarted" in error["details"][0]["message"]
        assert plane.status(waiting)["StatusCode"] == "NotStarted"
        assert plane.start(waiting).status_code == 200
        assert plane.wait(waiting)["StatusCode"] == "Finished"
        scoring = DataPlane(
            created["ApiLocation"].replace(first.url, second.url), created["PrimaryKey"]
        )  # the seed model, reloaded from disk
        assert scoring.execute(table_request(CHURN_COLUMNS, CHURN_ROWS)).status_code == 200
    finally:
        stop_process(second.pid)


def test_log_never_contains_secrets(emulator, churn_training, churn_job, azurite):
    # Exercise paths that carry secrets: connection strings, SAS results, keys, tokens, failures.
    status = churn_training.run(churn_job())
    sas = status["Results"]["output1"]["SasBlobToken"]
    churn_training.submit({"Inputs": {"input1": {"ConnectionString": azurite, "RelativeLocation": "x/y.csv"}}})
    requests.get(
        f"{churn_training.base}/jobs/abc?api-version=2.0&sig=leak", headers=churn_training.headers(), timeout=30
    )
    tenant, client_id, secret = emulator.principal
    requests.post(
        f"{emulator.tls_url}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "https://management.azure.com/.default",
        },
        verify=emulator.cert_path,
        timeout=30,
    )
    text = emulator.log_path.read_text()
    assert "bes.submit POST" in text  # the log is really written
    secrets = [
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq",
        emulator.workspace["authorization_token"],
        emulator.classic_endpoint("training")["primary_key"],
        emulator.arm_service("predictive")["primary_key"],
        secret,
        sas.split("sig=")[1].split("&")[0],
        "sig=leak",
    ]
    for value in secrets:
        assert value not in text


def test_non_loopback_host_is_refused():
    result = subprocess.run(
        [sys.executable, "-m", "emulator", "--host", "0.0.0.0", "--in-memory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "non-loopback" in result.stderr


def test_tls_hostname_is_in_the_certificate_and_the_authority_urls(tmp_path):
    """Containers reach the emulator by its service name: TLS must verify for that name too."""
    from cryptography import x509

    from emulator.server import Options, service_urls
    from emulator.tls import write_self_signed_certificate

    cert_path, _ = write_self_signed_certificate(tmp_path, ["azureml-emulator", "10.0.0.5", "localhost"])
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "azureml-emulator"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.5"]

    urls = service_urls(
        Options(host="0.0.0.0", public_url="http://azureml-emulator:8765", tls_hostname="azureml-emulator")
    )
    assert (urls.public, urls.tls) == ("http://azureml-emulator:8765", "https://azureml-emulator:8766")
    # Without the options: the listen address, with 0.0.0.0 reachable as 127.0.0.1.
    urls = service_urls(Options(host="0.0.0.0", port=1234, tls_port=1235))
    assert (urls.public, urls.tls) == ("http://127.0.0.1:1234", "https://127.0.0.1:1235")
