"""The promotion ledger against real Azurite: append-only records, compare-and-set, the lease lock."""

from __future__ import annotations

import threading
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from azureml_retrain.ledger import (
    NO_MODEL,
    LedgerRecord,
    PromotionConflictError,
    PromotionLedger,
    PromotionRefusedError,
)

WINDOW_1 = {"start": "2026-11-24T00:00:00+00:00", "end": "2026-11-25T00:00:00+00:00"}
WINDOW_2 = {"start": "2026-11-25T00:00:00+00:00", "end": "2026-11-26T00:00:00+00:00"}


@pytest.fixture
def ledger(azurite: str, container: str) -> PromotionLedger:
    return PromotionLedger(container=container, lock_timeout=30)  # waiting ends when the lock is free


def promotion(uri: str, window=WINDOW_2, **kwargs) -> LedgerRecord:
    return LedgerRecord(kind="promotion", target="ws/retrain01", model_uri=uri, window=window, **kwargs)


def test_first_promotion_records_the_baseline_then_the_promotion(ledger):
    with ledger.guard("ws/retrain01", expected_model_uri=NO_MODEL, window=WINDOW_2) as guard:
        assert guard.head is None
        guard.record(promotion("m2", metrics={"AUC": 0.8}, previous_model_uri="m0"), baseline_uri="m0")
    records = ledger.records("ws/retrain01")
    assert [(r.kind, r.model_uri) for r in records] == [("baseline", "m0"), ("promotion", "m2")]
    assert ledger.champion_metrics("ws/retrain01") == {"AUC": 0.8}


def test_compare_and_set_refuses_a_changed_target(ledger):
    with ledger.guard("ws/retrain01", expected_model_uri=None, window=WINDOW_1) as guard:
        guard.record(promotion("m1", window=WINDOW_1))
    with (
        pytest.raises(PromotionRefusedError, match="changed since this run evaluated"),
        ledger.guard("ws/retrain01", expected_model_uri="m0", window=WINDOW_2),
    ):
        pytest.fail("must not enter")
    assert [r.model_uri for r in ledger.records("ws/retrain01")] == ["m1"]


def test_refusals_do_not_retry_but_lock_contention_does():
    # A refusal cannot pass on a retry; a busy lock or a racing append can.
    assert issubclass(PromotionRefusedError, AirflowFailException)
    assert not issubclass(PromotionConflictError, AirflowFailException)


def test_an_older_window_never_replaces_a_newer_model(ledger):
    with ledger.guard("ws/retrain01", expected_model_uri=None, window=WINDOW_2) as guard:
        guard.record(promotion("m2"))
    with (
        pytest.raises(PromotionRefusedError, match="older window"),
        ledger.guard("ws/retrain01", expected_model_uri="m2", window=WINDOW_1),
    ):
        pytest.fail("must not enter")
    with ledger.guard("ws/retrain01", expected_model_uri="m2", window=WINDOW_1, allow_older_window=True) as guard:
        assert guard.head.model_uri == "m2"


def test_concurrent_append_is_detected(ledger):
    records, etag = ledger.read("ws/retrain01")
    ledger.append(promotion("a"), etag=None)
    with pytest.raises(PromotionConflictError):
        ledger.append(promotion("b"), etag=None)  # still thinks the ledger is empty
    _, etag = ledger.read("ws/retrain01")
    ledger.append(promotion("b"), etag=etag)
    with pytest.raises(PromotionConflictError):
        ledger.append(promotion("c"), etag=etag)  # stale etag
    assert [r.model_uri for r in ledger.records("ws/retrain01")] == ["a", "b"]


def test_lock_serialises_two_promotions(ledger):
    order: list[str] = []
    inside = threading.Event()

    def first():
        with ledger.lock("ws/retrain01"):
            order.append("first-in")
            inside.set()
            time.sleep(1.0)
            order.append("first-out")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(60), "the first never took the lock"
    with ledger.lock("ws/retrain01"):
        order.append("second-in")
    thread.join()
    assert order == ["first-in", "first-out", "second-in"]


def test_lock_gives_up_with_a_clear_error(ledger, azurite):
    other = PromotionLedger(container=ledger.container, lock_timeout=0.5)
    with (
        ledger.lock("ws/retrain01"),
        pytest.raises(PromotionConflictError, match="another run is promoting to ws/retrain01"),
        other.lock("ws/retrain01"),
    ):
        pytest.fail("must not enter")


def test_while_the_lock_is_held_no_one_else_appends(ledger):
    other = PromotionLedger(container=ledger.container, lock_timeout=0.5)
    with ledger.lock("ws/retrain01"):
        with pytest.raises(PromotionConflictError, match="changed while this run was writing"):
            other.append(promotion("intruder"), etag=None)  # the ledger exists (locked) but is empty
        with pytest.raises(PromotionConflictError, match="changed while this run was writing"):
            other.append(promotion("intruder"), etag=other.read("ws/retrain01")[1])
    assert ledger.records("ws/retrain01") == []
    other.append(promotion("after"), etag=other.read("ws/retrain01")[1])  # free again
    assert [r.model_uri for r in ledger.records("ws/retrain01")] == ["after"]


def test_a_lost_lock_records_nothing(ledger):
    other = PromotionLedger(container=ledger.container, lock_timeout=5)
    with ledger.guard("ws/retrain01", expected_model_uri=NO_MODEL, window=WINDOW_1) as guard:
        # The lease ends under this run (as when it expires and another run takes it).
        guard.lease.break_lease(lease_break_period=0)
        with other.lock("ws/retrain01"), pytest.raises(PromotionConflictError, match="nothing was recorded"):
            guard.record(promotion("mine", window=WINDOW_1))  # the etag still matches: the lease refuses it
    assert ledger.records("ws/retrain01") == []


def test_a_guarded_promotion_costs_few_storage_requests(ledger, monkeypatch):
    """A batch promotes to many targets at once, each through its ledger: the record is written with
    the etag the service returned (no read-back), a first record with its baseline in one block."""
    import requests

    sent: list[str] = []
    real_send = requests.Session.send

    def counted(session: requests.Session, request: requests.PreparedRequest, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(str(request.method))
        return real_send(session, request, **kwargs)

    ledger._ensure_container()
    monkeypatch.setattr(requests.Session, "send", counted)
    with ledger.guard("ws/retrain01", expected_model_uri=NO_MODEL, window=WINDOW_1) as guard:
        guard.record(promotion("m1", window=WINDOW_1, previous_model_uri="m0"), baseline_uri="m0")
    # Create the ledger, lease it (unchanged since created: empty, not read), append both records, release.
    assert sent == ["PUT", "PUT", "PUT", "PUT"]
    sent.clear()
    with ledger.guard("ws/retrain01", expected_model_uri="m1", window=WINDOW_2) as guard:
        guard.record(promotion("m2", previous_model_uri="m1"))
    # Lease; read; append; release.
    assert sent == ["PUT", "GET", "PUT", "PUT"]
    assert [(r.kind, r.model_uri) for r in ledger.records("ws/retrain01")] == [
        ("baseline", "m0"),
        ("promotion", "m1"),
        ("promotion", "m2"),
    ]
