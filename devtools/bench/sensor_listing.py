"""4. Sensor listing cost: list requests and time per check as unrelated blobs pile up.

A window's data (``landing/churn/<day>/part-0.csv`` and ``_SUCCESS``) shares its container with
unrelated blobs (``landing/events-<i>.json``, flat under ``landing/``). The project's
``BlobArrivalSensor`` lists only the narrowest literal prefix of the window; the baseline is the Azure
provider's ``WasbPrefixSensor`` on the broad prefix ``landing/``, which walks every blob under it
(5,000 per page). Both pokes run here, against the same Azurite, for real; list requests are counted
from the HTTP requests their clients send.

Azurite keeps blobs in an unindexed in-memory collection, so creating blobs gets slower as the
container grows (and listing any prefix scans the container); the largest counts are measured only
when they fit the time budget, otherwise computed from the measured ones and marked extrapolated.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.bench.core import Bench, Check, Measurement, fmt_seconds, median
from devtools.services import AZURITE_ACCOUNT, AZURITE_KEY

CONTAINER = "bench-listing"
BROAD_PREFIX = "landing/"
DAY = datetime(2026, 11, 26, tzinfo=UTC)
WINDOW_PREFIX = f"landing/churn/{DAY:%Y-%m-%d}/"
PAGE_SIZE = 5000
# Requests per check must not grow at all. Time is reported next to one bare list request's: on
# Azurite any listing scans the whole container, so even that grows with unrelated blobs.
TARGET_REQUESTS_RATIO = 1.0

TITLE = "Sensor listing cost"


def settings(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"measured": [1000, 3000], "extrapolated": [], "checks": 3}
    return {"measured": [1000, 5000], "extrapolated": [10000, 100000], "checks": 5}


class ListRequestCounter(logging.Handler):
    """Counts blob list requests (``comp=list``) that urllib3 sends, whoever sends them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if "comp=list" in record.getMessage():
            with self._lock:
                self.count += 1

    @contextmanager
    def installed(self) -> Iterator[ListRequestCounter]:
        logger = logging.getLogger("urllib3.connectionpool")
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


def add_unrelated_blobs(bench: Bench, start: int, stop: int) -> float:
    """Create ``landing/events-<i>.json`` for i in [start, stop); returns the seconds it took.

    Plain HTTP PUTs with a container SAS: the SDK's per-request overhead would otherwise dominate.
    """
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        CONTAINER,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=2),
    )
    local = threading.local()

    def put(i: int) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection("127.0.0.1", bench.ports.azurite, timeout=120)
        connection.request(
            "PUT",
            f"/{AZURITE_ACCOUNT}/{CONTAINER}/landing/events-{i:06d}.json?{sas}",
            body=b"{}",
            headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"},
        )
        response = connection.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"creating blob {i}: HTTP {response.status}")

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(start, stop)))
    return time.perf_counter() - started


def time_checks(poke: Callable[[], Any], checks: int) -> dict[str, Any]:
    counter = ListRequestCounter()
    seconds, requests, results = [], [], []
    with counter.installed():
        for _ in range(checks):
            before = counter.count
            started = time.perf_counter()
            results.append(bool(poke()))
            seconds.append(time.perf_counter() - started)
            requests.append(counter.count - before)
    return {"seconds": [round(s, 4) for s in seconds], "requests": requests, "results": results}


def bare_list(bench: Bench) -> Callable[[], Any]:
    """One list request for the window's prefix with the SDK: the storage's own floor for a check."""
    container = bench.blob_service().get_container_client(CONTAINER)
    return lambda: [b.name for b in container.list_blobs(name_starts_with=WINDOW_PREFIX)]


def sensors() -> tuple[Callable[[], Any], Callable[[], Any]]:
    from airflow.providers.microsoft.azure.sensors.wasb import WasbPrefixSensor

    from azureml_retrain.sensors import BlobArrivalSensor

    ours = BlobArrivalSensor(
        task_id="wait_for_data",
        container_name=CONTAINER,
        prefix="landing/churn/{window_start:%Y-%m-%d}/",
        pattern="*.csv",
        marker="_SUCCESS",
        stable_for=0,
        window_start=DAY.isoformat(),
        window_end=(DAY + timedelta(days=1)).isoformat(),
        deferrable=False,
    )
    baseline = WasbPrefixSensor(task_id="wait_for_prefix", container_name=CONTAINER, prefix=BROAD_PREFIX)
    context: Any = {}
    return (lambda: ours.poke(context).is_done), (lambda: baseline.poke(context))


def run(bench: Bench) -> Measurement:
    plan = settings(bench.smoke)
    m = Measurement("sensor_listing", TITLE)
    service = bench.blob_service()
    service.create_container(CONTAINER)
    container = service.get_container_client(CONTAINER)
    container.upload_blob(f"{WINDOW_PREFIX}part-0.csv", b"Tenure,Age\n1,2\n")
    container.upload_blob(f"{WINDOW_PREFIX}_SUCCESS", b"")
    ours_poke, baseline_poke = sensors()
    results: dict[int, dict[str, Any]] = {}
    created = 0
    for count in plan["measured"]:
        upload_seconds = add_unrelated_blobs(bench, created, count)
        bench.log(f"  {count} unrelated blobs ({count - created} created in {upload_seconds:.0f}s)")
        created = count
        ours = time_checks(ours_poke, plan["checks"])
        floor = time_checks(bare_list(bench), plan["checks"])
        baseline = time_checks(baseline_poke, max(3, plan["checks"] // 2))
        if not all(ours["results"]) or not all(baseline["results"]):
            raise RuntimeError(f"a sensor did not see the landed window: ours {ours}, baseline {baseline}")
        results[count] = {
            "ours": ours,
            "bare_list": floor,
            "baseline": baseline,
            "upload_seconds": round(upload_seconds, 1),
        }
    m.raw = {"container": CONTAINER, "window_prefix": WINDOW_PREFIX, "broad_prefix": BROAD_PREFIX, "sizes": results}

    smallest, largest = min(results), max(results)

    def med(count: int, who: str, key: str) -> float:
        return median(results[count][who][key])

    for count in sorted(results):
        m.checks.append(
            Check(
                case=f"{count} unrelated blobs: list requests per check",
                value=med(count, "ours", "requests") / med(smallest, "ours", "requests"),
                unit="x",
                target=TARGET_REQUESTS_RATIO if count == largest else None,
                ours=f"{med(count, 'ours', 'requests'):g} req, {fmt_seconds(med(count, 'ours', 'seconds'))}",
                baseline=f"{med(count, 'baseline', 'requests'):g} req, "
                f"{fmt_seconds(med(count, 'baseline', 'seconds'))}",
            )
        )
    m.checks.append(
        Check(
            case=f"time per check, {largest} vs {smallest} unrelated blobs",
            value=round(med(largest, "ours", "seconds") / med(smallest, "ours", "seconds"), 2),
            unit="x",
            target=None,
            ours=f"{fmt_seconds(med(largest, 'ours', 'seconds'))} vs {fmt_seconds(med(smallest, 'ours', 'seconds'))}",
            baseline=f"{med(largest, 'baseline', 'seconds') / med(smallest, 'baseline', 'seconds'):.1f}x",
            note=f"one bare list request: {fmt_seconds(med(largest, 'bare_list', 'seconds'))} vs "
            f"{fmt_seconds(med(smallest, 'bare_list', 'seconds'))} (Azurite scans the container)",
        )
    )
    per_blob = (med(largest, "baseline", "seconds") - med(smallest, "baseline", "seconds")) / (largest - smallest)
    for count in plan["extrapolated"]:
        pages = -(-(count + 1) // PAGE_SIZE)
        baseline_seconds = med(largest, "baseline", "seconds") + per_blob * (count - largest)
        m.checks.append(
            Check(
                case=f"{count} unrelated blobs: list requests per check",
                value=med(largest, "ours", "requests") / med(smallest, "ours", "requests"),
                unit="x",
                target=None,
                ours=f"{med(largest, 'ours', 'requests'):g} req",
                baseline=f"{pages} req, ~{fmt_seconds(baseline_seconds)}",
                note="extrapolated: 5,000 blobs per list page, time linear in blobs",
            )
        )
    m.notes.append(
        f"ours: BlobArrivalSensor.poke on {WINDOW_PREFIX!r}; baseline: WasbPrefixSensor.poke on {BROAD_PREFIX!r}; "
        "requests counted at the HTTP client (urllib3)."
    )
    return m
