"""Land one window's training data where a retraining config's sensor waits for it.

    python -m devtools.land_data CONFIG --window START/END [FILE ...]
    python -m devtools.land_data CONFIG --day DAY [FILE ...]

The window's folder is the config's ``data.prefix`` filled in with the window, in ``data.container``,
reached through the config's Airflow connection ``data.wasb_conn_id`` (the Azure provider's
``WasbHook``): Azurite locally, a real account with a real connection. FILEs are uploaded under their
base names; without FILEs the command generates the rows the config's local training service learns
from (the emulator's dataset, as ``make demo`` does). The marker (``data.marker``) is written last,
after every data blob, so a waiting sensor never accepts a half-landed window; a marker already
there is removed first, so the folder stays open while its data changes.

Nothing a sensor would refuse is landed: every FILE must be selected by ``data.pattern``, non-empty,
and at least ``data.min_files`` of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from devtools import services

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from azureml_retrain.config import RetrainingConfig
    from azureml_retrain.triggers.blob_arrival import ArrivalCriteria
    from azureml_retrain.windows import Window

PROG = "python -m devtools.land_data"
CONFIG_FOLDER = services.ROOT / "dags" / "retraining"
GENERATED_ROWS = 600
# The emulator's drift index: 0 is the data the services' initial models learned from; the demo's
# days are 1, 2, 3.
GENERATED_DRIFT = 1
GENERATED_NAME = "part-{index}.csv"


class UsageError(Exception):
    """A problem with the command line itself (the message names the option)."""


@dataclass(frozen=True)
class DataFile:
    """A data blob to land: its name in the window's folder, and its bytes or the local file holding them."""

    name: str
    source: bytes | Path

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


@dataclass(frozen=True)
class LandedBlob:
    name: str
    size: int


@dataclass
class Landing:
    """What :func:`land` did in the window's folder."""

    account_url: str
    container: str
    blobs: list[LandedBlob] = field(default_factory=list)
    marker: LandedBlob | None = None
    removed: list[str] = field(default_factory=list)
    #: Blobs from before that the sensor selects too (it trains on them with the new ones).
    also_there: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------


def parse_window(text: str) -> tuple[datetime, datetime]:
    """An ISO 8601 interval ``START/END`` (dates or date-times; no time zone means UTC, a date alone
    midnight UTC) as aware UTC datetimes.

    :raise UsageError: naming ``--window`` when an end is missing, unparsable, or not after the start
    """
    from azureml_retrain.exceptions import ConfigurationError
    from azureml_retrain.windows import parse_datetime

    example = "e.g. --window 2026-11-20/2026-11-21 or --window 2026-11-20T02:00Z/2026-11-21T02:00Z"
    start_text, slash, end_text = text.partition("/")
    if not slash or not start_text.strip() or not end_text.strip() or "/" in end_text:
        raise UsageError(f"--window: expected an interval START/END, {example}; got {text!r}")
    try:
        start = parse_datetime(start_text, "--window START")
        end = parse_datetime(end_text, "--window END")
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    assert start is not None and end is not None  # neither text is empty
    if end <= start:
        raise UsageError(f"--window: the end {end.isoformat()} must be after the start {start.isoformat()}")
    return start, end


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--day: expected a date such as 2026-11-20, got {text!r}") from None


def window_of(config: Any, day: date) -> tuple[datetime, datetime]:
    """The schedule's first interval that starts on ``day`` in the config's time zone (the window a
    scheduled run would train on), in UTC. A datetime counts by its date."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    day = day.date() if isinstance(day, datetime) else day
    local = datetime.combine(day, time(), tzinfo=ZoneInfo(config.timezone))
    start = croniter(config.schedule, local - timedelta(microseconds=1)).get_next(datetime)
    end = croniter(config.schedule, start).get_next(datetime)
    return start.astimezone(UTC), end.astimezone(UTC)


def is_schedule_interval(config: Any, start: datetime, end: datetime) -> bool:
    """Whether ``[start, end)`` is one interval of the config's schedule (what a scheduled run trains on)."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    local = start.astimezone(ZoneInfo(config.timezone))
    tick = croniter(config.schedule, local - timedelta(microseconds=1)).get_next(datetime)
    return bool(tick == local and croniter(config.schedule, tick).get_next(datetime) == end)


# --------------------------------------------------------------------------------------------------
# What lands
# --------------------------------------------------------------------------------------------------


def arrival_criteria(config: RetrainingConfig, window: Window) -> ArrivalCriteria:
    """What the config's sensor waits for in ``window`` (the retraining DAG's ``wait_for_data``)."""
    from azureml_retrain.sensors.blob_arrival import window_criteria

    data = config.data
    return window_criteria(
        window,
        container=data.container,
        prefix=data.prefix,
        pattern=data.pattern,
        marker=data.marker,
        argument_prefix="data.",
        min_files=data.min_files,
        stable_for=data.stable_for_seconds,
    )


def local_dataset(config: RetrainingConfig) -> str | None:
    """The emulator's dataset the config's training service learns from; None when it trains elsewhere."""
    return services.training_datasets().get(config.training.azureml_conn_id)


def generated_names(config: RetrainingConfig) -> list[str]:
    """The names of the generated data blobs: as many as the sensor's ``data.min_files`` asks for."""
    return [GENERATED_NAME.format(index=index) for index in range(config.data.min_files)]


def generated_files(
    config: RetrainingConfig,
    dataset: str,
    *,
    rows: int = GENERATED_ROWS,
    drift: int = GENERATED_DRIFT,
    seed: int = 0,
) -> list[DataFile]:
    """``rows`` generated rows of ``dataset``, split over :func:`generated_names`, as CSV with a header."""
    from emulator.datasets import generate_csv

    names = generated_names(config)
    if rows < len(names):
        raise UsageError(f"--rows: {config.model}'s data.min_files is {len(names)}: generate at least that many rows")
    share, extra = divmod(rows, len(names))
    return [
        DataFile(name, generate_csv(dataset, rows=share + (index < extra), window=drift, seed=seed + index).encode())
        for index, name in enumerate(names)
    ]


def given_files(paths: Sequence[str]) -> list[DataFile]:
    """The FILE arguments, landed under their base names.

    :raise UsageError: a FILE is missing or not a file, or two share a base name
    """
    files: dict[str, DataFile] = {}
    for text in paths:
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"FILE {text}: {'not a file' if path.exists() else 'no such file'}")
        if path.name in files:
            raise UsageError(f"FILE {text}: another FILE has the base name {path.name!r} (both would land as one blob)")
        files[path.name] = DataFile(path.name, path)
    return list(files.values())


def check_files(config: RetrainingConfig, criteria: ArrivalCriteria, files: Sequence[DataFile]) -> None:
    """Refuse data the config's sensor would never accept, naming the setting it breaks.

    :raise UsageError: a file the pattern does not select, the marker's name, an empty file, or fewer
        files than ``data.min_files``
    """
    source = f"{config.model}.yaml"
    for file in files:
        if criteria.marker is not None and file.name == criteria.marker:
            raise UsageError(
                f"FILE {file.name}: is the marker's name (data.marker {config.data.marker!r} in {source}); "
                "the command writes the marker itself, after the data"
            )
        if not criteria.selects(criteria.prefix + file.name):
            raise UsageError(
                f"FILE {file.name}: does not match data.pattern {criteria.pattern!r} of {source}: the sensor would "
                "not train on it (rename the file, or change the pattern)"
            )
        if file.size == 0:
            raise UsageError(f"FILE {file.name}: is empty; the sensor waits until no blob of the window is empty")
    if len(files) < config.data.min_files:
        raise UsageError(
            f"{source} asks for at least {config.data.min_files} files (data.min_files); {len(files)} given"
        )


# --------------------------------------------------------------------------------------------------
# Landing
# --------------------------------------------------------------------------------------------------


def land(
    config: RetrainingConfig,
    window: Window,
    files: Sequence[DataFile],
    *,
    replace: bool = False,
    client: BlobServiceClient | None = None,
) -> Landing:
    """Upload ``files`` into ``window``'s folder, then the marker (if the config has one), last.

    A marker already in the folder is deleted first: the folder is open while its data changes.
    The container is created when missing.

    :param replace: delete every blob already in the folder first (data of an earlier landing)
    :param client: the storage to land in; default: the config's connection (``data.wasb_conn_id``)
        through the Azure provider's ``WasbHook``
    :raise UsageError: the files break the config's rules (see :func:`check_files`)
    :raise ConfigurationError: the storage account refused the connection's credential
    """
    from contextlib import suppress

    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    from azureml_retrain.storage import storage_call, wasb_hook

    criteria = arrival_criteria(config, window)
    check_files(config, criteria, files)
    conn_id = config.data.wasb_conn_id
    if client is None:
        # WasbHook types its client as sync-or-async; the sync hook always builds a sync one.
        client = cast("BlobServiceClient", wasb_hook(conn_id).blob_service_client)
    container = client.get_container_client(criteria.container)
    # Only the query of a URL can hold a SAS.
    landing = Landing(account_url=str(client.url).split("?", 1)[0].rstrip("/"), container=criteria.container)
    # No retries on a refused connection for the first request: an unreachable account (services not
    # started, a wrong host) fails in a moment instead of after the SDK's minute of back-off.
    with storage_call(conn_id, f"looking for container {criteria.container}"):
        exists = container.exists(retry_connect=0)
    if not exists:  # created only when missing: a credential may upload without the right to create
        with storage_call(conn_id, f"creating container {criteria.container}"), suppress(ResourceExistsError):
            container.create_container()
    with storage_call(conn_id, f"listing {criteria.container}/{criteria.prefix}"):
        existing = [blob.name for blob in container.list_blobs(name_starts_with=criteria.prefix)]
    if criteria.marker_name in existing:
        with storage_call(conn_id, f"deleting {criteria.marker_name}"), suppress(ResourceNotFoundError):
            container.delete_blob(criteria.marker_name)
    landed = {criteria.prefix + file.name for file in files}
    for name in existing:
        if name == criteria.marker_name or name in landed:
            continue
        if replace:
            with storage_call(conn_id, f"deleting {name}"), suppress(ResourceNotFoundError):
                container.delete_blob(name)
            landing.removed.append(name)
        elif criteria.selects(name):
            landing.also_there.append(name)
    for file in files:
        name = criteria.prefix + file.name
        with storage_call(conn_id, f"uploading {criteria.container}/{name}"), _opened(file.source) as data:
            container.upload_blob(name, data, length=file.size, overwrite=True)
        landing.blobs.append(LandedBlob(name, file.size))
    if criteria.marker_name is not None:
        with storage_call(conn_id, f"writing the marker {criteria.container}/{criteria.marker_name}"):
            container.upload_blob(criteria.marker_name, b"", overwrite=True)
        landing.marker = LandedBlob(criteria.marker_name, 0)
    return landing


@contextlib.contextmanager
def _opened(source: bytes | Path) -> Iterator[Any]:
    """The bytes, or the file open for reading (streamed, however large)."""
    if isinstance(source, bytes):
        yield source
        return
    with source.open("rb") as stream:
        yield stream


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def use_local_services_unless_configured(environ: MutableMapping[str, str]) -> str:
    """Fill in the local services' Airflow environment (``devtools.services env``) unless ``environ``
    already has an Airflow environment (``AIRFLOW_HOME`` set: that env eval'd, or a real installation);
    says which one the connections come from. Variables already set are kept either way."""
    if environ.get("AIRFLOW_HOME"):
        return f"this shell's Airflow environment (AIRFLOW_HOME={environ['AIRFLOW_HOME']})"
    for key, value in services.airflow_environment().items():
        environ.setdefault(key, value)
    return "the local services' environment (python -m devtools.services env)"


def resolve_config_path(text: str) -> Path:
    """CONFIG: a config file, or the name of a model in dags/retraining/."""
    path = Path(text)
    if path.exists() or path.suffix:
        return path
    return CONFIG_FOLDER / f"{text}.yaml"


def next_steps(config: RetrainingConfig, window: Window) -> list[str]:
    """The commands that run the retraining DAG on ``window``."""
    from azureml_retrain.windows import WINDOW_PARAM, window_interval

    conf = json.dumps({WINDOW_PARAM: window_interval(window.start, window.end)})
    return [
        f"airflow dags unpause {config.dag_id}   # DAGs start paused; a triggered run waits until unpaused",
        f"airflow dags trigger {config.dag_id} --conf {shlex.quote(conf)}",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Land one window's training data where a retraining config's sensor waits for it: FILEs, or\n"
            "generated rows of the config's local training dataset; the marker (data.marker) is written\n"
            "last. Ends with the commands that run the DAG on the window."
        ),
        epilog=(
            "storage:\n"
            "  Through the config's connection (data.wasb_conn_id). With AIRFLOW_HOME set (after\n"
            '  eval "$(.venv/bin/python -m devtools.services env)", or a real installation) the\n'
            "  connections are that environment's; otherwise the local services' (Azurite on\n"
            "  127.0.0.1:$AZURITE_PORT, default 10000). Keys and SAS tokens are never printed.\n"
            "\n"
            "examples:\n"
            f"  {PROG} churn --day 2026-11-20\n"
            f"  {PROG} dags/retraining/churn.yaml --window 2026-11-20T02:00Z/2026-11-21T02:00Z a.csv b.csv\n"
        ),
    )
    parser.add_argument(
        "config", metavar="CONFIG", help="a retraining config file, or a model name in dags/retraining/"
    )
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--window",
        metavar="START/END",
        help="the window as an ISO 8601 interval of dates or date-times, end exclusive (2026-11-20/2026-11-21); "
        "no time zone means UTC, a date alone midnight UTC",
    )
    when.add_argument(
        "--day",
        metavar="DAY",
        help="the schedule's interval that starts on DAY in the config's time zone (what a scheduled run "
        "trains on): churn's '0 2 * * *' gives DAY 02:00 to the next day 02:00",
    )
    parser.add_argument(
        "files",
        metavar="FILE",
        nargs="*",
        help="files to land under their base names (each matching data.pattern); none: generated data",
    )
    parser.add_argument(
        "--rows",
        type=int,
        help=f"generated rows in all (default {GENERATED_ROWS}); split over data.min_files files",
    )
    parser.add_argument("--seed", type=int, help="generated data's random seed (default 0)")
    parser.add_argument(
        "--drift",
        type=int,
        help=f"how far generated data drifts from what the initial models learned (default {GENERATED_DRIFT}; "
        "make demo lands 1, 2, 3 on its three days)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete the blobs already in the window's folder first (an earlier landing's data)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Intermixed: FILEs may follow the options (CONFIG --day D a.csv b.csv).
    args = parser.parse_intermixed_args(argv)
    shaping = [f"--{name}" for name in ("rows", "seed", "drift") if getattr(args, name) is not None]
    if args.files and shaping:
        parser.error(f"{', '.join(shaping)}: shape generated data; FILEs are landed as they are")
    # Before anything imports Airflow: it reads AIRFLOW_HOME and the connections at import.
    environment = use_local_services_unless_configured(os.environ)
    from azureml_retrain.config import load_config
    from azureml_retrain.exceptions import ConfigurationError

    try:
        config = load_config(resolve_config_path(args.config))
    except ConfigurationError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    try:
        window, files = window_and_files(config, args)
    except UsageError as error:
        parser.error(str(error))
    try:
        landing = land(config, window, files, replace=args.replace)
    except Exception as error:
        problem = storage_problem(error, config.data.wasb_conn_id, environment)
        if problem is None:
            raise
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 1
    print_landing(config, window, landing, environment)
    return 0


def window_and_files(config: RetrainingConfig, args: argparse.Namespace) -> tuple[Window, list[DataFile]]:
    """The window and the data the command line asks for, checked against the config's sensor before
    any storage call (nothing lands when a file would be refused).

    :raise UsageError: naming the option or FILE at fault
    """
    from azureml_retrain.windows import Window

    if args.window is not None:
        window = Window(*parse_window(args.window), "arguments")
    else:
        window = Window(*window_of(config, parse_day(args.day)), "schedule")
    if args.files:
        files = given_files(args.files)
    else:
        dataset = local_dataset(config)
        if dataset is None:
            raise UsageError(
                f"{config.model}.yaml trains through connection '{config.training.azureml_conn_id}', which has "
                f"no local dataset to generate (the local training services: "
                f"{', '.join(sorted(services.training_datasets()))}): pass the window's FILEs"
            )
        files = generated_files(
            config,
            dataset,
            rows=GENERATED_ROWS if args.rows is None else args.rows,
            drift=GENERATED_DRIFT if args.drift is None else args.drift,
            seed=args.seed or 0,
        )
    check_files(config, arrival_criteria(config, window), files)
    return window, files


def storage_problem(error: Exception, conn_id: str, environment: str) -> str | None:
    """What to tell the user about ``error`` from landing (never a key or SAS); None: not a storage problem."""
    from airflow.sdk.exceptions import AirflowNotFoundException
    from azure.core.exceptions import AzureError, ServiceRequestError

    from azureml_retrain.exceptions import ConfigurationError
    from azureml_retrain.triggers.blob_arrival import describe_error

    if isinstance(error, ConfigurationError):  # a refused credential, named by its field (storage_call)
        return str(error)
    if isinstance(error, AirflowNotFoundException):
        return (
            f"connection '{conn_id}' (data.wasb_conn_id) is not defined in {environment}; define it "
            f"(AIRFLOW_CONN_{conn_id.upper()}, or in the installation whose AIRFLOW_HOME this shell sets)"
        )
    if isinstance(error, AzureError):
        # describe_error drops anything that looks like a key or a SAS from the SDK's text.
        problem = f"storage of connection '{conn_id}': {describe_error(error)}"
        if isinstance(error, ServiceRequestError):
            problem += " (not reachable; locally, `make services` starts Azurite)"
        return problem
    return None


def print_landing(config: RetrainingConfig, window: Window, landing: Landing, environment: str) -> None:
    start, end = window.start, window.end
    print(f"Window {start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M} UTC of {config.dag_id}")
    if not is_schedule_interval(config, start, end):
        print(
            f"  (not an interval of its schedule {config.schedule!r} {config.timezone}: only a run given this window "
            "trains on it)"
        )
    print(f"Storage: {landing.account_url}, connection '{config.data.wasb_conn_id}' from {environment}")
    for name in landing.removed:
        print(f"  removed  {landing.container}/{name}")
    rows = [*landing.blobs, *([landing.marker] if landing.marker else [])]
    width = max(len(landing.container) + 1 + len(blob.name) for blob in rows)
    for blob in rows:
        note = "  (marker, written last)" if blob is landing.marker else ""
        print(f"  wrote    {landing.container + '/' + blob.name:<{width}} {blob.size:>12,} bytes{note}")
    for name in landing.also_there:
        print(f"  kept     {landing.container}/{name} (from before: the sensor takes it too; --replace removes it)")
    print(f"Next, run {config.dag_id} on this window (for `make airflow`, in a shell that ran")
    print('`eval "$(.venv/bin/python -m devtools.standalone env)"`):')
    for line in next_steps(config, window):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
