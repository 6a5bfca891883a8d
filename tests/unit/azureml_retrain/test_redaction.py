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
    key = ("devstoreaccount1", "in", "data.csv", False, storage.DEFAULT_SAS_LIFETIME)
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
