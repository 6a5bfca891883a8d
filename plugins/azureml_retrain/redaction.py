"""Scrub secrets out of text that may end up in a log line or an exception message.

Secrets are also registered with Airflow's masker (``mask_secret``) where they are read; this is the
second line of defence for text we did not produce ourselves, such as a service's error message
that echoes part of a request.
"""

from __future__ import annotations

import re

_PATTERNS = [
    # Storage connection strings: AccountKey=...; SharedAccessSignature=...
    (re.compile(r"(?i)(AccountKey|SharedAccessSignature)=[^;\s\"']+"), r"\1=***"),
    # SAS query parameters: the signature is the secret; keep the rest for diagnosis.
    (re.compile(r"(?i)([?&]sig=)[^&\s\"']+"), r"\1***"),
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    # client_secret=... in form bodies.
    (re.compile(r"(?i)(client_secret=)[^&\s\"']+"), r"\1***"),
]


# Secrets this process has registered. Each registration is a message to the task's (or triggerer's)
# supervisor, whose masker rebuilds its pattern for every new secret: a job polled every few seconds
# would re-send the same SAS tokens each time, and a triggerer following 100 jobs spent most of its
# CPU there.
_registered: set[str] = set()


def mask_once(secret: str) -> None:
    """Register ``secret`` with Airflow's secrets masker (logs show ``***``), once per process."""
    if not secret or secret in _registered:
        return
    from airflow.sdk.log import mask_secret

    mask_secret(secret)
    _registered.add(secret)


def redact(text: str) -> str:
    """Return ``text`` with account keys, SAS signatures, bearer tokens and client secrets masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def strip_query(url: str) -> str:
    """A URL safe to log or keep: without its query string (which may carry a SAS) or fragment."""
    return url.split("?", 1)[0].split("#", 1)[0]
