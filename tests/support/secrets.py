"""What counts as a secret in a run, and the verbatim search for them (see the hygiene tests)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import requests

from support.emulator import DataPlane, RunningEmulator
from support.retrain import state

MIN_SECRET_LENGTH = 8
_SIG = re.compile(r"sig=([^&\"'\s]+)")
_ACCOUNT_KEY = re.compile(r"AccountKey=([^;\"'\s]+)")
_BEARER = re.compile(r"Bearer\s+(\S+)")


class WireSecrets:
    """Collects secret values from every HTTP exchange made through ``requests``."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= MIN_SECRET_LENGTH:
            self.values.add(value)
            self.values.add(unquote(value))

    def scan(self, text: str) -> None:
        for pattern in (_SIG, _ACCOUNT_KEY):
            for match in pattern.finditer(text):
                self.add(match.group(1))

    def record(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        for match in _BEARER.finditer(str(request.headers.get("Authorization", ""))):
            self.add(match.group(1))
        body = request.body
        self.scan(body.decode(errors="replace") if isinstance(body, bytes) else str(body or ""))
        self.scan(response.text)
        try:
            document = response.json()
        except ValueError:
            return
        if isinstance(document, dict):
            self.add(document.get("access_token"))
            self.add(document.get("refresh_token"))


def emulator_secrets(emulator: RunningEmulator) -> set[str]:
    current = state(emulator)
    values = {str(a["key"]) for a in current["storage_accounts"]}
    for workspace in current["workspaces"]:
        values.add(workspace["authorization_token"])
        for service in workspace["web_services"]:
            for endpoint in service["endpoints"]:
                values |= {endpoint["primary_key"], endpoint["secondary_key"]}
    for service in current["arm_web_services"]:
        values |= {service["primary_key"], service["secondary_key"]}
    for tenant in current["tenants"]:
        values |= {p["client_secret"] for p in tenant["service_principals"]}
    return {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}


def result_sas_signatures(emulator: RunningEmulator) -> set[str]:
    """The ``sig=`` of every finished job's result SAS, fetched with raw HTTP as any client would."""
    current = state(emulator)
    planes = {e["service_id"]: e for s in current["workspaces"][0]["web_services"] for e in s["endpoints"]}
    planes |= {s["data_plane_id"]: s for s in current["arm_web_services"]}
    found: set[str] = set()
    for job in current["jobs"]:
        plane = planes.get(job["service_id"])
        if plane is None or job["status"] != "Finished":
            continue
        body = DataPlane(plane["api_location"], plane["primary_key"]).status(job["id"])
        for output in (body.get("Results") or {}).values():
            match = _SIG.search(str(output.get("SasBlobToken") or ""))
            if match:
                found |= {match.group(1), unquote(match.group(1))}
    return found


def assert_no_secret(secrets: set[str], **places: str) -> None:
    assert secrets, "no secrets collected: the test would prove nothing"
    leaks = {
        where: sorted(s[:6] + "…" for s in secrets if s in text)  # never print a whole secret
        for where, text in places.items()
    }
    assert not any(leaks.values()), f"secrets found: {leaks}"
