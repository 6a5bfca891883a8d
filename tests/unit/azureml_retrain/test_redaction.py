from __future__ import annotations

from typing import Any

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


def test_a_blob_read_again_within_minutes_shares_its_token(monkeypatch: pytest.MonkeyPatch):
    from datetime import timedelta

    from azureml_retrain import storage
    from azureml_retrain.blobs import BlobLocation

    monkeypatch.setattr(storage, "_recent_tokens", {})
    account = storage.StorageAccount("wasb_default")
    monkeypatch.setattr(storage.StorageAccount, "account_name", "devstoreaccount1")
    monkeypatch.setattr(storage.StorageAccount, "_account_key", "a2V5" * 11)
    data, other = BlobLocation("in", "data.csv"), BlobLocation("in", "other.csv")
    first = account.sas_token(data, write=False)
    assert account.sas_token(data, write=False) == first
    assert account.sas_token(data, write=True) != first  # other permissions: its own token
    assert account.sas_token(other, write=False) != first
    key = ("blob", "devstoreaccount1", "in", "data.csv", False, storage.DEFAULT_SAS_LIFETIME)
    minted, token = storage._recent_tokens[key]
    storage._recent_tokens[key] = (minted - timedelta(minutes=6), token)
    account.sas_token(data, write=False)
    assert storage._recent_tokens[key][0] >= minted  # older than the reuse window: minted again


def test_tokens_are_minted_from_many_threads_at_once(monkeypatch: pytest.MonkeyPatch):
    """The triggers mint SAS tokens in a thread pool: the reuse cache must not break under it."""
    import sys
    import threading
    from datetime import UTC, datetime

    from azureml_retrain import storage
    from azureml_retrain.blobs import BlobLocation

    # Many fresh tokens already cached: each pruning pass walks them all while other threads add.
    now = datetime.now(UTC)
    monkeypatch.setattr(
        storage,
        "_recent_tokens",
        {("a", "c", str(i), True, storage.DEFAULT_SAS_LIFETIME): (now, "?t") for i in range(20000)},
    )
    monkeypatch.setattr(storage, "mask_once", lambda secret: None)
    monkeypatch.setattr(storage.StorageAccount, "account_name", "devstoreaccount1")
    monkeypatch.setattr(storage.StorageAccount, "_account_key", "a2V5" * 11)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the unlocked cache failed at once
    errors: list[BaseException] = []

    def mint(thread: int) -> None:
        account = storage.StorageAccount("wasb_default")
        for i in range(40):
            try:
                account.sas_token(BlobLocation("out", f"{thread}/{i}"), write=True)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=mint, args=(t,)) for t in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(storage._recent_tokens) == 20000 + 8 * 40


def account_with_a_key(monkeypatch: pytest.MonkeyPatch) -> Any:
    from azureml_retrain import storage

    monkeypatch.setattr(storage, "_recent_tokens", {})
    monkeypatch.setattr(storage.StorageAccount, "account_name", "devstoreaccount1")
    monkeypatch.setattr(storage.StorageAccount, "_account_key", "a2V5" * 11)
    return storage.StorageAccount("wasb_default")


def test_jobs_writing_into_one_container_share_its_output_token(monkeypatch: pytest.MonkeyPatch):
    """500 jobs starting at once made 1,000 output tokens, each a new secret for the masker."""
    from datetime import timedelta

    from azureml_retrain import storage
    from azureml_retrain.bes import build_request

    registered: list[str] = []
    monkeypatch.setattr(storage, "mask_once", registered.append)
    account = account_with_a_key(monkeypatch)
    bodies = [
        build_request(
            {"input1": "data/day.csv"},
            {"model": f"models/{job}/model.ilearner", "evaluation": f"models/{job}/evaluation.csv"},
            None,
            storage=account,
            reference_mode="sas",
            job_timeout=timedelta(hours=6),
        )
        for job in range(50)
    ]
    tokens = {r["SasBlobToken"] for body in bodies for r in body["Outputs"].values()}
    assert len(tokens) == 1 and "sr=c&" in next(iter(tokens))
    assert len(registered) == 2  # the input's token and the container's

    # Another container, or another lifetime (a job that may run longer): a token of its own.
    elsewhere = account.output_sas_token("archive", lifetime=timedelta(hours=6, minutes=10))
    longer = account.output_sas_token("models", lifetime=timedelta(hours=12, minutes=10))
    assert len(tokens | {elsewhere, longer}) == 3


def test_an_output_token_is_minted_again_once_its_window_has_passed(monkeypatch: pytest.MonkeyPatch):
    from datetime import UTC, datetime, timedelta

    from azureml_retrain import storage

    account = account_with_a_key(monkeypatch)
    lifetime = timedelta(hours=2)
    first = account.output_sas_token("models", lifetime=lifetime)
    expiry = datetime.fromisoformat(dict(p.split("=", 1) for p in first[1:].split("&"))["se"].replace("%3A", ":"))
    # Valid for the lifetime from any moment it is handed out: minted with the reuse window on top.
    assert expiry - datetime.now(UTC) > lifetime + storage.OUTPUT_SAS_REUSE_WINDOW - timedelta(minutes=1)
    key = ("container-output", "devstoreaccount1", "models", lifetime)
    minted, token = storage._recent_tokens[key]
    storage._recent_tokens[key] = (minted - storage.OUTPUT_SAS_REUSE_WINDOW, token)
    account.output_sas_token("models", lifetime=lifetime)
    assert storage._recent_tokens[key][0] >= minted  # older than the reuse window: minted again


def test_an_output_beside_an_input_gets_a_token_for_its_own_blob_only(monkeypatch: pytest.MonkeyPatch):
    """A container token where the training data is could overwrite it."""
    from datetime import timedelta

    from azureml_retrain.bes import build_request

    monkeypatch.setattr("azureml_retrain.storage.mask_once", lambda secret: None)
    body = build_request(
        {"input1": "data/day.csv"},
        {"model": "data/out/model.ilearner", "evaluation": "results/evaluation.csv"},
        None,
        storage=account_with_a_key(monkeypatch),
        reference_mode="sas",
        job_timeout=timedelta(hours=1),
    )
    assert "sr=b&" in body["Outputs"]["model"]["SasBlobToken"] and "sp=rcw&" in body["Outputs"]["model"]["SasBlobToken"]
    assert "sr=c&" in body["Outputs"]["evaluation"]["SasBlobToken"]


def test_a_token_signed_by_a_user_delegation_key_cannot_outlive_it(monkeypatch: pytest.MonkeyPatch):
    """Azure AD connections sign with a user delegation key, valid 7 days at most: a longer job says so
    before anything is submitted, naming the setting to change."""
    from datetime import timedelta

    from azureml_retrain import storage
    from azureml_retrain.exceptions import ConfigurationError

    monkeypatch.setattr(storage, "_recent_tokens", {})
    monkeypatch.setattr(storage.StorageAccount, "account_name", "devstoreaccount1")
    monkeypatch.setattr(storage.StorageAccount, "_account_key", None)
    asked: list[timedelta] = []
    monkeypatch.setattr(
        storage.StorageAccount, "_user_delegation_key", lambda self, start, expiry: asked.append(expiry - start)
    )
    account = storage.StorageAccount("aad_storage")
    with pytest.raises(ConfigurationError, match=r"shorten job_timeout .* or give the connection an account key"):
        account.output_sas_token("models", lifetime=timedelta(days=7))
    assert asked == []  # refused before asking the service for a key
