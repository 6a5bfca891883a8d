from __future__ import annotations

import pytest

from azureml_retrain import redaction


def test_mask_once_registers_each_secret_once_per_process(monkeypatch: pytest.MonkeyPatch):
    registered: list[str] = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", registered.append)
    monkeypatch.setattr(redaction, "_registered", set())
    for secret in ("sv=2025&sig=abc", "sv=2025&sig=abc", "other-key", "", "sv=2025&sig=abc"):
        redaction.mask_once(secret)
    assert registered == ["sv=2025&sig=abc", "other-key"]


def test_redact_masks_keys_signatures_tokens_and_client_secrets():
    text = "AccountKey=Zm9v; https://a/b?sv=1&sig=c2ln&se=2 Bearer eyJ.x.y client_secret=hunter2"
    assert redaction.redact(text) == "AccountKey=***; https://a/b?sv=1&sig=***&se=2 Bearer *** client_secret=***"


def test_sas_signature_is_the_sig_value_as_written():
    from azureml_retrain.storage import sas_signature

    assert sas_signature("?sv=2025-11-05&sr=b&sig=AbC%2Bd%3D&se=2026-11-27T10%3A00Z&sp=r") == "AbC%2Bd%3D"
    assert sas_signature("sv=2025&sp=r") is None
