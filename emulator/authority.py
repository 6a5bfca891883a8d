"""A minimal AAD-like OAuth2 authority: client-credentials tokens for seeded service principals.

Served on the TLS listener because azure-identity refuses non-https authorities. Tokens are opaque
random strings; the state keeps only their SHA-256 digest, and they are never logged.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from emulator.backend import bearer, matches_any
from emulator.catalog import ServicePrincipal, Tenant
from emulator.errors import aad_error, arm_error
from emulator.state import IssuedToken, utc_now

if TYPE_CHECKING:
    from emulator.backend import Backend

ARM_SCOPES = ("https://management.azure.com/.default", "https://management.core.windows.net//.default")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authority:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _tenant(self, tenant_id: str) -> Tenant:
        for tenant in self.backend.seed.tenants:
            if tenant.id.lower() == tenant_id.lower():
                return tenant
        raise aad_error(400, "invalid_tenant", f"Tenant '{tenant_id}' not found.", 90002)

    def openid_configuration(self, tenant_id: str) -> dict[str, Any]:
        tenant = self._tenant(tenant_id)
        base = f"{self.backend.urls.tls}/{tenant.id}"
        return {
            "issuer": f"{base}/v2.0",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "token id_token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def issue_token(self, tenant_id: str, form: dict[str, str]) -> dict[str, Any]:
        tenant = self._tenant(tenant_id)
        if form.get("grant_type") != "client_credentials":
            raise aad_error(400, "unsupported_grant_type", "Only client_credentials is supported.", 70003)
        principal = self._principal(tenant, form.get("client_id", ""))
        if not matches_any(form.get("client_secret"), [principal.client_secret]):
            raise aad_error(
                401,
                "invalid_client",
                "Invalid client secret provided. Ensure the secret being sent is correct.",
                7000215,
            )
        scopes = form.get("scope", "").split()
        if not scopes or any(scope not in ARM_SCOPES for scope in scopes):
            raise aad_error(400, "invalid_scope", f"The provided scope is not valid; use '{ARM_SCOPES[0]}'.", 1002012)
        lifetime = int(self.backend.control.knobs.token_lifetime_seconds)
        token = secrets.token_urlsafe(48)
        with self.backend.lock:
            now = utc_now()
            # Drop expired tokens so the state does not grow without bound.
            self.backend.state.tokens = {k: t for k, t in self.backend.state.tokens.items() if t.expires_at > now}
            self.backend.state.tokens[_digest(token)] = IssuedToken(
                tenant=tenant.id, client_id=principal.client_id, expires_at=now + timedelta(seconds=lifetime)
            )
            self.backend.save()
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    @staticmethod
    def _principal(tenant: Tenant, client_id: str) -> ServicePrincipal:
        for principal in tenant.service_principals:
            if principal.client_id.lower() == client_id.lower():
                return principal
        raise aad_error(
            400,
            "unauthorized_client",
            f"Application with identifier '{client_id}' was not found in the directory '{tenant.id}'.",
            700016,
        )

    def check_arm_access(self, authorization: str | None, subscription: str) -> None:
        """Raise the ARM 401/403 unless the bearer token grants access to ``subscription``."""
        token = bearer(authorization)
        if token is None:
            raise arm_error(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        with self.backend.lock:
            issued = self.backend.state.tokens.get(_digest(token))
        if issued is None:
            raise arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        now = utc_now()
        if issued.expires_at <= now:
            raise arm_error(
                401,
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{issued.expires_at:%m/%d/%Y %H:%M:%S}' is earlier than "
                f"current UTC time '{now:%m/%d/%Y %H:%M:%S}'.",
            )
        tenant = self._tenant(issued.tenant)
        principal = self._principal(tenant, issued.client_id)
        if subscription.lower() not in (s.lower() for s in principal.subscriptions):
            raise arm_error(
                403,
                "AuthorizationFailed",
                f"The client '{principal.client_id}' does not have authorization to perform action over scope "
                f"'/subscriptions/{subscription}' or the scope is invalid.",
            )
