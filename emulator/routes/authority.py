"""OAuth2 token authority routes (meant for the TLS listener; azure-identity needs https)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from emulator.routes.common import call, emulator

router = APIRouter()


@router.get("/{tenant}/v2.0/.well-known/openid-configuration", name="authority.openid")
async def openid_configuration(request: Request, tenant: str) -> JSONResponse:
    return JSONResponse(emulator(request).authority.openid_configuration(tenant))


@router.post("/{tenant}/oauth2/v2.0/token", name="authority.token")
async def token(request: Request, tenant: str) -> JSONResponse:
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    answer = await call(emulator(request).authority.issue_token, tenant, form)
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
