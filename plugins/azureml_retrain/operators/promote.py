"""Promote a trained model to serving: classic endpoints (PATCH) and Resource Manager web services.

Both operators follow one sequence: read what serves now, change it only if it differs (so a retry
or re-run never promotes twice), read the target back until it shows the new model, optionally
score a smoke-test payload, and put the previous model back if that smoke test fails. They return
what served before, for rollback.

With ``ledger_container`` set, a promotion also goes through the target's promotion ledger
(:mod:`azureml_retrain.ledger`): it holds the target's lock, applies only if the ledger still shows
``expected_model_uri`` and the new model's window is not older than the serving one's, and records
the change (with the metrics, window and run) once it is verified.

Either operator promotes one target (its addressing arguments), or a batch of them (``targets``):
each target of a batch goes, in a thread of its own, through the same sequence and ledger steps as a
single one (its own lock, guard, record and put-back), so one target's failure does not stop the
others; the task fails afterwards naming the failed targets, and its retry finds the others
already serving the model and leaves them as they are. A batch keeps the number of task instances
(each costing a worker start) low when a model is promoted to many targets.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, Context, conf

from azureml_retrain.blobs import BlobLocation, parse_structured, resolve_output
from azureml_retrain.exceptions import (
    AzureMLServiceError,
    ConfigurationError,
    PromotionBatchError,
    PromotionBatchRejectedError,
    PromotionVerificationError,
)
from azureml_retrain.hooks.classic_management import (
    DEFAULT_ENDPOINT,
    AzureMLClassicManagementHook,
    validate_endpoint_name,
)
from azureml_retrain.hooks.resource_manager import (
    ArmOperation,
    AzureMLResourceManagerHook,
    ProvisioningState,
    get_member,
    operation_error,
    operation_state,
)
from azureml_retrain.hooks.web_service import AzureMLWebServiceHook
from azureml_retrain.lazy import cached_property
from azureml_retrain.links import LINK_XCOM_KEY, AzureMLLink, classic_endpoint_link, resource_manager_link
from azureml_retrain.redaction import strip_query
from azureml_retrain.storage import StorageAccount

if TYPE_CHECKING:
    from openlineage.client.event_v2 import Dataset

    from azureml_retrain.lineage import Lineage

TRAINED_MODEL_SUFFIX = "[trained model]"


def smoke_test(hook: AzureMLWebServiceHook, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Score ``rows`` and check every row came back with a scored value."""
    scored = hook.score(list(rows))
    if len(scored) != len(rows) or not all(any(k.startswith("Scored") for k in row) for row in scored):
        raise PromotionVerificationError(
            f"smoke test through RRS returned {len(scored)} row(s) without scored columns for {len(rows)} input row(s)"
        )
    return {"rows": len(rows), "predictions": [{k: v for k, v in r.items() if k.startswith("Scored")} for r in scored]}


def split_model_uri(uri: str) -> dict[str, str | None]:
    """``{"base_location", "relative_location"}`` of a model URI given by URL (last path segment apart)."""
    base, _, relative = uri.rpartition("/")
    return {"base_location": f"{base}/", "relative_location": relative}


def location_uri(location: Mapping[str, str | None]) -> str:
    """One string naming a model location, as the ledger records it."""
    return f"{location.get('base_location') or ''}{(location.get('relative_location') or '').lstrip('/')}"


#: XCom key of a promotion the ledger's guard refused: ``{"target", "reason"}`` (the task is skipped),
#: or a list of them for the refused targets of a batch.
REFUSAL_XCOM_KEY = "refusal"
#: XCom key of a batch whose task failed: the results of its targets that were promoted (or already
#: served the model) all the same; a task that succeeds returns them as its value instead.
TARGET_RESULTS_XCOM_KEY = "target_results"
#: The most targets of a batch promoted at the same time (each in a thread). Within the Azure storage
#: client's 10 pooled connections (shared by the batch): past them each thread opens and drops its own,
#: logging a warning each time; 8 promoted 50 endpoints as fast as 16 did.
DEFAULT_MAX_PARALLEL_TARGETS = 8


def _challenger_metrics(value: Any) -> dict[str, Any]:
    """Metrics from an EvaluateModelOperator decision (its ``challenger``) or a plain metrics dict."""
    if not isinstance(value, Mapping):
        return {}
    metrics = value.get("challenger") if "challenger" in value else value
    return dict(metrics) if isinstance(metrics, Mapping) else {}


def input_locations(value: Any) -> list[str] | None:
    """``container/blob`` of each training input in ``value`` (see ``training_inputs``), SAS dropped."""
    value = parse_structured(value, "training_inputs")
    if value is None:
        return None
    if isinstance(value, Mapping) and not {"container", "blob_name"} <= set(value):
        value = list(value.values())
    items = value if isinstance(value, list | tuple) else [value]
    return [strip_query(BlobLocation.parse(item, "training_inputs").relative_location) for item in items]


class _PromoteBase(BaseOperator):
    """The arguments, ledger and results the promotion operators share (use one of its subclasses).

    A promotion reads what the target serves, changes it only if it differs, reads it back, and
    optionally smoke-tests it (see the module's docstring). With ``ledger_container`` it also holds
    the target's ledger lock, is refused before anything changes if the ledger no longer shows
    ``expected_model_uri`` or ``window`` is older than the serving model's, and records the change
    (kind ``record_kind``, with ``metrics``, ``window``, the run and the operator's arguments that
    address the target) once it is verified.

    :param model: the model to serve: the ``.ilearner`` blob in ``wasb_conn_id``'s account
        (``"container/path.ilearner"`` or ``{"container", "blob_name"}``), SubmitBesJobOperator's
        result (its ``output_name`` output), or any model URI (``https://...``, or ``aml://...`` for a
        model the service holds itself, e.g. to roll back). (templated)
    :param output_name: which output of a SubmitBesJobOperator result is the model. (templated)
    :param trained_model_name: the trained-model resource to replace: its name on a classic endpoint
        (case-sensitive) or the asset's name in a Resource Manager definition (any casing), e.g.
        ``"<experiment> [trained model]"``; None: the one whose name ends with ``[trained model]``,
        when there is exactly one. (templated)
    :param wasb_conn_id: the wasb connection of the model's storage account, the ledger and
        ``export_to``. (templated)
    :param smoke_test_rows: input rows (column → value) to score through the target once it serves
        the new model; every row must come back with a ``Scored ...`` column, else the previous model
        is put back and the task fails. None or empty: no smoke test. (templated)
    :param verify_timeout: how long a classic endpoint may take to show the new model (or the
        previous one, after a put-back) when read back; UpdateWebServiceDefinitionOperator waits
        with ``operation_timeout`` instead.
    :param verify_poll_interval: seconds between those reads of a classic endpoint.
    :param target_name: the target's name in the ledger (its record blob and lock) and in the
        result's ``target``, with ``ledger_container`` only; None: ``<web_service_id>/<endpoint_name>``
        for a classic endpoint, the web service's name for a Resource Manager one. (templated)
    :param ledger_container: the container of the promotion ledger in ``wasb_conn_id``'s account (a
        config's DAG uses ``model-ledger`` unless the config names another); None: no ledger (no
        lock, no guard, no record). (templated)
    :param expected_model_uri: with the ledger: the model the run evaluated against; the promotion is
        refused if the ledger's latest record shows another one (``""``: an empty ledger is
        expected). A record this DAG run wrote itself (on an earlier try) does not count. None: not
        checked. (templated)
    :param window: the new model's data window, ``{"start", "end"}`` in ISO 8601 (as in
        BlobArrivalSensor's result), recorded in the ledger; a promotion whose ``end`` is earlier than
        the serving model's is refused unless ``allow_older_window``. None: not checked. (templated)
    :param metrics: the metrics to record in the ledger: EvaluateModelOperator's decision (its
        ``challenger`` metrics are taken) or a metrics dict; None records none. (templated)
    :param training_inputs: what the model was trained on, recorded in the ledger (the model history
        view shows it): a blob location (``"container/path"`` or ``{"container", "blob_name"}``), a
        list of them, or SubmitBesJobOperator's ``inputs`` mapping (web service input name → blob
        location); a query string (SAS) is dropped. None records none. (templated)
    :param allow_older_window: promote a model of an older ``window`` than the serving one's (a
        rollback always may).
    :param record_kind: the ledger record's kind: ``"promotion"`` or ``"rollback"`` (which may put
        back a model of an older window); anything else is a ConfigurationError when the DAG is parsed.
    :param on_refusal: what a refusal by the ledger's guard does: ``"skip"`` skips the task (the
        reason goes to the ``refusal`` XCom), ``"fail"`` fails it without retries; anything else is a
        ConfigurationError when the DAG is parsed.
    :param targets: promote to a batch of targets instead of one: a list of mappings, each with the
        arguments that address one target (the subclass's addressing arguments, plus
        ``target_name``, ``trained_model_name`` and ``expected_model_uri``); every other argument is
        shared. Each target goes through the whole single-target sequence, with its own ledger lock,
        guard and record, up to ``max_parallel_targets`` at a time; a failing target does not stop
        the others. The task then returns the list of the targets' results; it is skipped when the
        ledger's guard refused every target, and fails when any target failed, naming them, after
        pushing the others' results to the ``target_results`` XCom (its retry finds those already
        serving the model and leaves them as they are). The extra link opens the first target.
        None: the single target the addressing arguments name. (templated)
    :param max_parallel_targets: how many targets of ``targets`` are promoted at the same time.
    :xcom azureml_link: the URL the task's "Azure ML" extra link opens (:class:`AzureMLLink`), pushed
        before anything changes (a batch's first target).
    :xcom refusal: ``{"target", "reason"}`` when the ledger's guard refused the promotion and
        ``on_refusal="skip"``; a list of them for a batch.
    :xcom target_results: a failed batch's results of the targets that were promoted or already
        served the model.
    :raises AirflowSkipException: the ledger's guard refused the promotion (``on_refusal="skip"``):
        the target keeps its model; the reason is in the ``refusal`` XCom.
    :raises PromotionRefusedError: the same refusal with ``on_refusal="fail"``; no retries.
    :raises PromotionConflictError: another run held the target's ledger lock too long or wrote the
        ledger at the same time; retried.
    :raises PromotionBatchError: a target of ``targets`` failed (the message names each with its
        error); retried, unless every failure was one that fails without retries
        (``PromotionBatchRejectedError``).
    :raises AzureMLServiceError: a service call failed after the hook's own retries; a request the
        service rejected (``AzureMLRequestRejectedError``: a 4xx other than 408 and 429) fails
        without Airflow's retries.
    """

    template_fields: Sequence[str] = (
        "model",
        "output_name",
        "trained_model_name",
        "wasb_conn_id",
        "smoke_test_rows",
        "target_name",
        "ledger_container",
        "expected_model_uri",
        "window",
        "metrics",
        "training_inputs",
        "targets",
    )
    #: The arguments a mapping of ``targets`` may set: what addresses one target.
    target_fields: ClassVar[tuple[str, ...]] = ("target_name", "trained_model_name", "expected_model_uri")
    # The argument naming the connection of :attr:`hook` (targets of a batch sharing it share the hook's).
    hook_conn_id_field: ClassVar[str]
    if TYPE_CHECKING:
        hook: AzureMLClassicManagementHook | AzureMLResourceManagerHook
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "model": "json",
        "smoke_test_rows": "json",
        "window": "json",
        "metrics": "json",
        "targets": "json",
    }
    ui_color = "#d4edda"
    operator_extra_links = (AzureMLLink(),)

    def __init__(
        self,
        *,
        model: Any,
        output_name: str = "output1",
        trained_model_name: str | None = None,
        wasb_conn_id: str = "wasb_default",
        smoke_test_rows: Sequence[Mapping[str, Any]] | None = None,
        verify_timeout: timedelta = timedelta(minutes=5),
        verify_poll_interval: float = 5.0,
        target_name: str | None = None,
        ledger_container: str | None = None,
        expected_model_uri: str | None = None,
        window: Mapping[str, str] | None = None,
        metrics: Any = None,
        training_inputs: Any = None,
        allow_older_window: bool = False,
        record_kind: str = "promotion",
        on_refusal: str = "skip",
        targets: Sequence[Mapping[str, Any]] | None = None,
        max_parallel_targets: int = DEFAULT_MAX_PARALLEL_TARGETS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.output_name = output_name
        self.trained_model_name = trained_model_name
        self.wasb_conn_id = wasb_conn_id
        self.smoke_test_rows = smoke_test_rows
        self.verify_timeout = verify_timeout
        self.verify_poll_interval = verify_poll_interval
        self.target_name = target_name
        self.ledger_container = ledger_container
        self.expected_model_uri = expected_model_uri
        self.window = window
        self.metrics = metrics
        self.training_inputs = training_inputs
        self.allow_older_window = allow_older_window
        self.record_kind = record_kind
        if record_kind not in ("promotion", "rollback"):
            raise ConfigurationError(f"record_kind: expected 'promotion' or 'rollback', got {record_kind!r}")
        if on_refusal not in ("skip", "fail"):
            raise ConfigurationError(f"on_refusal: expected 'skip' or 'fail', got {on_refusal!r}")
        self.on_refusal = on_refusal
        self.targets = targets
        if max_parallel_targets < 1:
            raise ConfigurationError(f"max_parallel_targets: expected at least 1, got {max_parallel_targets!r}")
        self.max_parallel_targets = max_parallel_targets
        if isinstance(targets, Sequence) and not isinstance(targets, str):
            for index, spec in enumerate(targets):  # a literal list is checked when the DAG is parsed
                self._check_target_spec(spec, index)

    @cached_property
    def storage(self) -> StorageAccount:
        """The storage account of ``wasb_conn_id`` (one per task: a batch's targets share it)."""
        return StorageAccount(self.wasb_conn_id)

    def model_location(self) -> BlobLocation:
        location = resolve_output(self.model, self.output_name, field="model")
        if not location.blob_name.lower().endswith(".ilearner"):
            raise ConfigurationError(f"model: {location} is not a trained model (.ilearner)")
        return location

    def target_model(self, storage: StorageAccount) -> dict[str, str | None]:
        """Where the model to serve is: a blob of ``wasb_conn_id`` (path or SubmitBesJob result), or
        any model URI (``https://...``, or a service-held ``aml://...`` model, e.g. for a rollback)."""
        model = parse_structured(self.model, "model")
        if isinstance(model, str) and "://" in model:
            if _same_base(model[: len(storage.base_location)], storage.base_location):
                relative = model[len(storage.base_location) :]
                return {"base_location": storage.base_location, "relative_location": relative}
            return split_model_uri(model)
        return {"base_location": storage.base_location, "relative_location": self.model_location().relative_location}

    # --- the ledger ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if self.targets is not None:
            return self._execute_batch(context)
        from azureml_retrain.ledger import PromotionRefusedError

        target = self.target_name or self.default_target_name
        try:
            return self._promote_target(context)
        except PromotionRefusedError as refusal:
            # The ledger's guard said no before anything changed: the target keeps its model. That is
            # an outcome of the run (recorded with why), not a failure to retry.
            if self.on_refusal == "fail":
                raise
            from airflow.sdk.exceptions import AirflowSkipException

            context["ti"].xcom_push(key=REFUSAL_XCOM_KEY, value={"target": target, "reason": str(refusal)})
            raise AirflowSkipException(f"not promoted: {refusal}") from None

    def _promote_target(self, context: Context) -> dict[str, Any]:
        """This operator's one target, through its ledger when it has one (a refusal raises)."""
        if not self.ledger_container:
            return self.promote(context)
        from azureml_retrain.ledger import PromotionLedger

        # A batch's targets share one ledger object (its storage client); each has its own lock and record.
        ledger = getattr(self, "_batch_ledger", None) or PromotionLedger(self.wasb_conn_id, self.ledger_container)
        return self._promote_guarded(context, ledger, self.target_name or self.default_target_name)

    # --- a batch of targets ----------------------------------------------------------------------

    def _check_target_spec(self, spec: Any, index: int) -> Mapping[str, Any]:
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"targets[{index}]: expected a mapping of a target's arguments, got {spec!r}")
        unknown = sorted(set(spec) - set(self.target_fields))
        if unknown:
            raise ConfigurationError(
                f"targets[{index}]: {unknown} cannot differ between targets of a batch; a target sets only "
                f"{list(self.target_fields)}"
            )
        return spec

    def batch_members(self) -> list[Any]:
        """One copy of this operator per mapping of ``targets``, addressing that target alone."""
        if isinstance(self.targets, str) or not isinstance(self.targets, Sequence):
            raise ConfigurationError(f"targets: expected a list of targets' arguments, got {self.targets!r}")
        specs = [self._check_target_spec(given, index) for index, given in enumerate(self.targets)]
        if specs:
            # Built once, before the copies: the storage client (thread-safe) and the connection are
            # shared by every target of the batch instead of looked up again for each.
            self.storage.client  # noqa: B018
        members = []
        for index, spec in enumerate(specs):
            member = copy.copy(self)
            member._lock_for_execution = True  # a plain copy: no DAG bookkeeping on the assignments below
            member.__dict__.pop("hook", None)
            member.targets = None
            member._link_owner = index == 0
            for key, value in spec.items():
                setattr(member, key, value)
            if getattr(member, self.hook_conn_id_field) == getattr(self, self.hook_conn_id_field):
                member.__dict__["hook"] = self.hook.sibling()  # its own HTTP session per thread
            members.append(member)
        names = [m.target_name or m.default_target_name for m in members]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigurationError(f"targets: each target of a batch must be another one; repeated: {repeated}")
        return members

    def _execute_batch(self, context: Context) -> list[dict[str, Any]]:
        from azureml_retrain.ledger import PromotionRefusedError

        members = self.batch_members()
        if not members:
            return []
        if self.ledger_container:
            from azureml_retrain.ledger import PromotionLedger

            ledger = PromotionLedger(self.wasb_conn_id, self.ledger_container)
            for member in members:
                member._batch_ledger = ledger

        def promote_one(member: _PromoteBase) -> tuple[str, Any]:
            try:
                return "done", member._promote_target(context)
            except PromotionRefusedError as refusal:
                return "refused", refusal
            except Exception as error:  # one target's failure must not stop the others
                return "failed", error

        workers = min(self.max_parallel_targets, len(members))
        self.log.info("Promoting to %d target(s), %d at a time", len(members), workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promote") as pool:
            outcomes = list(pool.map(promote_one, members))
        results: list[dict[str, Any]] = []
        refusals: list[dict[str, str]] = []
        failures: dict[str, BaseException] = {}
        for member, (kind, value) in zip(members, outcomes, strict=True):
            name = member.target_name or member.default_target_name
            if kind == "done":
                results.append(value)
            elif kind == "refused" and self.on_refusal == "skip":
                self.log.warning("Not promoted to %s: %s", name, value)
                refusals.append({"target": name, "reason": str(value)})
            else:
                self.log.error("Promotion to %s failed: %s", name, value, exc_info=value)
                failures[name] = value
        promoted = sorted(r["target"] for r in results if r.get("changed"))
        self.log.info(
            "Batch of %d: promoted %s, already serving %s, refused %s, failed %s",
            len(members),
            promoted,
            sorted(r["target"] for r in results if not r.get("changed")),
            [r["target"] for r in refusals],
            sorted(failures),
        )
        if refusals:
            context["ti"].xcom_push(key=REFUSAL_XCOM_KEY, value=refusals)
        if failures:
            if results:
                context["ti"].xcom_push(key=TARGET_RESULTS_XCOM_KEY, value=results)
            from airflow.sdk.exceptions import AirflowFailException

            detail = "; ".join(f"{name}: {type(error).__name__}: {error}" for name, error in sorted(failures.items()))
            message = (
                f"{len(failures)} of {len(members)} target(s) failed: {detail} "
                f"(the other targets were promoted or already served the model: a retry redoes only these)"
            )
            if all(isinstance(error, AirflowFailException) for error in failures.values()):
                raise PromotionBatchRejectedError(message)
            raise PromotionBatchError(message)
        if not results:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"not promoted: {'; '.join(r['reason'] for r in refusals)}")
        return results

    def _push_link(self, context: Context, url: str) -> None:
        """The extra link's URL (a batch pushes its first target's)."""
        if getattr(self, "_link_owner", True):
            context["ti"].xcom_push(key=LINK_XCOM_KEY, value=url)

    def _promote_guarded(self, context: Context, ledger: Any, target: str) -> dict[str, Any]:
        from azureml_retrain.ledger import LedgerRecord

        run_id = str(context.get("run_id") or "")
        map_index = getattr(context.get("ti"), "map_index", -1)
        inputs = input_locations(self.training_inputs)  # a bad value fails before the target changes
        with ledger.guard(
            target,
            expected_model_uri=self.expected_model_uri,
            window=self.window,
            allow_older_window=self.allow_older_window or self.record_kind == "rollback",
            # Retries of this task instance: see its own earlier record, take over its own lock.
            run=(self.dag_id, run_id) if run_id else None,
            owner=f"{self.dag_id}/{run_id}/{self.task_id}/{map_index}" if run_id else None,
        ) as guard:
            result = self.promote(context)
            result["target"] = target
            head = guard.head
            if (
                not result["changed"]
                and head is not None
                and head.model_uri == result["model_uri"]
                and (head.dag_id, head.run_id) == (self.dag_id, run_id)
            ):
                # An earlier try of this run promoted it (and recorded it): this try found it serving.
                result["promoted_by_earlier_try"] = True
            # Also record a change the ledger missed: a retry after the PATCH landed but before it was
            # recorded (an empty ledger included: the first promotion of a target can die there too).
            behind = head.model_uri != result["model_uri"] if head is not None else not result["changed"]
            if result["changed"] or behind:
                if result["changed"]:
                    previous = result["previous_model_uri"]
                else:  # what served before the lost PATCH is only known if the ledger had it
                    previous = head.model_uri if head is not None else None
                guard.record(
                    LedgerRecord(
                        kind=self.record_kind,  # type: ignore[arg-type]
                        target=target,
                        model_uri=result["model_uri"],
                        previous_model_uri=previous,
                        metrics=_challenger_metrics(self.metrics),
                        window=dict(self.window) if self.window else None,
                        dag_id=self.dag_id,
                        run_id=str(context.get("run_id") or ""),
                        reason=None if result["changed"] else "found already serving; recorded late",
                        served_by=self.served_by(),
                        inputs=inputs,
                    ),
                    baseline_uri=previous,
                )
                self.log.info(
                    "Recorded the %s of %s in the ledger of %s", self.record_kind, result["model_uri"], target
                )
        return result

    @property
    def default_target_name(self) -> str:
        raise NotImplementedError

    def served_by(self) -> dict[str, Any]:
        """This operator's class and the arguments that address its target (recorded in the ledger)."""
        return {"operator": type(self).__name__, "trained_model_name": self.trained_model_name, **self.target_address()}

    def target_address(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """The model as input, the target that serves it as output (see docs/lineage.md)."""
        from azureml_retrain.lineage import model_dataset, operator_lineage

        storage = self.storage
        members = self.batch_members() if self.targets is not None else [self]
        return operator_lineage(
            inputs=[model_dataset(storage.account_name, self.target_model(storage))],
            outputs=[member.target_dataset() for member in members],
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage:
        return self.get_openlineage_facets_on_complete(task_instance)

    def target_dataset(self) -> Dataset:
        """The served endpoint or web service as an OpenLineage dataset."""
        raise NotImplementedError

    def promote(self, context: Context) -> dict[str, Any]:
        raise NotImplementedError

    def _wait_until(self, description: str, check: Any) -> None:
        deadline = time.monotonic() + self.verify_timeout.total_seconds()
        while not check():
            if time.monotonic() >= deadline:
                raise PromotionVerificationError(f"{description} not seen within {self.verify_timeout}")
            time.sleep(self.verify_poll_interval)


class PatchEndpointOperator(_PromoteBase):
    """Point a non-default endpoint of a classic predictive web service at a new trained model.

    Mints a fresh short-lived read-only SAS for the ``.ilearner`` at patch time, PATCHes the
    endpoint's ``[trained model]`` resource, reads the endpoint back until it shows the new model,
    and optionally scores ``smoke_test_rows`` through the endpoint's RRS API. A smoke-test failure
    re-points the endpoint at the previous model (with a fresh SAS when it is in this storage
    account, else at the location the endpoint reported, e.g. a model the service holds itself) and
    reads it back, then fails the task. An endpoint that already serves the model is left as it is
    (``changed`` is False).

    :param web_service_id: the predictive web service's id in the connection's workspace; with
        ``targets``, the one its targets share unless they name their own. (templated)
    :param endpoint_name: a non-default endpoint (``default`` cannot be patched): 1-24 lowercase
        letters and digits; with ``targets``, each target names its own. (templated)
    :param create_endpoint: add the endpoint when it does not exist (else that is a ConfigurationError).
    :param endpoint_description: the description of an endpoint ``create_endpoint`` adds.
    :param management_conn_id: ``azureml_classic_management`` connection of the workspace (its
        Password, the workspace authorization token, is the secret). (templated)
    :param sas_lifetime: validity of the read-only SAS handed to the service for the model blob.
    :returns: ``{"target", "web_service_id", "endpoint_name", "resource_name", "changed",
        "previous": {"base_location", "relative_location"}, "current": {...}, "previous_model_uri",
        "model_uri", "smoke_test"}``: what served before (for a rollback) and now; ``smoke_test`` is
        None or ``{"rows", "predictions"}``. Locations only, never a SAS token.
    :raises ConfigurationError: ``endpoint_name`` is ``default`` or not a valid name, the endpoint
        does not exist (without ``create_endpoint``), ``trained_model_name`` matches no resource (or
        several, when not given), or ``model`` is not an ``.ilearner``; no retries.
    :raises PromotionVerificationError: the endpoint did not show the new model within
        ``verify_timeout``, or the smoke test failed (the message says whether the previous model
        was put back).
    """

    template_fields: Sequence[str] = (
        *_PromoteBase.template_fields,
        "web_service_id",
        "endpoint_name",
        "management_conn_id",
    )
    hook_conn_id_field = "management_conn_id"
    target_fields: ClassVar[tuple[str, ...]] = (
        *_PromoteBase.target_fields,
        "web_service_id",
        "endpoint_name",
        "create_endpoint",
        "management_conn_id",
    )

    def __init__(
        self,
        *,
        web_service_id: str = "",
        endpoint_name: str = "",
        create_endpoint: bool = False,
        endpoint_description: str = "Retrained model endpoint",
        management_conn_id: str = AzureMLClassicManagementHook.default_conn_name,
        sas_lifetime: timedelta = timedelta(hours=1),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.targets is None and not (web_service_id and endpoint_name):
            raise ConfigurationError(
                "web_service_id and endpoint_name: name the endpoint to promote to, or pass targets"
            )
        self.web_service_id = web_service_id
        self.endpoint_name = endpoint_name
        self.create_endpoint = create_endpoint
        self.endpoint_description = endpoint_description
        self.management_conn_id = management_conn_id
        self.sas_lifetime = sas_lifetime

    @cached_property
    def hook(self) -> AzureMLClassicManagementHook:
        return AzureMLClassicManagementHook(self.management_conn_id)

    def _check_endpoint_name(self) -> None:
        if self.endpoint_name == DEFAULT_ENDPOINT:
            raise ConfigurationError(
                "endpoint_name: the 'default' endpoint follows the predictive experiment and its trained model "
                "cannot be replaced; add a non-default endpoint (create_endpoint=True) and patch that one"
            )
        validate_endpoint_name(self.endpoint_name)

    def _endpoint(self) -> dict[str, Any]:
        endpoint = self.hook.find_endpoint(self.web_service_id, self.endpoint_name)
        if endpoint is not None:
            return endpoint
        if not self.create_endpoint:
            raise ConfigurationError(
                f"endpoint_name: web service {self.web_service_id} has no endpoint {self.endpoint_name!r}; "
                "create it first or pass create_endpoint=True"
            )
        self.log.info("Adding endpoint %s to web service %s", self.endpoint_name, self.web_service_id)
        self.hook.put_endpoint(self.web_service_id, self.endpoint_name, description=self.endpoint_description)
        return self.hook.get_endpoint(self.web_service_id, self.endpoint_name)

    def _resource(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        listed = endpoint.get("Resources")
        resources = [r for r in listed if isinstance(r, Mapping)] if isinstance(listed, list) else []
        names = [str(r.get("Name")) for r in resources]
        if self.trained_model_name:
            matches = [r for r in resources if r.get("Name") == self.trained_model_name]
            if not matches:
                raise ConfigurationError(
                    f"trained_model_name: {self.trained_model_name!r} is not an updatable resource of endpoint "
                    f"{self.endpoint_name}; updatable resources: {names} (names are case-sensitive)"
                )
            return dict(matches[0])
        models = [r for r in resources if str(r.get("Name", "")).endswith(TRAINED_MODEL_SUFFIX)]
        if len(models) != 1:
            raise ConfigurationError(
                f"trained_model_name: cannot tell which resource of endpoint {self.endpoint_name} to update "
                f"(updatable resources: {names}); name it"
            )
        return dict(models[0])

    @staticmethod
    def _location(resource: Mapping[str, Any]) -> dict[str, str | None]:
        location = resource.get("Location")
        if not isinstance(location, Mapping):
            location = {}  # a malformed endpoint: report no location rather than fail on its type
        base, relative = location.get("BaseLocation"), location.get("RelativeLocation")
        return {
            "base_location": base if isinstance(base, str) else None,
            "relative_location": (relative.lstrip("/") or None) if isinstance(relative, str) else None,
        }

    @property
    def default_target_name(self) -> str:
        return f"{self.web_service_id}/{self.endpoint_name}"

    def target_address(self) -> dict[str, Any]:
        return {
            "web_service_id": self.web_service_id,
            "endpoint_name": self.endpoint_name,
            "management_conn_id": self.management_conn_id,
        }

    def target_dataset(self) -> Dataset:
        from azureml_retrain.lineage import classic_endpoint_dataset

        return classic_endpoint_dataset(
            self.hook.base_url, self.hook.workspace_id, self.web_service_id, self.endpoint_name
        )

    def promote(self, context: Context) -> dict[str, Any]:
        self._check_endpoint_name()
        self._push_link(
            context,
            classic_endpoint_link(self.hook.base_url, self.hook.workspace_id, self.web_service_id, self.endpoint_name),
        )
        storage = self.storage
        current = self.target_model(storage)
        model = location_uri(current)
        endpoint = self._endpoint()
        resource = self._resource(endpoint)
        previous = self._location(resource)
        result: dict[str, Any] = {
            "target": self.default_target_name,
            "web_service_id": self.web_service_id,
            "endpoint_name": self.endpoint_name,
            "resource_name": resource["Name"],
            "previous": previous,
            "current": current,
            "previous_model_uri": location_uri(previous) if previous["relative_location"] else None,
            "model_uri": model,
            "changed": not _same_location(previous, current),
            "smoke_test": None,
        }
        if not result["changed"]:
            self.log.info("Endpoint %s already serves %s; nothing to do", self.endpoint_name, model)
        else:
            self._patch_location(str(resource["Name"]), storage, current)
            self._wait_until(
                f"endpoint {self.endpoint_name} serving {model}",
                lambda: _same_location(self._serving(), current),
            )
            self.log.info("Endpoint %s now serves %s (was %s)", self.endpoint_name, model, result["previous_model_uri"])
        if self.smoke_test_rows:
            result["smoke_test"] = self._smoke_test(endpoint, storage, str(resource["Name"]), previous, result)
        return result

    def _serving(self) -> dict[str, str | None]:
        """The model location the endpoint reports now."""
        return self._location(self._resource(self.hook.get_endpoint(self.web_service_id, self.endpoint_name)))

    def _patch(self, resource_name: str, storage: StorageAccount, model: BlobLocation) -> None:
        self.hook.patch_endpoint_resources(
            self.web_service_id,
            self.endpoint_name,
            [
                {
                    "Name": resource_name,
                    "Location": {
                        "BaseLocation": storage.base_location,
                        "RelativeLocation": model.relative_location,
                        "SasBlobToken": storage.sas_token(model, write=False, lifetime=self.sas_lifetime),
                    },
                }
            ],
        )

    def _smoke_test(
        self,
        endpoint: Mapping[str, Any],
        storage: StorageAccount,
        resource_name: str,
        previous: Mapping[str, str | None],
        result: Mapping[str, Any],
    ) -> dict[str, Any]:
        try:
            # The one key the promotion uses: registered with the masker now, not when the endpoint was read.
            api_key = self.hook.endpoint_api_key(self.web_service_id, self.endpoint_name)
            scoring = AzureMLWebServiceHook.for_endpoint(str(endpoint["ApiLocation"]), api_key)
            return smoke_test(scoring, self.smoke_test_rows or [])
        except (AzureMLServiceError, PromotionVerificationError) as error:
            failed = f"smoke test failed after promoting to {self.endpoint_name}: {error}"
            if not result["changed"]:
                raise PromotionVerificationError(
                    f"{failed}; this run changed nothing (the endpoint already served "
                    f"{result['current']['relative_location']})"
                ) from error
            if not previous["relative_location"]:
                raise PromotionVerificationError(
                    f"{failed}; the endpoint reported no previous model location, so none could be put back"
                ) from error
            self.log.error("Smoke test failed (%s); putting back %s", error, _describe(previous))
            try:
                self._put_back(resource_name, storage, previous)
            except (AzureMLServiceError, PromotionVerificationError) as put_back_error:
                raise PromotionVerificationError(
                    f"{failed}; putting back the previous model {_describe(previous)} failed too "
                    f"({put_back_error}): the endpoint still serves {result['current']['relative_location']}"
                ) from error
            raise PromotionVerificationError(
                f"{failed}; the previous model {_describe(previous)} was put back"
            ) from error

    def _put_back(self, resource_name: str, storage: StorageAccount, previous: Mapping[str, str | None]) -> None:
        """Re-point the endpoint at the model it served before, and read it back."""
        self._patch_location(resource_name, storage, previous)
        self._wait_until(
            f"endpoint {self.endpoint_name} serving the previous model again",
            lambda: _same_location(self._serving(), previous),
        )

    def _patch_location(self, resource_name: str, storage: StorageAccount, location: Mapping[str, str | None]) -> None:
        """PATCH the resource to ``location``: with a fresh SAS when it is in our storage account, else
        exactly as given (a model the service holds itself, or one in another account)."""
        if _same_base(location["base_location"], storage.base_location):
            self._patch(resource_name, storage, BlobLocation.parse(str(location["relative_location"])))
            return
        self.hook.patch_endpoint_resources(
            self.web_service_id,
            self.endpoint_name,
            [
                {
                    "Name": resource_name,
                    "Location": {
                        "BaseLocation": location["base_location"],
                        "RelativeLocation": location["relative_location"],
                        "SasBlobToken": None,
                    },
                }
            ],
        )


def _same_base(left: str | None, right: str | None) -> bool:
    """Whether two storage base locations name the same account endpoint (trailing slash, host case ignored)."""
    return (left or "").rstrip("/").lower() == (right or "").rstrip("/").lower()


def _same_location(left: Mapping[str, str | None], right: Mapping[str, str | None]) -> bool:
    return _same_base(left.get("base_location"), right.get("base_location")) and (
        (left.get("relative_location") or "").lstrip("/") == (right.get("relative_location") or "").lstrip("/")
    )


def _describe(location: Mapping[str, str | None]) -> str:
    return f"{location.get('base_location') or ''}{location.get('relative_location') or ''}"


def find_trained_model_asset(definition: Mapping[str, Any], name: str | None) -> tuple[str, dict[str, Any]]:
    """The ``[trained model]`` asset of a web service definition (member names in any casing)."""
    properties = get_member(definition, "properties")
    assets = get_member(properties, "assets")
    if not isinstance(assets, Mapping):
        assets = {}  # no (readable) assets: reported below as "no matching trained-model asset"
    candidates = [
        (str(asset_id), dict(asset))
        for asset_id, asset in assets.items()
        if isinstance(asset, Mapping) and str(get_member(asset, "type", "")).lower() == "resource"
    ]
    names = [str(get_member(a, "name")) for _, a in candidates]
    if name:
        matches = [c for c in candidates if str(get_member(c[1], "name", "")).lower() == name.lower()]
    else:
        matches = [c for c in candidates if str(get_member(c[1], "name", "")).lower().endswith(TRAINED_MODEL_SUFFIX)]
    if len(matches) != 1:
        raise ConfigurationError(
            f"trained_model_name: the definition has {'no' if not matches else 'several'} matching "
            f"trained-model asset(s) (Resource assets: {names}); name the one to update"
        )
    return matches[0]


def _provisioning_state(definition: Mapping[str, Any]) -> str | None:
    state = get_member(get_member(definition, "properties"), "provisioningState")
    return str(state) if state else None


def _asset_uri(asset: Mapping[str, Any]) -> str | None:
    uri = get_member(get_member(asset, "locationInfo"), "uri")
    return str(uri) if uri else None


class UpdateWebServiceDefinitionOperator(_PromoteBase):
    """Point a Resource Manager (new) web service's ``[trained model]`` asset at a new model.

    GETs the definition (waiting, up to ``operation_timeout``, while an earlier update still
    provisions), replaces the asset's ``locationInfo.uri`` with the blob's URL (no SAS: the service
    reads it with its own storage account key), PATCHes the definition back, waits for the async
    operation (in the triggerer when deferrable), GETs again to verify, and optionally smoke-tests
    scoring through the service's data plane (a failure puts the previous uri back). Optionally
    writes the definition before and after to ``export_to``, as the PowerShell export/import flow
    does with files. A service that already serves the model is left as it is (``changed`` is False).

    :param web_service_name: the ``Microsoft.MachineLearning/webServices`` resource, in the
        connection's subscription and resource group; with ``targets``, each target names its own.
        (templated)
    :param arm_conn_id: ``azureml_resource_manager`` connection (a service principal, or the default
        Azure credential chain; subscription and resource group in its extras). (templated)
    :param export_to: ``"container/prefix"`` in ``wasb_conn_id``'s account to write the definition
        to as JSON, before and after the change (``<prefix>/<web_service_name>/<run_id>/before.json``
        and ``after.json``); None: no export. (templated)
    :param deferrable: wait for the update's operation in the triggerer (ArmOperationTrigger) instead
        of a worker; with ``ledger_container`` the wait stays in the worker, so that the ledger's
        lock covers the whole change (default: Airflow's ``[operators] default_deferrable``).
    :param poll_interval: seconds before the first poll of the operation, doubling up to 30 s; also
        the wait between reads while an earlier update still provisions.
    :param operation_timeout: how long the update's operation may take, and how long an earlier
        update may keep the service provisioning before this one gives up.
    :returns: ``{"target", "web_service_name", "asset_id", "changed", "previous_uri",
        "current_uri", "previous_model_uri", "model_uri", "exported": {"before", "after"},
        "operation": {"status", "id"}, "smoke_test"}``: what served before (for a rollback) and
        now; ``operation`` is None when nothing changed, ``exported`` names the blobs written to
        ``export_to`` (each None without it), ``smoke_test`` is None or ``{"rows", "predictions"}``.
    :raises ConfigurationError: the definition has no asset matching ``trained_model_name`` (or
        several, when not given), or ``model`` is not an ``.ilearner``; no retries.
    :raises PromotionVerificationError: the operation ended other than Succeeded, or was still
        running at ``operation_timeout`` in the triggerer (in a worker that is an AzureMLServiceError
        with code ``Timeout``); an earlier update still provisioned after ``operation_timeout``; the
        definition did not show the new model, or not Succeeded, afterwards; or the smoke test failed
        (the message says whether the previous uri was put back).
    """

    template_fields: Sequence[str] = (
        *_PromoteBase.template_fields,
        "web_service_name",
        "arm_conn_id",
        "export_to",
    )
    target_fields: ClassVar[tuple[str, ...]] = (*_PromoteBase.target_fields, "web_service_name", "arm_conn_id")
    hook_conn_id_field = "arm_conn_id"

    def __init__(
        self,
        *,
        web_service_name: str = "",
        arm_conn_id: str = AzureMLResourceManagerHook.default_conn_name,
        export_to: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        poll_interval: float = 5.0,
        operation_timeout: timedelta = timedelta(minutes=30),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.targets is None and not web_service_name:
            raise ConfigurationError("web_service_name: name the web service to promote to, or pass targets")
        self.web_service_name = web_service_name
        self.arm_conn_id = arm_conn_id
        self.export_to = export_to
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.operation_timeout = operation_timeout

    @cached_property
    def hook(self) -> AzureMLResourceManagerHook:
        return AzureMLResourceManagerHook(self.arm_conn_id)

    def _export(self, definition: Mapping[str, Any], suffix: str, context: Context) -> str | None:
        if not self.export_to:
            return None
        prefix = BlobLocation.parse(f"{self.export_to.rstrip('/')}/x", field="export_to")
        run_id = str(context.get("run_id") or "run").replace(":", "_").replace("+", "_")
        target = BlobLocation(
            prefix.container, f"{prefix.blob_name[:-1]}{self.web_service_name}/{run_id}/{suffix}.json"
        )
        storage = self.storage
        with storage.call(f"exporting the definition to {target}"):
            storage.hook.load_string(
                json.dumps(definition, indent=2, sort_keys=True),
                container_name=target.container,
                blob_name=target.blob_name,
                overwrite=True,
            )
        return str(target)

    @property
    def default_target_name(self) -> str:
        return self.web_service_name

    def target_address(self) -> dict[str, Any]:
        return {"web_service_name": self.web_service_name, "arm_conn_id": self.arm_conn_id}

    def target_dataset(self) -> Dataset:
        from azureml_retrain.lineage import arm_web_service_dataset

        hook = self.hook
        return arm_web_service_dataset(hook.base_url, hook.subscription_id, hook.resource_group, self.web_service_name)

    def promote(self, context: Context) -> dict[str, Any]:
        self._push_link(
            context, resource_manager_link(self.hook.base_url, self.hook.resource_id(self.web_service_name))
        )
        storage = self.storage
        new_uri = location_uri(self.target_model(storage))
        model = new_uri
        definition = self._settled_definition()
        asset_id, asset = find_trained_model_asset(definition, self.trained_model_name)
        previous_uri = _asset_uri(asset)
        result: dict[str, Any] = {
            "target": self.web_service_name,
            "web_service_name": self.web_service_name,
            "asset_id": asset_id,
            "previous_uri": previous_uri,
            "current_uri": new_uri,
            "previous_model_uri": previous_uri,
            "model_uri": new_uri,
            "changed": previous_uri != new_uri,
            "exported": {"before": self._export(definition, "before", context)},
            "operation": None,
            "smoke_test": None,
        }
        if previous_uri == new_uri:
            self.log.info("Web service %s already serves %s; nothing to do", self.web_service_name, model)
            return self._finish(result, context)
        operation = self._patch_asset(definition, asset_id, new_uri)
        # Under the ledger's lock the wait stays in the worker, so the lock covers the whole change.
        if not operation.done and self.deferrable and not self.ledger_container:
            # Imported here: a DAG that only uses this operator need not import triggers to parse.
            from azureml_retrain.triggers.arm_operation import ArmOperationTrigger

            self.defer(
                trigger=ArmOperationTrigger(
                    arm_conn_id=self.arm_conn_id,
                    continuation_token=operation.continuation_token,
                    end_time=time.time() + self.operation_timeout.total_seconds(),
                    poll_interval=self.poll_interval,
                    status_url=operation.status_url,
                ),
                method_name="execute_complete",
                kwargs={"result": result},
                timeout=self.operation_timeout + timedelta(minutes=5),
            )
        result["operation"] = self._check_operation(self._wait(operation))
        return self._finish(result, context)

    def _wait(self, operation: ArmOperation) -> dict[str, Any]:
        return self.hook.wait_for_operation(
            operation, poll_interval=self.poll_interval, timeout=self.operation_timeout.total_seconds()
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, result: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if not event or not result:
            raise PromotionVerificationError(f"{self.task_id}: did not receive a valid event from the trigger")
        if event.get("status") != "terminal":
            raise PromotionVerificationError(
                f"update of web service {self.web_service_name} did not complete: {event.get('message', event)}"
            )
        result["operation"] = self._check_operation(event["operation"])
        return self._finish(result, context)

    def _settled_definition(self) -> dict[str, Any]:
        """The definition once no update is in progress.

        While an update provisions, the definition already shows its uri but the service still
        scores with the previous model: a retry whose earlier try timed out waiting must not take
        that uri as served (and a PATCH now would be refused with 409).
        """
        deadline = time.monotonic() + self.operation_timeout.total_seconds()
        while True:
            definition = self.hook.get_web_service(self.web_service_name)
            if _provisioning_state(definition) != ProvisioningState.PROVISIONING:
                return definition
            if time.monotonic() >= deadline:
                raise PromotionVerificationError(
                    f"web service {self.web_service_name} is still being updated (provisioningState Provisioning) "
                    f"after operation_timeout={self.operation_timeout}; which model it serves is not settled"
                )
            self.log.info("Web service %s: an update is in progress; waiting for it to end", self.web_service_name)
            time.sleep(self.poll_interval)

    def _patch_asset(self, definition: Mapping[str, Any], asset_id: str, uri: str) -> ArmOperation:
        properties = dict(get_member(definition, "properties") or {})
        assets = {k: dict(v) if isinstance(v, Mapping) else v for k, v in get_member(properties, "assets").items()}
        location_key = next((k for k in assets[asset_id] if k.lower() == "locationinfo"), "locationInfo")
        location = dict(assets[asset_id].get(location_key) or {})
        uri_key = next((k for k in location if k.lower() == "uri"), "uri")
        location[uri_key] = uri
        assets[asset_id][location_key] = location
        properties[next((k for k in properties if k.lower() == "assets"), "assets")] = assets
        self.log.info("Updating web service %s: asset %s -> %s", self.web_service_name, asset_id, uri)
        return self.hook.patch_web_service(self.web_service_name, {"properties": properties})

    def _check_operation(self, operation: Mapping[str, Any]) -> dict[str, Any]:
        state = operation_state(operation)
        if state != ProvisioningState.SUCCEEDED:
            raise PromotionVerificationError(
                f"update of web service {self.web_service_name} ended {state}: {operation_error(operation)}".strip()
            )
        return {"status": state, "id": get_member(operation, "id")}

    def _finish(self, result: dict[str, Any], context: Context) -> dict[str, Any]:
        definition = self.hook.get_web_service(self.web_service_name)
        _, asset = find_trained_model_asset(definition, self.trained_model_name)
        serving = _asset_uri(asset)
        if serving != result["current_uri"]:
            raise PromotionVerificationError(
                f"web service {self.web_service_name} still serves {serving} after the update to "
                f"{result['current_uri']}"
            )
        state = _provisioning_state(definition)
        if state not in (None, ProvisioningState.SUCCEEDED):
            # The uri is there, but the service does not run it (yet, or any more).
            raise PromotionVerificationError(
                f"web service {self.web_service_name} shows {serving} but its provisioningState is {state}"
            )
        result["exported"]["after"] = self._export(definition, "after", context)
        if self.smoke_test_rows:
            result["smoke_test"] = self._smoke_test(definition, result)
        return result

    def _smoke_test(self, definition: Mapping[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        swagger = str(get_member(get_member(definition, "properties") or {}, "swaggerLocation") or "")
        keys = self.hook.list_keys(self.web_service_name)
        # The data plane the definition names is trusted like Resource Manager (the same CA, if the
        # connection sets one).
        scoring = AzureMLWebServiceHook.for_endpoint(
            swagger,
            keys.get("primary") or keys.get("Primary") or "",
            ca_bundle=self.hook.connection_verify if isinstance(self.hook.connection_verify, str) else None,
        )
        try:
            return smoke_test(scoring, self.smoke_test_rows or [])
        except (AzureMLServiceError, PromotionVerificationError) as error:
            failed = f"smoke test failed after updating {self.web_service_name}: {error}"
            if not result["changed"]:
                raise PromotionVerificationError(
                    f"{failed}; this run changed nothing (the service already served {result['current_uri']})"
                ) from error
            if not result["previous_uri"]:
                raise PromotionVerificationError(
                    f"{failed}; the definition had no previous model uri, so none could be put back"
                ) from error
            self.log.error("Smoke test failed (%s); putting back %s", error, result["previous_uri"])
            try:
                self._put_back(str(result["previous_uri"]))
            except (AzureMLServiceError, PromotionVerificationError) as put_back_error:
                raise PromotionVerificationError(
                    f"{failed}; putting back the previous model {result['previous_uri']} failed too "
                    f"({put_back_error}): check which model the service serves"
                ) from error
            raise PromotionVerificationError(
                f"{failed}; the previous model {result['previous_uri']} was put back"
            ) from error

    def _put_back(self, previous_uri: str) -> None:
        """PATCH the previous uri back, wait for the operation, and read the definition back."""
        latest = self.hook.get_web_service(self.web_service_name)
        asset_id, _ = find_trained_model_asset(latest, self.trained_model_name)
        self._check_operation(self._wait(self._patch_asset(latest, asset_id, previous_uri)))
        _, asset = find_trained_model_asset(self.hook.get_web_service(self.web_service_name), self.trained_model_name)
        if _asset_uri(asset) != previous_uri:
            raise PromotionVerificationError(f"the service shows {_asset_uri(asset)} after the put-back")
