"""Build one retraining DAG per config: wait for data → train (BES) → evaluate → promote → record.

::

    plan ──────────┐
    wait_for_data ─┴─ train ─ evaluate ─┬─ classic_targets ─ promote_classic_endpoints[*] ─┐
                                        ├─ arm_targets ───── promote_arm_web_services[*] ──┴─ report ─┐
                                        └─ skip_promotion                      all_targets_promoted ─┘

* ``plan`` fixes everything the run needs before spending money, while the sensor waits: the window
  (resolved as the sensor resolves it), output paths no other run uses, the rules, and per target
  the model the run evaluates against (the ledger's head, also the champion's metrics). It creates
  the outputs container if it is missing (BES does not create it). Off the sensor's path, it adds
  nothing to the time from the data's arrival to the new model serving.
* ``train`` trains on exactly the blobs the sensor accepted: the blob itself when there is one, else
  their concatenation, written by its pre-execute step. A dry run stops there: ``train`` skips
  itself, and so does everything after it.
* ``evaluate`` judges the model and branches: the run's ``promote`` param (auto/never/force) over
  the verdict, and backfills do not promote unless asked. (One task, not an evaluate and a decide:
  each task on the path costs a worker start and a scheduling hop.) The promotion path starts at
  the target lists, and ``report`` and ``all_targets_promoted`` are also directly downstream of
  ``evaluate``: a run that does not promote (every backfill run, by default) skips all of them
  without starting them. ``evaluate`` (or the approval task) then writes the run's decision log
  entry itself, and ``skip_promotion`` is an EmptyOperator, which the scheduler ends without a
  worker: such a run starts four tasks, not nine.
* Promotion is mapped over batches of the config's targets (``promotion.batch_size`` targets per
  task instance, promoted concurrently: a task instance costs a worker start, a target a few
  requests): one failing target does not stop the others, and ``report`` lists which were
  promoted and which failed (it is skipped when no promotion was attempted);
  ``all_targets_promoted`` then writes the run's entry in the ledger container's decision log
  (what happened to each target) and fails the run if any target failed. Each promotion holds the
  target's ledger lock and applies only if the target still serves the model the run evaluated
  against, and only if its window is not older than the serving model's; a refusal skips the
  promotion with the reason, an outcome rather than a failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azureml_retrain.approval import (
    APPROVAL_TASK,
    APPROVAL_XCOM_KEY,
    BACKFILL_PARAM,
    approval_need,
    approval_promotes,
    approval_skip_reason,
    not_needed,
)
from azureml_retrain.blobs import BlobLocation, parse_structured
from azureml_retrain.config import (
    ArmWebServiceTarget,
    ClassicEndpointTarget,
    RetrainingConfig,
    config_files,
    load_config,
    scan_configs,
)
from azureml_retrain.evaluation import parse_rules, rules_json_schema
from azureml_retrain.operators.evaluate import DECISION_XCOM_KEY, EvaluateModelOperator
from azureml_retrain.operators.promote import (
    REFUSAL_XCOM_KEY,
    TARGET_RESULTS_XCOM_KEY,
    PatchEndpointOperator,
    UpdateWebServiceDefinitionOperator,
)
from azureml_retrain.operators.submit_bes_job import SubmitBesJobOperator

PROMOTE_MODES = ("auto", "never", "force")
SENSOR_TASK = "wait_for_data"
PLAN_TASK = "plan"
EVALUATE_TASK = "evaluate"
CLASSIC_TASK = "promote_classic_endpoints"
ARM_TASK = "promote_arm_web_services"
# Where each promotion path starts: the task listing the kind's targets (the branches follow these).
CLASSIC_TARGETS_TASK = "classic_targets"
ARM_TARGETS_TASK = "arm_targets"
SKIP_TASK = "skip_promotion"
# Metadata of a staged training input: a digest of the blobs (container, names, etags) it joins.
STAGED_FROM_METADATA = "stagedfrom"


def model_asset(config: RetrainingConfig) -> Any:
    """The Airflow Asset updated each time a run promotes a new model of this config."""
    from airflow.sdk import Asset

    return Asset(name=f"azureml_model_{config.model}", uri=f"azureml-model://retrain/{config.model}")


def run_slug(run_id: str) -> str:
    """A blob-path-safe, unique-per-run form of the run id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-")


# The JSON Schema dialect of every trigger-form param. Airflow checks each param's schema against its
# dialect's metaschema whenever it resolves the param, and serialising a DAG resolves all of them again
# for every task: draft-07's metaschema checks in under half the time of the default 2020-12's, which
# is about a third of each DAG's parse. The forms use nothing newer than draft-07.
PARAM_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


class SharedSchema(dict[str, Any]):
    """A trigger-form param's JSON Schema, shared by every copy of the param rather than copied.

    Airflow deep-copies the DAG's params for each task it builds (twice for most operators), and the
    schemas were most of what it copied: the rules' alone is 1.5 KB of JSON. Nothing changes a schema
    once the DAG is built (Airflow only reads it to validate and to serialise)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedSchema:
        return self


def form_param(default: Any, *, title: str, description: str | None, **schema: Any) -> Any:
    """A trigger-form param: ``schema`` holds its JSON Schema keywords (type, enum, ...) and the form's
    own (``section``, ``values_display``, ``description_md``: the form renders it when ``description``
    is ``None``)."""
    from airflow.sdk import Param

    return Param(
        default,
        description=description,
        schema=SharedSchema({"$schema": PARAM_SCHEMA_DIALECT, "title": title, **schema}),
    )


#: The form's section of the ``window`` param: the usual window is the run's data interval.
WINDOW_SECTION = "Runs without a logical date"
PROMOTE_TITLES = {
    "auto": "auto: if the evaluation says so",
    "never": "never: train and evaluate only",
    "force": "force: even if the evaluation rejects the model",
}


def params_for(config: RetrainingConfig) -> dict[str, Any]:
    """The manual-trigger form."""
    return {
        "data_prefix": form_param(
            None,
            type=["null", "string"],
            title="Training data override",
            description=f"Folder in container '{config.data.container}' to train on instead of the window's "
            f"('{config.data.prefix}').",
        ),
        "rules": rules_param(),
        "promote": form_param(
            "auto",
            enum=list(PROMOTE_MODES),
            values_display=PROMOTE_TITLES,
            title="Promote",
            description="The ledger guard applies in every mode: a target is only promoted if it still serves "
            "the model the run evaluated against, and never to a model of an older window.",
        ),
        "promote_backfill": form_param(
            False,
            type="boolean",
            title="Let a backfill run promote",
            description="Backfill runs only train and evaluate unless this is set; a model trained on an older "
            "window never replaces one trained on a newer window.",
        ),
        "dry_run": form_param(
            False,
            type="boolean",
            title="Dry run",
            description="Resolve the window, check the data and plan the run, then stop before training.",
        ),
        # Last: in its own section, below the usual fields.
        "window": window_param(),
    }


def window_param() -> Any:
    """The trigger form's window, ``<start>/<end>``, for a run without a logical date (the usual
    window is the run's data interval, which the form sets with date pickers). One text param rather
    than a start and an end with pickers: Airflow checks each param's schema on its own, so only one
    param can refuse an incomplete window when the run is triggered. Real dates and their order are
    checked when the run plans (``parse_window``)."""
    from azureml_retrain.windows import WINDOW_EXAMPLE, WINDOW_PATTERN

    return form_param(
        None,
        type=["null", "string"],
        pattern=WINDOW_PATTERN,
        section=WINDOW_SECTION,
        title="Window",
        description="Usually leave this empty and pick the window above: Data Interval, Specify Manually (start "
        "and end; scheduled and backfill runs have theirs). For a run without a logical date (e.g. the REST API "
        f"with logical_date null): <start>/<end>, ISO dates or date-times, end exclusive, e.g. {WINDOW_EXAMPLE}. "
        "Which wins: this window, then the run's data interval, then the schedule's latest complete interval "
        "before the logical date (or now).",
    )


def rules_param() -> Any:
    """The trigger form's rules override. The form edits an object as JSON, without its schema, so the
    description lists the fields of :func:`rules_json_schema` (the configs' :class:`EvaluationRules`,
    reduced): their types, choices and bounds. The param's own schema names the fields and the
    required one, so a misspelt field is refused when the run is triggered; types, ranges and the
    guards are checked by the model itself when the run plans, before any money is spent. (A schema
    with each field's type doubled the DAG's serialisation: Airflow checks every param's schema
    against its metaschema again for each task of each parse.)"""
    description_md, required, fields = _rules_form()
    return form_param(
        None,
        title="Evaluation rules override",
        description=None,
        description_md=description_md,
        type=["null", "object"],
        required=list(required),
        propertyNames={"enum": list(fields)},
    )


@functools.cache
def _rules_form() -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The rules param's description, required fields and fields: the same for every DAG of a parse."""
    from azureml_retrain.evaluation import METRICS

    schema = rules_json_schema()
    lines = [
        "Replaces the config's rules for this run, e.g. "
        '`{"metric": "AUC", "threshold": 0.7, "min_absolute_improvement": 0.01}`. Fields:',
        "",
    ]
    for name, field in schema["properties"].items():
        kind = field.get("type")
        kinds = "/".join(t for t in (kind if isinstance(kind, list) else [kind]) if t != "null")
        if "properties" in field.get("items", {}):
            kinds += f" of {{{', '.join(field['items']['properties'])}}}"
        choices = f" ({' or '.join(map(repr, field['enum']))})" if "enum" in field else ""
        bound = f", at least {field['minimum']:g}" if "minimum" in field else ""
        required = ", **required**" if name in schema["required"] else ""
        lines.append(f"- `{name}`: {kinds}{choices}{bound}{required}. {field.get('description', '')}")
    by_task: dict[str, list[str]] = {}
    for metric, spec in METRICS.items():
        by_task.setdefault(spec.task, []).append(metric)
    lines += ["", "Metrics: " + "; ".join(f"*{task}*: {', '.join(names)}" for task, names in by_task.items()) + "."]
    return "\n".join(lines), tuple(schema["required"]), tuple(schema["properties"])


def warm_parse_caches() -> None:
    """Build now what every parse builds once whatever the configs (the trigger form's rules field,
    the step operators' class). Called where plugins load: the DAG processor's manager does it once
    and every parse it forks inherits the result."""
    _rules_form()
    step_operator_class()


def build_plan(config: RetrainingConfig, context: Any) -> dict[str, Any]:
    """Everything the run does, decided once (see the module docstring)."""
    from azureml_retrain.ledger import NO_MODEL, PromotionLedger
    from azureml_retrain.windows import resolve_window

    params = context["params"]
    dag_run = context["dag_run"]
    # The sensor resolves the run's window with the same rules (and ``train`` checks they agree).
    window = resolve_window(context)
    start, end = window.start, window.end
    folder = f"{config.outputs.prefix.strip('/')}/{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}/{run_slug(str(dag_run.run_id))}"
    # BES writes the model and evaluation into this container but does not create it: a missing
    # container fails the training job (after the data wait) with a "blob not found".
    ensure_container(config.data.wasb_conn_id, config.outputs.container)
    ledger = PromotionLedger(config.data.wasb_conn_id, config.ledger_container)
    heads = {t.name: ledger.head(t.name) for t in config.targets}
    primary = heads[config.targets[0].name]
    # An override from the trigger form is checked here, before any money is spent, by the same
    # schema as the config's rules.
    override = params.get("rules")
    rules = (parse_rules(override) if override else config.evaluation).model_dump(mode="json", exclude_none=True)
    return {
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "run_type": str(getattr(dag_run.run_type, "value", dag_run.run_type)),
        "promote": params.get("promote") or "auto",
        "promote_backfill": bool(params.get("promote_backfill")),
        "dry_run": bool(params.get("dry_run")),
        "staged_input": f"{config.outputs.container}/{folder}/input.csv",
        "model": f"{config.outputs.container}/{folder}/model.ilearner",
        "evaluation": f"{config.outputs.container}/{folder}/evaluation.csv",
        "rules": rules,
        "champion_metrics": dict(primary.metrics) if primary and primary.metrics else None,
        "expected_models": {name: (head.model_uri if head else NO_MODEL) for name, head in heads.items()},
        # Only configs with approval rules have the param (the others keep their plan as it was).
        **({BACKFILL_PARAM: bool(params.get(BACKFILL_PARAM))} if config.approval else {}),
    }


def approval_params(config: RetrainingConfig) -> dict[str, Any]:
    """The trigger form's params of a config with approval rules (none for the others)."""
    if config.approval is None:
        return {}
    return {
        BACKFILL_PARAM: form_param(
            False,
            type="boolean",
            title="Let a backfill run wait for approval",
            description="A backfill run that promotes does so without asking a person unless this is set.",
        )
    }


def training_input(arrival: Any, plan: Any) -> str:
    """The run's BES input: the one blob the sensor accepted, or the plan's ``staged_input`` where
    ``train`` concatenates several (:func:`prepare_training`)."""
    arrival = parse_structured(arrival, "wait_for_data's result")
    blobs = sorted(b["name"] for b in arrival["blobs"])
    if len(blobs) == 1:
        return f"{arrival['container']}/{blobs[0]}"
    return str(plan["staged_input"])


def run_training_input(ti: Any) -> str:
    """``training_input`` of the running DAG run (the ``train`` task's template macro)."""
    return training_input(ti.xcom_pull(task_ids=SENSOR_TASK), ti.xcom_pull(task_ids=PLAN_TASK))


def prepare_training(wasb_conn_id: str, context: Any) -> None:
    """``train``'s pre-execute step (:class:`RetrainingTrainOperator`): a dry run stops here; several
    accepted blobs are concatenated into the plan's ``staged_input`` through ``wasb_conn_id`` (again on
    a retry: the sensor may have accepted new blobs since)."""
    from azureml_retrain.exceptions import ConfigurationError
    from azureml_retrain.windows import parse_datetime

    stop_a_dry_run(context)
    ti = context["ti"]
    arrival = parse_structured(ti.xcom_pull(task_ids=SENSOR_TASK), "wait_for_data's result")
    plan = ti.xcom_pull(task_ids=PLAN_TASK)
    accepted = [parse_datetime(arrival["window"][k], f"wait_for_data's window {k}") for k in ("start", "end")]
    planned = [parse_datetime(plan["window"][k], f"plan's window {k}") for k in ("start", "end")]
    if accepted != planned:
        raise ConfigurationError(
            f"window: the sensor accepted data for {arrival['window']} but the plan is for {plan['window']}; "
            "clear both tasks to re-run the window"
        )
    if training_input(arrival, plan) == plan["staged_input"]:
        stage_training_input(wasb_conn_id, arrival, BlobLocation.parse(plan["staged_input"], "staged_input"))


def ensure_container(wasb_conn_id: str, container: str) -> None:
    """Create ``container`` when it does not exist yet (idempotent)."""
    from azureml_retrain.storage import StorageAccount

    StorageAccount(wasb_conn_id).ensure_container(container)


def stage_training_input(wasb_conn_id: str, arrival: dict[str, Any], staged: BlobLocation) -> None:
    """Concatenate the accepted CSV blobs (header once) into one input blob for BES.

    Each blob is read at the etag the sensor accepted, so the run trains on exactly those bytes. The
    staged blob records which blobs (names and etags) it joins: a retry finds it done and leaves it
    alone (a job of an earlier try may be reading it); one staged from other blobs (the sensor ran
    again after a clear) is replaced.
    """
    from azureml_retrain.storage import StorageAccount

    storage = StorageAccount(wasb_conn_id)
    with storage.call(f"staging the training input {staged}"):
        _stage(storage.client, arrival, staged)


def _stage(client: Any, arrival: dict[str, Any], staged: BlobLocation) -> None:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    from azureml_retrain.exceptions import ConfigurationError

    target = client.get_blob_client(staged.container, staged.blob_name)
    sources = sorted((str(b["name"]), str(b["etag"])) for b in arrival["blobs"])
    fingerprint = hashlib.sha256(json.dumps([arrival["container"], sources]).encode()).hexdigest()
    with contextlib.suppress(ResourceNotFoundError):
        if target.get_blob_properties().metadata.get(STAGED_FROM_METADATA) == fingerprint:
            return
    header: str | None = None
    lines: list[str] = []
    for blob in sorted(arrival["blobs"], key=lambda b: b["name"]):
        try:
            data = (
                client.get_blob_client(arrival["container"], blob["name"])
                .download_blob(etag=blob["etag"], match_condition=MatchConditions.IfNotModified)
                .readall()
                .decode("utf-8-sig")
            )
        except ResourceModifiedError as error:
            raise ConfigurationError(
                f"{arrival['container']}/{blob['name']} changed after the sensor accepted it; re-run the window"
            ) from error
        rows = data.splitlines()
        if not rows:
            continue
        if header is None:
            header = rows[0]
        elif rows[0] != header:
            raise ConfigurationError(
                f"{arrival['container']}/{blob['name']}: header differs from the first file's; "
                "all files of a window must have the same columns"
            )
        lines.extend(r for r in rows[1:] if r.strip())
    text = "\n".join([header or "", *lines]) + "\n"
    target.upload_blob(text.encode(), overwrite=True, metadata={STAGED_FROM_METADATA: fingerprint})


def choose_branches(
    config: RetrainingConfig, plan: dict[str, Any], decision: dict[str, Any], approval: dict[str, Any] | None = None
) -> list[str]:
    """Which promotion tasks run: the evaluation's verdict under the run's promote mode, then (when
    the config's approval rules say the result needs a person) the person's answer, ``approval``
    (None: not asked yet, so the approval task runs)."""
    has_classic = any(isinstance(t, ClassicEndpointTarget) for t in config.targets)
    has_arm = any(isinstance(t, ArmWebServiceTarget) for t in config.targets)
    promote = [task for task, present in ((CLASSIC_TARGETS_TASK, has_classic), (ARM_TARGETS_TASK, has_arm)) if present]
    if plan["promote"] == "never":
        return [SKIP_TASK]
    if plan["run_type"] == "backfill" and not plan["promote_backfill"]:
        return [SKIP_TASK]
    if plan["promote"] == "force" or decision.get("promote"):
        needed, _ = approval_need(config.approval, plan, decision, [t.name for t in config.targets])
        if not needed or config.approval is None:
            return promote
        if approval is None:
            return [APPROVAL_TASK]
        return promote if approval_promotes(approval, config.approval) else [SKIP_TASK]
    return [SKIP_TASK]


def skip_reason(plan: dict[str, Any], decision: dict[str, Any], approval: dict[str, Any] | None = None) -> str:
    if approval is not None and approval["outcome"] != "not_needed":
        return approval_skip_reason(approval)
    if plan["promote"] == "never":
        return "not promoted: the run's promote param is 'never'"
    if plan["run_type"] == "backfill" and not plan["promote_backfill"]:
        return "not promoted: backfill runs only train and evaluate (set promote_backfill to let them promote)"
    return f"not promoted: {decision.get('reason', 'the evaluation rejected the model')}"


def target_kwargs(
    config: RetrainingConfig, plan: dict[str, Any], kind: type, only: str | None = None
) -> list[dict[str, Any]]:
    """Per-target arguments for the mapped promotion task of ``kind`` (only target ``only`` if given)."""
    items = []
    for target in config.targets:
        if not isinstance(target, kind) or (only is not None and target.name != only):
            continue
        common = {
            "target_name": target.name,
            "trained_model_name": target.trained_model_name,
            "expected_model_uri": plan["expected_models"][target.name],
        }
        if isinstance(target, ClassicEndpointTarget):
            items.append(
                {
                    **common,
                    "web_service_id": target.web_service_id,
                    "endpoint_name": target.endpoint_name,
                    "create_endpoint": target.create_endpoint,
                    "management_conn_id": target.management_conn_id,
                }
            )
        else:
            items.append({**common, "web_service_name": target.web_service_name, "arm_conn_id": target.arm_conn_id})
    return items


def target_batches(config: RetrainingConfig, plan: dict[str, Any], kind: type) -> list[dict[str, Any]]:
    """The mapped promotion task's arguments of ``kind``: ``{"targets": [...]}`` per batch of at most
    ``promotion.batch_size`` targets (their :func:`target_kwargs`), in the config's order."""
    items = target_kwargs(config, plan, kind)
    size = config.promotion.batch_size
    return [{"targets": items[start : start + size]} for start in range(0, len(items), size)]


@functools.cache
def step_operator_class() -> type:
    """:class:`RetrainingStepOperator`'s class, made when a DAG is first built (Airflow's operator
    base class is imported then, not when this module is)."""
    from airflow.sdk import BaseOperator

    class RetrainingStepOperator(BaseOperator):
        """A retraining DAG's own step: ``step(**inputs, **context)``, its result the task's XCom
        (``inputs`` is templated, so XComArgs in it resolve, and set the task's upstreams).

        A plain operator rather than ``@task``, and without an ``__init__`` of its own (:func:`step`
        sets ``step`` and ``inputs`` on the built task; Airflow sets the upstreams of XComArgs
        assigned to a template field then too): when Airflow builds a task it copies the DAG's
        trigger-form params once per ``__init__`` in the operator's class chain, four times for a
        ``@task`` and once here; that was most of what building a retraining DAG cost beyond the
        same DAG of EmptyOperators (bench 7)."""

        template_fields = ("inputs",)
        ui_color = "#ffefeb"
        step: Any = None
        inputs: dict[str, Any] = {}  # noqa: RUF012  (replaced, never changed in place)

        def execute(self, context: Any) -> Any:
            return self.step(**self.inputs, **context)

    RetrainingStepOperator.__module__ = __name__
    return RetrainingStepOperator


def step(function: Any, *bound: Any, **operator_args: Any) -> Any:
    """``function`` (with ``bound`` as its first arguments) as a step of the DAG being built: called
    with keyword XComArgs or values, it adds the task (named after the function unless ``task_id``
    says otherwise) and returns its output."""

    def add(**inputs: Any) -> Any:
        operator_args.setdefault("task_id", function.__name__)
        task = step_operator_class()(**operator_args)
        task.step = functools.partial(function, *bound) if bound else function
        task.inputs = inputs
        return task.output

    return add


def build_dag(config: RetrainingConfig) -> Any:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, XComArg

    from azureml_retrain.sensors import BlobArrivalSensor

    asset = model_asset(config)
    doc = (
        f"### Retrain `{config.model}`\n\n{config.description}\n\n"
        f"Every `{config.schedule}` ({config.timezone}) this DAG trains on the interval that just ended: it waits "
        f"for the data under `{config.data.container}/{config.data.prefix}`, runs the training web service through "
        f"BES, evaluates the new model on `{config.evaluation.metric}` against the one serving, and promotes it to "
        f"{', '.join(f'`{t.name}`' for t in config.targets)}. Trigger it by hand for any window with the form; "
        "backfills train and evaluate past windows without promoting unless asked."
    )
    with DAG(
        dag_id=config.dag_id,
        description=config.description,
        doc_md=doc,
        schedule=CronDataIntervalTimetable(config.schedule, timezone=config.timezone),
        start_date=config.start_date,
        catchup=config.catchup,
        max_active_runs=config.max_active_runs,
        tags=["azureml", "retraining", config.model, *config.tags],
        params={**params_for(config), **approval_params(config)},
        render_template_as_native_obj=True,
        user_defined_macros={"training_input": run_training_input},
        default_args={
            "owner": config.owner,
            "retries": config.retries,
            "retry_delay": timedelta(seconds=30),
            "retry_exponential_backoff": True,
        },
    ) as dag:
        data = config.data
        wait_for_data = BlobArrivalSensor(
            task_id=SENSOR_TASK,
            container_name=data.container,
            prefix="{{ params.data_prefix or '" + data.prefix.replace("'", "\\'") + "' }}",
            pattern=data.pattern,
            marker=data.marker,
            min_files=data.min_files,
            stable_for=data.stable_for_seconds,
            wasb_conn_id=data.wasb_conn_id,
            poke_interval=data.poke_interval_seconds,
            timeout=data.timeout_hours * 3600,
        )

        def plan(**context: Any) -> dict[str, Any]:
            return build_plan(config, context)

        # XComArg: indexing it selects a key of the plan (each key is an XCom of its own).
        run_plan: Any = step(plan, task_id=PLAN_TASK, multiple_outputs=True)()

        training = config.training
        train = RetrainingTrainOperator(
            task_id="train",
            azureml_conn_id=training.azureml_conn_id,
            wasb_conn_id=data.wasb_conn_id,
            inputs={training.input_name: "{{ training_input(ti) }}"},
            outputs={training.model_output: run_plan["model"], training.evaluation_output: run_plan["evaluation"]},
            global_parameters=dict(training.global_parameters),
            poll_interval=training.poll_interval_seconds,
            job_timeout=timedelta(minutes=training.job_timeout_minutes),
        )
        evaluate = RetrainingEvaluateOperator(
            task_id=EVALUATE_TASK,
            evaluation_results=train.output,
            output_name=training.evaluation_output,
            rules=run_plan["rules"],
            champion_metrics=run_plan["champion_metrics"],
            wasb_conn_id=data.wasb_conn_id,
            promote_task_ids=[CLASSIC_TARGETS_TASK, ARM_TARGETS_TASK],
            reject_task_ids=[SKIP_TASK],
        )
        evaluate.config = config
        # In branch mode the verdict is in the "decision" XCom (a branching task's return value is
        # dropped when it skips tasks).
        verdict: Any = XComArg(evaluate, key=DECISION_XCOM_KEY)

        # With an approval task between evaluate and the branches, a branch also runs when that task
        # was skipped (evaluate went straight to it); evaluate's choice still skips the others.
        branch_rule: dict[str, Any] = (
            {"trigger_rule": TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS} if config.approval else {}
        )

        def classic_targets(run: Any, **context: Any) -> list[dict[str, Any]]:
            return target_batches(config, run, ClassicEndpointTarget)

        def arm_targets(run: Any, **context: Any) -> list[dict[str, Any]]:
            return target_batches(config, run, ArmWebServiceTarget)

        promotion_args = {
            "model": train.output,
            "output_name": training.model_output,
            "wasb_conn_id": data.wasb_conn_id,
            "smoke_test_rows": config.smoke_test_rows or None,
            "ledger_container": config.ledger_container,
            "window": run_plan["window"],
            "metrics": verdict,
            # What ``train`` was given, for the ledger (the model history view links it).
            "training_inputs": "{{ training_input(ti) }}",
            "allow_older_window": False,
            "verify_poll_interval": 1.0,
            **branch_rule,
        }
        classic_list = step(classic_targets, task_id=CLASSIC_TARGETS_TASK, **branch_rule)(run=run_plan)
        arm_list = step(arm_targets, task_id=ARM_TARGETS_TASK, **branch_rule)(run=run_plan)
        promotions = [
            PatchEndpointOperator.partial(task_id=CLASSIC_TASK, **promotion_args).expand_kwargs(classic_list),
            UpdateWebServiceDefinitionOperator.partial(
                task_id=ARM_TASK, deferrable=False, **promotion_args
            ).expand_kwargs(arm_list),
        ]

        reported = step(report, config, trigger_rule=TriggerRule.ALL_DONE, outlets=[asset])()
        finished = step(all_targets_promoted, config, trigger_rule=TriggerRule.ALL_DONE)()
        # The no-promotion branch: its decision log entry is written by the task that chose it, so
        # an EmptyOperator (which the scheduler marks done without starting it) ends it.
        skipped = EmptyOperator(task_id=SKIP_TASK, **branch_rule)
        promotions >> reported >> finished
        # The branches' choice: the target lists (whose downstream tasks then run) or skip_promotion;
        # report and all_targets_promoted are direct downstream tasks so that the latter skips them.
        branches = [classic_list, arm_list, skipped, reported, finished]
        [wait_for_data, run_plan] >> train >> evaluate >> branches
        if config.approval is not None:
            from azureml_retrain.approval_operator import PromotionApprovalOperator

            evaluate >> PromotionApprovalOperator(task_id=APPROVAL_TASK, config=config) >> branches
    return dag


def record_skip(
    config: RetrainingConfig, ti: Any, run_id: str, plan: Any, verdict: Any, *, approval: dict[str, Any] | None = None
) -> str:
    """The run's entry in the decision log when it takes the no-promotion branch: why, for every
    target. Written by the task that chose the branch (``evaluate``, or the approval task with the
    person's ``approval``), so the branch itself starts no task. Returns the reason."""
    approval = approval or run_approval(config, ti, plan, verdict)
    reason = skip_reason(plan, verdict, approval)
    outcomes = {t.name: {"outcome": "skipped", "detail": reason} for t in config.targets}
    record_decision(
        config, run_id=run_id, plan=plan, verdict=verdict, outcomes=outcomes, failure=None, approval=approval
    )
    return reason


def report(config: RetrainingConfig, **context: Any) -> dict[str, Any]:
    """Which targets now serve the new model; emits the model's Asset event if any does."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    ti = context["ti"]
    attempted = attempted_targets(config, *plan_and_verdict(ti), approval_answer(config, ti))
    if not attempted:
        # The run took the no-promotion branch (or failed before deciding): nothing to report.
        raise AirflowSkipException("no promotion was attempted in this run")
    summary = summarise_promotions(config, promotion_results(ti), attempted, promotion_refusals(ti))
    if not summary["promoted"] and not summary["already_serving"]:
        failure = promotion_failure(summary)
        if failure:
            raise AirflowFailException(failure)
        # Every target refused by the ledger's guard: an outcome, but no new model to announce.
        raise AirflowSkipException(f"no target was promoted: {summary['refused']}")
    context["outlet_events"][model_asset(config)].extra = {k: v for k, v in summary.items() if k != "results"}
    return summary


def all_targets_promoted(config: RetrainingConfig, **context: Any) -> None:
    """Fails the run when a target's promotion failed, after the others were promoted and reported
    (skipped, like ``report``, when no promotion was attempted).

    The run's state follows its leaf tasks, and ``report`` is not one: this task is what makes
    a run whose promotions (some or all) failed end failed."""
    end_of_promotions(config, context)


class RetrainingTrainOperator(SubmitBesJobOperator):
    """``train`` of a retraining DAG: :func:`prepare_training` before the job is submitted. A method
    rather than a ``pre_execute`` callable, which Airflow would serialise as its source code, read
    from the file at each parse of each DAG."""

    def pre_execute(self, context: Any) -> None:
        prepare_training(self.wasb_conn_id, context)


class RetrainingEvaluateOperator(EvaluateModelOperator):
    """``evaluate`` of a retraining DAG: the verdict, then the run's promote policy picks the branch
    (:func:`choose_branches`). :func:`build_dag` sets its ``config`` on the built task (an ``__init__``
    of its own would copy the DAG's trigger-form params once more, see :func:`step_operator_class`)."""

    config: RetrainingConfig

    def choose_branch(self, context: Any, decision: dict[str, Any]) -> list[str]:
        # The decision log is written once the run knows what happened to each target: here when
        # the run does not promote, or by all_targets_promoted after the promotions. A result that
        # needs a person goes to the approval task, which then branches the same way.
        plan = context["ti"].xcom_pull(task_ids=PLAN_TASK)
        branches = choose_branches(self.config, plan, decision)
        if branches == [SKIP_TASK]:
            self.log.info(
                "not promoted: %s", record_skip(self.config, context["ti"], context["run_id"], plan, decision)
            )
        return branches


def plan_and_verdict(ti: Any) -> tuple[Any, Any]:
    """The run's plan and its evaluation's verdict (None for either that is missing)."""
    return ti.xcom_pull(task_ids=PLAN_TASK), ti.xcom_pull(task_ids=EVALUATE_TASK, key=DECISION_XCOM_KEY)


def approval_answer(config: RetrainingConfig, ti: Any) -> dict[str, Any] | None:
    """The person's answer of the run's approval task (None: not asked, or no approval rules)."""
    if config.approval is None:
        return None
    answer = ti.xcom_pull(task_ids=APPROVAL_TASK, key=APPROVAL_XCOM_KEY, default=None)
    return answer if isinstance(answer, dict) else None


def run_approval(config: RetrainingConfig, ti: Any, plan: Any, verdict: Any) -> dict[str, Any]:
    """The decision log's ``approval`` field of the run: the person's answer, else why none was needed."""
    answer = approval_answer(config, ti)
    if answer is not None:
        return answer
    if not isinstance(plan, dict) or not isinstance(verdict, dict):
        return not_needed("the run ended before its evaluation")
    _, why = approval_need(config.approval, plan, verdict, [t.name for t in config.targets])
    return not_needed(why)


def stop_a_dry_run(context: Any) -> None:
    """A dry run stops at ``train`` (a separate short-circuit task would cost every run another worker
    start on its critical path)."""
    if context["params"].get("dry_run"):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("dry run: the plan is ready; nothing is trained or promoted")


def _flat_dicts(values: Any) -> list[dict[str, Any]]:
    """The dicts in an XCom pull over mapped tasks: one value, a list per map index, or lists of lists
    (a batch's value is a list of per-target dicts)."""
    if isinstance(values, dict):
        return [values]
    if isinstance(values, list | tuple):
        return [item for value in values for item in _flat_dicts(value)]
    return []


def promotion_results(ti: Any) -> list[dict[str, Any]]:
    """Per-target results of every promotion that succeeded: the batches' return values, and the
    ``target_results`` of a batch that failed for some of its targets (one result per target)."""
    by_target: dict[str, dict[str, Any]] = {}
    for task_id in (CLASSIC_TASK, ARM_TASK):
        # map_indexes left unset: every map index's value. A task's return value wins over the
        # partial results an earlier try of it left.
        for key in (TARGET_RESULTS_XCOM_KEY, "return_value"):
            for value in _flat_dicts(ti.xcom_pull(task_ids=task_id, key=key, default=None)):
                by_target[str(value.get("target"))] = value
    return list(by_target.values())


def promotion_refusals(ti: Any) -> dict[str, str]:
    """``{target: why}`` for every promotion the ledger's guard refused (those tasks are skipped)."""
    refusals: dict[str, str] = {}
    for task_id in (CLASSIC_TASK, ARM_TASK):
        for value in _flat_dicts(ti.xcom_pull(task_ids=task_id, key=REFUSAL_XCOM_KEY, default=None)):
            if "target" in value:
                refusals[str(value["target"])] = str(value.get("reason", ""))
    return refusals


def target_outcomes(config: RetrainingConfig, summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per target of ``config``: what the run did to it (promoted, already serving, refused and why,
    failed, or skipped: not attempted)."""
    outcomes: dict[str, dict[str, str]] = {}
    for target in config.targets:
        name = target.name
        if name in summary["promoted"]:
            outcomes[name] = {"outcome": "promoted"}
        elif name in summary["already_serving"]:
            outcomes[name] = {"outcome": "already_serving"}
        elif name in summary["refused"]:
            outcomes[name] = {"outcome": "refused", "detail": summary["refused"][name]}
        elif name in summary["failed"]:
            outcomes[name] = {"outcome": "failed", "detail": "the promotion task failed; see its log"}
        else:
            outcomes[name] = {"outcome": "skipped", "detail": "not a target of this run's promotion"}
    return outcomes


def end_of_promotions(config: RetrainingConfig, context: Any) -> None:
    """``all_targets_promoted``: record what happened to each target in the decision log, then fail
    the run if a promotion failed (a refusal by the ledger's guard is an outcome, not a failure)."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    ti = context["ti"]
    plan, verdict = plan_and_verdict(ti)
    attempted = attempted_targets(config, plan, verdict, approval_answer(config, ti))
    if not attempted:
        raise AirflowSkipException("no promotion was attempted in this run")
    summary = summarise_promotions(config, promotion_results(ti), attempted, promotion_refusals(ti))
    failure = promotion_failure(summary)
    record_decision(
        config,
        run_id=context["run_id"],
        plan=plan,
        verdict=verdict,
        outcomes=target_outcomes(config, summary),
        failure=failure,
        approval=run_approval(config, ti, plan, verdict),
    )
    if failure:
        raise AirflowFailException(failure)


def record_decision(
    config: RetrainingConfig,
    *,
    run_id: str,
    plan: Any,
    verdict: Any,
    outcomes: dict[str, dict[str, str]],
    failure: str | None,
    approval: dict[str, Any] | None = None,
) -> None:
    """Append the run's entry to the DAG's decision log, after its promotions: the verdict, what
    happened to each target, and whether a person approved (``approval``: ``{"outcome": "approved" |
    "rejected" | "timed_out" | "not_needed", "by", "comment", "at", "why_needed"}``). ``promote`` says
    whether any target now serves the run's model. A retry of the writing task does not write it twice."""
    from azureml_retrain.ledger import PromotionLedger

    ledger = PromotionLedger(config.data.wasb_conn_id, config.ledger_container)
    if any(d.get("run_id") == run_id and d.get("targets") == outcomes for d in ledger.decisions(config.dag_id)):
        return
    promoted = [name for name, o in outcomes.items() if o["outcome"] == "promoted"]
    refused = {name: o["detail"] for name, o in outcomes.items() if o["outcome"] == "refused"}
    if failure:
        reason = failure
    elif refused and not promoted:
        reason = "not promoted: " + "; ".join(refused.values())
    elif all(o["outcome"] == "skipped" for o in outcomes.values()):
        reason = next(iter(outcomes.values()))["detail"]
    else:
        reason = (verdict or {}).get("reason", "")
    ledger.note_decision(
        config.dag_id,
        {
            "run_id": run_id,
            "window": (plan or {}).get("window"),
            "promote": bool(promoted),
            "reason": reason,
            "decision": verdict,
            "targets": outcomes,
            "approval": approval or not_needed("the config asks for no approval"),
        },
    )


def attempted_targets(config: RetrainingConfig, plan: Any, decision: Any, approval: Any = None) -> list[str]:
    """Names of the targets the run's ``decide`` branch (and its person's ``approval``, if asked)
    sent to promotion (none when it skipped promotion, or when the run failed before deciding: no
    plan or no evaluation)."""
    if not isinstance(plan, dict) or not isinstance(decision, dict):
        return []
    branches = choose_branches(config, plan, decision, approval if isinstance(approval, dict) else None)
    kinds = {CLASSIC_TARGETS_TASK: ClassicEndpointTarget, ARM_TARGETS_TASK: ArmWebServiceTarget}
    return [t.name for t in config.targets if any(isinstance(t, kinds[b]) for b in branches if b in kinds)]


def summarise_promotions(
    config: RetrainingConfig,
    results: list[dict[str, Any]],
    attempted: list[str] | None = None,
    refused: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"promoted", "already_serving", "failed"}`` target names and ``"refused"`` ``{target: why}``;
    a target is failed when its promotion was attempted (default: every target), returned no result
    and was not refused by the ledger's guard."""
    # A retry finds the targets its earlier try promoted already serving: promoted by this run all the same.
    promoted = sorted(r["target"] for r in results if r.get("changed") or r.get("promoted_by_earlier_try"))
    unchanged = sorted(r["target"] for r in results if not (r.get("changed") or r.get("promoted_by_earlier_try")))
    expected = {t.name for t in config.targets} if attempted is None else set(attempted)
    refusals = {name: why for name, why in (refused or {}).items() if name in expected}
    failed = sorted(expected - set(promoted) - set(unchanged) - set(refusals))
    return {"promoted": promoted, "already_serving": unchanged, "refused": refusals, "failed": failed}


def promotion_failure(summary: dict[str, Any]) -> str | None:
    """Why the run failed to promote (None: every attempted target serves the new model)."""
    if not summary["failed"]:
        return None
    done = summary["promoted"] + summary["already_serving"]
    if not done:
        return f"no target was promoted; failed: {summary['failed']}"
    return f"promoted to {done}, but not to {summary['failed']}"


def retraining_dags(folder: Path) -> dict[str, Any]:
    """``{dag_id: DAG}``: the retraining DAG of every valid config in ``folder``, each loaded and
    built on its own, and the rollback DAG over their targets.

    A broken config is left out, never a reason to drop the others: Airflow keeps a parse error per
    DAG file and stops scheduling every DAG of that file, so the error is reported by a file of its
    own that builds no DAG (``config.raise_config_errors``). When Airflow parses the file to run a
    task (its parsing context names the task's DAG), only that DAG is built, from only its config."""
    import logging

    from airflow.sdk import get_parsing_context

    log = logging.getLogger(__name__)
    wanted = get_parsing_context().dag_id
    model = wanted.removeprefix("retrain_") if wanted and wanted.startswith("retrain_") else None
    own = [p for p in config_files(folder) if p.stem == model]
    if len(own) == 1:
        config = load_config(own[0])
        return {config.dag_id: build_dag(config)}
    scan = scan_configs(folder)
    dags: dict[str, Any] = {}
    for config in scan.configs:
        try:
            dags[config.dag_id] = build_dag(config)
        except Exception:  # a valid config the factory cannot build: a defect, kept to this model
            log.exception("%s: the config is valid but its DAG could not be built", config.model)
    if wanted in (None, ROLLBACK_DAG_ID):  # also without configs: hand-written DAGs' targets
        dags[ROLLBACK_DAG_ID] = build_rollback_dag(list(scan.configs))
    return dags


ROLLBACK_DAG_ID = "rollback_model"
ROLLBACK_CLASSIC_TASK = "roll_back_classic_endpoint"
ROLLBACK_ARM_TASK = "roll_back_arm_web_service"
# Of a rollback DAG built before any config exists (it serves hand-written DAGs' targets then).
ROLLBACK_START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
# The rollback task of each promotion operator a ledger may name as serving a target.
ROLLBACK_TASKS = {
    "PatchEndpointOperator": ROLLBACK_CLASSIC_TASK,
    "UpdateWebServiceDefinitionOperator": ROLLBACK_ARM_TASK,
}


def _rollback_choice(records: list[Any], target_name: str, to_model_uri: str | None) -> tuple[Any, Any]:
    """The ledger's head and the record of the model to go back to (default: what served before)."""
    from azureml_retrain.exceptions import ConfigurationError

    if not records:
        raise ConfigurationError(f"target: {target_name} has no ledger yet, so there is nothing to roll back to")
    head = records[-1]
    known = [r.model_uri for r in records]
    wanted = to_model_uri or head.previous_model_uri
    if not wanted:
        raise ConfigurationError(
            f"target: the ledger of {target_name} does not say what served before {head.model_uri}"
        )
    if wanted not in known:
        raise ConfigurationError(f"to_model_uri: {wanted} was never served by {target_name}; the ledger knows {known}")
    if wanted == head.model_uri:
        raise ConfigurationError(f"to_model_uri: {target_name} already serves {wanted}")
    return head, next(r for r in reversed(records) if r.model_uri == wanted)


def _rollback_kwargs(restored: Any, wasb_conn_id: str, ledger_container: str) -> dict[str, Any]:
    return {
        "model": restored.model_uri,
        "metrics": restored.metrics,
        "window": restored.window,
        "wasb_conn_id": wasb_conn_id,
        "ledger_container": ledger_container,
    }


def plan_rollback(config: RetrainingConfig, target_name: str, to_model_uri: str | None) -> dict[str, Any]:
    """The promotion arguments that put ``target_name`` (a target of ``config``) back on an earlier
    model from its ledger.

    Default: the model that served before the current one. An explicit ``to_model_uri`` must be one
    the ledger recorded for this target.
    """
    from azureml_retrain.exceptions import ConfigurationError
    from azureml_retrain.ledger import PromotionLedger

    target = next((t for t in config.targets if t.name == target_name), None)
    if target is None:
        raise ConfigurationError(f"target: {target_name!r} is not a target of {config.model}")
    records = PromotionLedger(config.data.wasb_conn_id, config.ledger_container).records(target_name)
    head, restored = _rollback_choice(records, target_name, to_model_uri)
    kind = ClassicEndpointTarget if isinstance(target, ClassicEndpointTarget) else ArmWebServiceTarget
    (arguments,) = target_kwargs(config, {"expected_models": {target_name: head.model_uri}}, kind, only=target_name)
    return {
        "task_id": ROLLBACK_CLASSIC_TASK if kind is ClassicEndpointTarget else ROLLBACK_ARM_TASK,
        "kwargs": {
            **arguments,
            **_rollback_kwargs(restored, config.data.wasb_conn_id, config.ledger_container),
            "smoke_test_rows": config.smoke_test_rows or None,
        },
    }


def plan_ledger_rollback(
    target_name: str, to_model_uri: str | None, *, wasb_conn_id: str, ledger_container: str
) -> dict[str, Any]:
    """Like :func:`plan_rollback`, for any target with a ledger (a hand-written DAG's too): where the
    target is served comes from the ledger, as the promoting operator recorded it."""
    from azureml_retrain.exceptions import ConfigurationError
    from azureml_retrain.ledger import PromotionLedger

    ledger = PromotionLedger(wasb_conn_id, ledger_container)
    records = ledger.records(target_name)
    if not records:
        raise ConfigurationError(
            f"target: {target_name!r} has no ledger in container {ledger_container!r} of connection "
            f"{wasb_conn_id!r}; give the ledger_container (and wasb_conn_id) its promotions used"
        )
    head, restored = _rollback_choice(records, target_name, to_model_uri)
    served_by = next((r.served_by for r in reversed(records) if r.served_by), None)
    task_id = ROLLBACK_TASKS.get(str((served_by or {}).get("operator")))
    if served_by is None or task_id is None:
        raise ConfigurationError(
            f"target: the ledger of {target_name} does not say where it is served (its records predate that); "
            "roll it back with the promotion operator of its DAG, given the model to go back to"
        )
    address = {k: v for k, v in served_by.items() if k != "operator"}
    return {
        "task_id": task_id,
        "kwargs": {
            **address,
            "target_name": target_name,
            "expected_model_uri": head.model_uri,
            **_rollback_kwargs(restored, wasb_conn_id, ledger_container),
        },
    }


def build_rollback_dag(configs: list[RetrainingConfig]) -> Any:
    """A manual DAG that re-points a target at an earlier model from its ledger, verifies, records:
    a target of one of ``configs``, or any other target with a ledger (a hand-written DAG's)."""
    from airflow.sdk import DAG

    from azureml_retrain.ledger import DEFAULT_LEDGER_CONTAINER

    by_target = {t.name: c for c in configs for t in c.targets}
    with DAG(
        dag_id=ROLLBACK_DAG_ID,
        description="Put a serving target back on an earlier model from its promotion ledger.",
        doc_md=(
            "### Roll back a model\n\nTrigger with a target; by default it goes back to the model that served "
            "before the current one (or to `to_model_uri`, any model the target's ledger recorded). The change "
            "is verified like a promotion and recorded in the ledger as a rollback. A target of a retraining "
            "config is found through its config; any other target (a hand-written DAG's) through its ledger "
            f"(`ledger_container`, default `{DEFAULT_LEDGER_CONTAINER}`), which records where it is served."
        ),
        schedule=None,
        start_date=min((c.start_date for c in configs), default=ROLLBACK_START_DATE),
        catchup=False,
        tags=["azureml", "retraining", "rollback"],
        params={
            "target": form_param(
                sorted(by_target)[0] if by_target else None,
                type="string",
                minLength=1,
                **({"examples": sorted(by_target)} if by_target else {}),
                title="Target",
                description="What to roll back: a config's target (listed) or any target with a ledger.",
            ),
            "to_model_uri": form_param(
                None,
                type=["null", "string"],
                title="Model to go back to",
                description="A model URI from the target's ledger; empty: the one that served before the current one.",
            ),
            "ledger_container": form_param(
                None,
                type=["null", "string"],
                title="Ledger container (other targets)",
                description=f"For a target of no config: the container of its ledger; empty: "
                f"{DEFAULT_LEDGER_CONTAINER}.",
            ),
            "wasb_conn_id": form_param(
                None,
                type=["null", "string"],
                title="Storage connection (other targets)",
                description="For a target of no config: the connection of its ledger's storage; empty: wasb_default.",
            ),
        },
        default_args={
            "owner": configs[0].owner if configs else "airflow",
            "retries": 1,
            "retry_delay": timedelta(seconds=10),
        },
    ) as dag:
        # Steps, not @task (see RetrainingStepOperator); no branch: the kind not chosen maps over no
        # arguments, and Airflow skips a mapped task with nothing to map.
        rollback: Any = step(rollback_plan, by_target, task_id="plan")()
        PatchEndpointOperator.partial(
            task_id=ROLLBACK_CLASSIC_TASK, record_kind="rollback", verify_poll_interval=1.0
        ).expand_kwargs(step(rollback_arguments, ROLLBACK_CLASSIC_TASK, task_id="classic_args")(rollback=rollback))
        UpdateWebServiceDefinitionOperator.partial(
            task_id=ROLLBACK_ARM_TASK, record_kind="rollback", deferrable=False, verify_poll_interval=1.0
        ).expand_kwargs(step(rollback_arguments, ROLLBACK_ARM_TASK, task_id="arm_args")(rollback=rollback))
    return dag


def rollback_plan(by_target: dict[str, RetrainingConfig], **context: Any) -> dict[str, Any]:
    """The rollback DAG's plan: which target, promotion task and arguments (a config's target through
    its config, any other through its ledger)."""
    from azureml_retrain.ledger import DEFAULT_LEDGER_CONTAINER

    params = context["params"]
    target, to_model_uri = params["target"], params.get("to_model_uri")
    if target in by_target:
        return plan_rollback(by_target[target], target, to_model_uri)
    return plan_ledger_rollback(
        target,
        to_model_uri,
        wasb_conn_id=params.get("wasb_conn_id") or "wasb_default",
        ledger_container=params.get("ledger_container") or DEFAULT_LEDGER_CONTAINER,
    )


def rollback_arguments(task_id: str, rollback: dict[str, Any], **context: Any) -> list[dict[str, Any]]:
    """The arguments of the rollback's promotion task ``task_id``: one set when the plan chose it, none
    (so Airflow skips it) when not."""
    return [rollback["kwargs"]] if rollback["task_id"] == task_id else []
