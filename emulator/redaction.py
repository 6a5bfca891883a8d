"""Keep secrets out of the emulator's logs: SAS signatures, account keys, bearer tokens, API keys.

A filter on the log handler rewrites every record (message, arguments and traceback text) before
it is formatted: pattern-based redaction for anything that looks like a credential in a URL or
connection string, plus exact replacement of every key the emulator currently holds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

REDACTED = "***"
_PATTERNS = (
    (re.compile(r"(?i)(\bsig=)[^&\s\"';]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bAccountKey=)[^;\s\"']+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bclient_secret=)[^&\s\"']+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\baccess_token[\"']?\s*[:=]\s*[\"']?)[^&\s\"',]+"), r"\1" + REDACTED),
)


def redact(text: str, secrets: set[str]) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    # Longest first, so a secret containing another is replaced whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Callable[[], set[str]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets()
        record.msg = redact(record.getMessage(), secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def configure_logging(secrets: Callable[[], set[str]], level: int = logging.INFO) -> None:
    """Root logging to stderr through the redacting filter; no third-party access logs."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # azure-core logs whole requests (URLs, headers) at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
