"""HTML for the model history view: tables and a server-rendered SVG plot, no scripts, no assets.

Every value that comes from a config, a ledger or a request goes through :func:`esc` (text and
attributes alike), so a target name or a reason cannot inject markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlencode

from azureml_retrain.config import RetrainingConfig
from azureml_retrain.history.data import AXES, DEFAULT_AXIS, Approval, Change, TargetHistory, window_moments
from azureml_retrain.ledger import target_blob_stem

COLORS = {
    "serving": "#0969da",
    "promotion": "#1a7f37",
    "rollback": "#bc4c00",
    "baseline": "#6e7781",
    "evaluation": "#8c959f",
    "threshold": "#cf222e",
    "approved": "#8250df",
    "rejected": "#cf222e",
    "timed_out": "#9a6700",
}
APPROVAL_LABELS = {"approved": "approved", "rejected": "rejected", "timed_out": "approval timed out"}
AXIS_LABELS = {"window": "data window", "recorded": "recorded at"}
TRAIN_TASK = "train"  # the retraining DAG's SubmitBesJob task: its page shows what the model was trained on
NONE = "\u2013"  # en dash: no value
SEP = " &rsaquo; "  # breadcrumb separator (markup)
KIND_LABELS = {
    "promotion": "promotion",
    "rollback": "rollback",
    "baseline": "baseline (serving before the ledger started)",
}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True)
class Links:
    """Where the view's own pages and the Airflow UI are (both may sit under a path prefix)."""

    app: str = "/model-history"
    airflow: str = "/"

    def index(self) -> str:
        return f"{self.app}/"

    def target(self, target: str, metric: str | None = None, axis: str | None = None) -> str:
        params = {k: v for k, v in (("metric", metric), ("axis", axis)) if v}
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.app}/targets/{quote(target, safe='')}{query}"

    def target_json(self, target: str) -> str:
        return f"{self.app}/api/targets/{quote(target, safe='')}"

    def dag(self, dag_id: str) -> str:
        return f"{self.airflow.rstrip('/')}/dags/{quote(dag_id, safe='')}"

    def run(self, dag_id: str, run_id: str) -> str:
        return f"{self.dag(dag_id)}/runs/{quote(run_id, safe='')}"

    def task(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"{self.run(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"


# --- formatting --------------------------------------------------------------------------------


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: float | None) -> str:
    return NONE if value is None else f"{value:.4f}"


def window_text(window: tuple[str, str] | None) -> str:
    if not window:
        return NONE
    start, end = (w[:16].replace("T", " ") for w in window)
    return f"{start} \u2192 {end}"


def direction_text(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return ""
    return "higher is better" if higher_is_better else "lower is better"


# --- the plot ------------------------------------------------------------------------------------

WIDTH, HEIGHT = 880, 330
LEFT, RIGHT, TOP, BOTTOM = 70, 24, 44, 70
STRIP = 22  # band below the plot area for changes that recorded no value of the metric
LEGEND_ROW = 18  # height of a row of the legend (it wraps)
LANE = 26  # band above the plot area for approval marks
WINDOWLESS_X = LEFT + 8  # on the window axis, where items without a data window sit


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _value_domain(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or max(abs(high) * 0.05, 0.01)
    return low - pad, high + pad


def _time_domain(moments: Sequence[datetime]) -> tuple[datetime, datetime]:
    first, last = min(moments), max(moments)
    pad = (last - first) * 0.06 or timedelta(minutes=30)
    return first - pad, last + pad


_TIME_STEPS = [
    timedelta(seconds=n) for n in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
] + [timedelta(days=n) for n in (1, 2, 7, 14, 30, 91, 182, 365)]


def _time_ticks(start: datetime, end: datetime, most: int = 7) -> tuple[list[datetime], str]:
    """Round moments (UTC) between ``start`` and ``end``, and the strftime format to label them."""
    span = end - start
    step = next((s for s in _TIME_STEPS if span / s <= most), _TIME_STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
    first = epoch + step * math.ceil((start - epoch) / step)
    ticks = []
    while first <= end:
        ticks.append(first)
        first += step
    if step >= timedelta(days=1):
        label = "%b %d"
    elif step >= timedelta(minutes=1):
        label = "%b %d %H:%M" if span > timedelta(days=1) else "%H:%M"
    else:
        label = "%H:%M:%S"
    return ticks, label


def _marker(kind: str, x: float, y: float, tooltip: str) -> str:
    color = COLORS[kind]
    title = f"<title>{esc(tooltip)}</title>"
    common = f'class="marker {kind}" data-kind="{kind}"'
    if kind in ("approved", "timed_out"):
        points = f"{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 7:.1f},{y:.1f}"
        fill = color if kind == "approved" else "#fff"
        return f'<polygon {common} points="{points}" fill="{fill}" stroke="{color}" stroke-width="2">{title}</polygon>'
    if kind == "rejected":
        cross = f"M{x - 5:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 5:.1f} M{x + 5:.1f},{y - 5:.1f} L{x - 5:.1f},{y + 5:.1f}"
        # A transparent disc under the cross: its whole area shows the tooltip, not just the strokes.
        return (
            f'<g {common}>{title}<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="#fff" fill-opacity="0"/>'
            f'<path d="{cross}" stroke="{color}" stroke-width="3" stroke-linecap="round"/></g>'
        )
    if kind == "promotion":
        return f'<circle {common} cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{color}" stroke="#fff">{title}</circle>'
    if kind == "rollback":
        points = f"{x - 7:.1f},{y - 6:.1f} {x + 7:.1f},{y - 6:.1f} {x:.1f},{y + 7:.1f}"
        return f'<polygon {common} points="{points}" fill="{color}" stroke="#fff">{title}</polygon>'
    if kind == "baseline":
        return (
            f'<rect {common} x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{color}" stroke="#fff">'
            f"{title}</rect>"
        )
    return (
        f'<circle {common} cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#fff" stroke="{color}" stroke-width="2">'
        f"{title}</circle>"
    )


def _legend(axis: str, has_threshold: bool, outcomes: Sequence[str]) -> tuple[str, int]:
    """The legend (wrapped onto as many rows as it needs) and its number of rows."""
    items = [
        ("serving", "serving model") if axis == "recorded" else ("span", "data window"),
        ("promotion", "promotion"),
        ("rollback", "rollback"),
        ("baseline", "baseline"),
        ("evaluation", "evaluated, not promoted"),
    ]
    if has_threshold:
        items.append(("threshold", "threshold"))
    items.extend((outcome, APPROVAL_LABELS[outcome]) for outcome in APPROVAL_LABELS if outcome in outcomes)
    parts, x, row = [], LEFT, 0
    for kind, label in items:
        width = 24 + 7 * len(label) + 22
        if x + width > WIDTH and x > LEFT:
            x, row = LEFT, row + 1
        y = 18 + row * LEGEND_ROW
        if kind == "serving":
            swatch = f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{COLORS[kind]}" stroke-width="2.5"/>'
        elif kind == "span":
            swatch = (
                f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{COLORS["promotion"]}" '
                'stroke-width="4" stroke-opacity="0.35" stroke-linecap="round"/>'
            )
        elif kind == "threshold":
            swatch = (
                f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{COLORS[kind]}" stroke-width="1.5" '
                'stroke-dasharray="5 4"/>'
            )
        else:
            swatch = _marker(kind, x + 9, y, label).replace('class="marker', 'class="legend')
        parts.append(f'{swatch}<text x="{x + 24}" y="{y + 4}">{esc(label)}</text>')
        x += width
    return f'<g class="legend">{"".join(parts)}</g>', row + 1


@dataclass(frozen=True)
class _Scale:
    """Maps moments and metric values to SVG coordinates."""

    start: datetime
    end: datetime
    low: float
    high: float
    top: float = TOP  # below the legend (and the approval lane)

    @property
    def height(self) -> float:
        return self.top + HEIGHT - TOP

    @property
    def axis_y(self) -> float:
        return self.height - BOTTOM

    @property
    def bottom(self) -> float:
        return self.axis_y - STRIP

    @property
    def strip_y(self) -> float:
        return self.axis_y - STRIP / 2

    @property
    def lane_y(self) -> float:
        return self.top - LANE / 2

    def x_or_edge(self, moment: datetime | None) -> float:
        return WINDOWLESS_X if moment is None else self.x(moment)

    def x(self, moment: datetime) -> float:
        return LEFT + (moment - self.start) / (self.end - self.start) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float | None) -> float:
        if value is None:
            return self.strip_y
        return self.top + (self.high - value) / (self.high - self.low) * (self.bottom - self.top)


def _axes(scale: _Scale, y_title: str, x_title: str) -> list[str]:
    parts = []
    step = _nice_step(scale.high - scale.low)
    tick = math.ceil(scale.low / step) * step
    while tick <= scale.high + 1e-12:
        y = scale.y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{tick:.3g}</text>'
        )
        tick += step
    axis_y = scale.axis_y
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{scale.top}" x2="{LEFT}" y2="{axis_y}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{axis_y}" x2="{WIDTH - RIGHT}" y2="{axis_y}"/>'
        f'<text class="strip-label" x="{LEFT - 8}" y="{scale.strip_y + 4:.1f}" text-anchor="end">no value</text>'
        f'<line class="grid strip" x1="{LEFT}" y1="{scale.bottom:.1f}" x2="{WIDTH - RIGHT}" y2="{scale.bottom:.1f}"/>'
    )
    moments, label_format = _time_ticks(scale.start, scale.end)
    for moment in moments:
        x = scale.x(moment)
        parts.append(
            f'<line class="tick-mark" x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 5}"/>'
            f'<text class="tick" x="{x:.1f}" y="{axis_y + 20}" text-anchor="middle">'
            f"{esc(moment.strftime(label_format))}</text>"
        )
    parts.append(
        f'<text class="axis-title" transform="translate(16 {(scale.top + scale.bottom) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_title)}</text>'
        f'<text class="axis-title" x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{scale.height - 14:.1f}" '
        f'text-anchor="middle">{esc(x_title)}</text>'
    )
    return parts


def _threshold(scale: _Scale, threshold: float) -> str:
    y = scale.y(threshold)
    return (
        f'<line class="threshold" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
        f'stroke="{COLORS["threshold"]}" stroke-dasharray="5 4"/>'
        f'<text class="threshold-label" x="{WIDTH - RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end" '
        f'fill="{COLORS["threshold"]}">threshold {threshold:g}</text>'
    )


def _serving_line(scale: _Scale, history: TargetHistory) -> str:
    """What served, as a step line: each change's value holds until the next change (gaps where a
    change recorded no value of the metric)."""
    changes, metric, path = history.changes, history.metric, []
    for index, change in enumerate(changes):
        value = change.metrics.get(metric)
        if value is None:
            continue
        x1 = scale.x(change.at)
        x2 = scale.x(changes[index + 1].at) if index + 1 < len(changes) else WIDTH - RIGHT
        follows = index > 0 and metric in changes[index - 1].metrics
        path.append(f"{'L' if follows else 'M'}{x1:.1f},{scale.y(value):.1f} H{x2:.1f}")
    if not path:
        return ""
    return f'<path class="serving" d="{" ".join(path)}" fill="none" stroke="{COLORS["serving"]}" stroke-width="2.5"/>'


def _window_span(scale: _Scale, kind: str, window: tuple[str, str] | None, y: float) -> str:
    """The data window a marker stands for, as a band from its start to its end (the window axis)."""
    moments = window_moments(window)
    if moments is None:
        return ""
    x1, x2 = scale.x(moments[0]), scale.x(moments[1])
    return (
        f'<line class="span {kind}" x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{COLORS[kind]}" '
        'stroke-width="4" stroke-opacity="0.35" stroke-linecap="round">'
        f"<title>{esc(window_text(window))}</title></line>"
    )


def _approval_mark(scale: _Scale, approval: Approval, x: float) -> str:
    by = f" by {approval.by}" if approval.by else ""
    parts = [f"{APPROVAL_LABELS[approval.outcome]}{by} {when(approval.at)}"]
    if approval.run_id:
        parts.append(f"run {approval.run_id}")
    if approval.window:
        parts.append(f"data window {window_text(approval.window)}")
    if approval.comment:
        parts.append(f"comment: {approval.comment}")
    if approval.why_needed:
        parts.append(f"approval needed because {approval.why_needed}")
    # A guide down through the plot relates the mark to the model of the same run.
    guide = (
        f'<line class="approval-guide" x1="{x:.1f}" y1="{scale.lane_y:.1f}" x2="{x:.1f}" y2="{scale.axis_y:.1f}" '
        f'stroke="{COLORS[approval.outcome]}" stroke-opacity="0.35" stroke-dasharray="2 3"/>'
    )
    return guide + _marker(approval.outcome, x, scale.lane_y, "; ".join(parts))


def _placed_domain(history: TargetHistory, items: Sequence[tuple[datetime, tuple[str, str] | None]]) -> list[datetime]:
    """The moments the x axis must show: each item's position, and on the window axis its window."""
    moments = []
    for at, window in items:
        position = history.position(at, window)
        if position is not None:
            moments.append(position)
        span = window_moments(window) if history.axis == "window" else None
        if span is not None:
            moments.append(span[0])
    # Nothing has a data window: show when they were recorded rather than no axis at all.
    return moments or [at for at, _ in items]


def plot(history: TargetHistory) -> str:
    """The plotted metric against the data window (default) or the time of recording: every ledger
    change marked by kind, the challengers that were evaluated but not promoted, the approval steps
    that approved, rejected or timed out, and (against recording time) the serving model as a step line."""
    metric, axis = history.metric, history.axis
    changes, evaluations = history.changes, [e for e in history.evaluations if metric in e.metrics]
    approvals = history.approvals
    if not changes and not evaluations and not approvals:
        return f'<p class="empty">Nothing recorded yet for {esc(history.target)}.</p>'
    values = [c.metrics[metric] for c in changes if metric in c.metrics] + [e.metrics[metric] for e in evaluations]
    threshold = history.threshold
    if threshold is not None:
        values.append(threshold)
    outcomes = sorted({a.outcome for a in approvals})
    legend, rows = _legend(axis, threshold is not None, outcomes)
    items = [(c.at, c.window) for c in changes] + [(e.at, e.window) for e in evaluations]
    scale = _Scale(
        *_time_domain(_placed_domain(history, items + [(a.at, a.window) for a in approvals])),
        *(_value_domain(values) if values else (0.0, 1.0)),
        top=TOP + (rows - 1) * LEGEND_ROW + (LANE if approvals else 0),
    )
    direction = direction_text(history.higher_is_better)
    x_title = "end of the data window (UTC)" if axis == "window" else "recorded at (UTC)"
    parts = [legend, *_axes(scale, f"{metric} ({direction})" if direction else metric, x_title)]
    if approvals:
        parts.append(
            f'<text class="strip-label" x="{LEFT - 8}" y="{scale.lane_y + 4:.1f}" text-anchor="end">approval</text>'
        )
    if threshold is not None:
        parts.append(_threshold(scale, threshold))
    if axis == "recorded":
        parts.append(_serving_line(scale, history))
    for approval in approvals:
        parts.append(_approval_mark(scale, approval, scale.x_or_edge(history.position(approval.at, approval.window))))
    for evaluation in evaluations:
        evaluated = evaluation.metrics[metric]
        tooltip = (
            f"evaluated {when(evaluation.at)}: {metric} {number(evaluated)}; "
            f"data window {window_text(evaluation.window)}; {evaluation.reason or ''}"
        )
        y = scale.y(evaluated)
        if axis == "window":
            parts.append(_window_span(scale, "evaluation", evaluation.window, y))
        x = scale.x_or_edge(history.position(evaluation.at, evaluation.window))
        parts.append(_marker("evaluation", x, y, tooltip))
    for change in changes:
        value = change.metrics.get(metric)
        trained_on = f"; trained on {', '.join(change.inputs)}" if change.inputs else ""
        tooltip = (
            f"{change.kind} {when(change.at)}: {metric} {number(value)}; {change.model_uri}; "
            f"data window {window_text(change.window)}{trained_on}"
        )
        kind = change.kind if change.kind in KIND_LABELS else "baseline"
        y = scale.y(value)
        if axis == "window":
            parts.append(_window_span(scale, kind, change.window, y))
        parts.append(_marker(kind, scale.x_or_edge(history.position(change.at, change.window)), y, tooltip))
    label = f"{metric} of {history.target} over time, by {AXIS_LABELS[axis]}"
    height = scale.height
    return (
        f'<svg class="plot" role="img" aria-label="{esc(label)}" data-axis="{esc(axis)}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" height="{height:.0f}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{esc(label)}</title>{''.join(parts)}</svg>"
    )


# --- tables and pages ----------------------------------------------------------------------------


def _run_cell(links: Links, dag_id: str | None, run_id: str | None) -> str:
    if not run_id:
        return NONE
    if not dag_id:
        return f"<code>{esc(run_id)}</code>"
    return (
        f'<a href="{esc(links.run(dag_id, run_id))}" data-airflow><code>{esc(run_id)}</code></a>'
        f'<div class="muted">{esc(dag_id)}</div>'
    )


def _trained_on_cell(links: Links, change: Change) -> str:
    """What the model was trained on, linked to the task that trained it (whose page shows its
    inputs and their job); for records from before the ledger kept inputs, that task alone."""
    if change.trained_by is None:
        return "".join(f"<div><code>{esc(location)}</code></div>" for location in change.inputs) or NONE
    task = esc(links.task(*change.trained_by, TRAIN_TASK))
    if not change.inputs:
        return f'<a class="inputs" href="{task}" data-airflow>{TRAIN_TASK} task</a>'
    return "".join(
        f'<div><a class="inputs" href="{task}" data-airflow title="trained by {esc(change.trained_by[1])}">'
        f"<code>{esc(location)}</code></a></div>"
        for location in change.inputs
    )


def ledger_table(history: TargetHistory, links: Links) -> str:
    metric = history.metric
    rows = []
    for change in reversed(history.changes):
        note = change.reason or ""
        if change.previous_model_uri:
            note = f"{note}{'; ' if note else ''}replaced {change.previous_model_uri}"
        rows.append(
            f'<tr class="change {esc(change.kind)}" data-kind="{esc(change.kind)}">'
            f'<td title="{esc(change.at.isoformat())}">{esc(when(change.at))}</td>'
            f'<td><span class="badge {esc(change.kind)}">{esc(change.kind)}</span></td>'
            f'<td class="uri"><code>{esc(change.model_uri)}</code></td>'
            f'<td class="num">{esc(number(change.metrics.get(metric)))}</td>'
            f"<td>{esc(window_text(change.window))}</td>"
            f'<td class="uri">{_trained_on_cell(links, change)}</td>'
            f"<td>{_run_cell(links, change.dag_id, change.run_id)}</td>"
            f'<td class="note">{esc(note)}</td></tr>'
        )
    if not rows:
        return '<p class="empty">The ledger of this target is empty: nothing was promoted to it yet.</p>'
    head = "".join(
        f"<th>{esc(h)}</th>"
        for h in ("When", "Change", "Model", metric, "Data window", "Trained on", "Run", "Reason / replaced")
    )
    return f'<table class="ledger"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def evaluations_table(history: TargetHistory, links: Links) -> str:
    if not history.evaluations:
        return ""
    metric = history.metric
    rows = "".join(
        f'<tr class="evaluation"><td>{esc(when(e.at))}</td><td class="num">{esc(number(e.metrics.get(metric)))}</td>'
        f"<td>{esc(window_text(e.window))}</td><td>{_run_cell(links, history.dag_id, e.run_id)}</td>"
        f'<td class="note">{esc(e.reason or "")}</td></tr>'
        for e in reversed(history.evaluations)
    )
    head = "".join(f"<th>{esc(h)}</th>" for h in ("When", metric, "Data window", "Run", "Why not promoted"))
    return (
        "<h3>Evaluated, not promoted to this target</h3>"
        f'<table class="evaluations"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    )


def summary(history: TargetHistory) -> str:
    serving = history.serving
    if serving is None:
        return '<p class="summary">No model recorded yet.</p>'
    value = serving.metrics.get(history.metric)
    metric_text = f", {esc(history.metric)} {esc(number(value))}" if value is not None else ""
    return (
        f'<p class="summary">Serving <code>{esc(serving.model_uri)}</code> since {esc(when(serving.at))} '
        f"({esc(serving.kind)}{metric_text}).</p>"
    )


def metric_form(history: TargetHistory, links: Links) -> str:
    if len(history.metrics) < 2:
        return ""
    options = "".join(
        f'<option value="{esc(m)}"{" selected" if m == history.metric else ""}>{esc(m)}</option>'
        for m in history.metrics
    )
    return (
        f'<form class="metric" method="get" action="{esc(links.target(history.target))}">'
        f'<input type="hidden" name="axis" value="{esc(history.axis)}">'
        f'<label>Metric <select name="metric" onchange="this.form.submit()">{options}</select></label>'
        '<noscript><button type="submit">Show</button></noscript></form>'
    )


def axis_choice(history: TargetHistory, links: Links) -> str:
    """The plot's x axis, as links to the same page with the other choice (no script needed)."""
    metric = history.metric if history.metric != history.config.evaluation.metric else None
    choices = []
    for axis in AXES:
        label = esc(AXIS_LABELS[axis])
        if axis == history.axis:
            choices.append(f'<strong aria-current="true" data-axis="{axis}">{label}</strong>')
        else:
            href = esc(links.target(history.target, metric, None if axis == DEFAULT_AXIS else axis))
            choices.append(f'<a href="{href}" data-axis="{axis}">{label}</a>')
    return f'<p class="axis-choice">Plot models by {" · ".join(choices)}</p>'


def target_section(history: TargetHistory, links: Links, *, heading: bool = True) -> str:
    title = (
        f'<h2><a href="{esc(links.target(history.target))}">{esc(history.target)}</a> '
        f'<span class="muted">{esc(history.target_kind.replace("_", " "))}</span></h2>'
        if heading
        else ""
    )
    return (
        f'<section class="target" data-target="{esc(history.target)}">{title}{summary(history)}'
        f"{metric_form(history, links)}{axis_choice(history, links)}{plot(history)}{ledger_table(history, links)}"
        f"{evaluations_table(history, links)}</section>"
    )


def error_section(target: str, message: str) -> str:
    return (
        f'<section class="target" data-target="{esc(target)}"><h2>{esc(target)}</h2>'
        f'<p class="error">Could not read the ledger: {esc(message)}</p></section>'
    )


def target_page(history: TargetHistory, links: Links) -> str:
    config = history.config
    crumbs = (
        f'<a href="{esc(links.index())}">All models</a>{SEP}{esc(config.model)} '
        f'(<a href="{esc(links.dag(config.dag_id))}" data-airflow>{esc(config.dag_id)}</a>){SEP}{esc(history.target)}'
    )
    ledger = f"{config.ledger_container}/records/{target_blob_stem(history.target)}.jsonl"
    body = (
        f'<nav class="crumbs">{crumbs}</nav><h1>{esc(history.target)}</h1>'
        f"{target_section(history, links, heading=False)}"
        f'<p class="muted">Ledger: <code>{esc(ledger)}</code> · '
        f'<a href="{esc(links.target_json(history.target))}">JSON</a></p>'
    )
    return page(f"Model history: {history.target}", body)


@dataclass(frozen=True)
class TargetSummary:
    """One row of the index: a target and what it serves (None: not read, see ``error``)."""

    config: RetrainingConfig
    target: str
    kind: str
    history: TargetHistory | None = None
    error: str | None = None


def index_page(rows: Sequence[TargetSummary], links: Links, errors: Sequence[str] = ()) -> str:
    sections = []
    by_model: dict[str, list[TargetSummary]] = {}
    for row in rows:
        by_model.setdefault(row.config.model, []).append(row)
    for items in by_model.values():
        config = items[0].config
        body_rows = []
        for row in items:
            history = row.history
            serving = history.serving if history else None
            value = serving.metrics.get(history.metric) if history and serving else None
            state = (
                f'<td colspan="4" class="error">{esc(row.error)}</td>'
                if row.error
                else (
                    f"<td>{esc(serving.kind if serving else NONE)}</td>"
                    f"<td>{esc(when(serving.at) if serving else NONE)}</td>"
                    f'<td class="num">{esc(number(value))}</td>'
                    f"<td>{len(history.changes) if history else 0}</td>"
                )
            )
            body_rows.append(
                f'<tr data-target="{esc(row.target)}"><td><a href="{esc(links.target(row.target))}">'
                f"{esc(row.target)}</a></td><td>{esc(row.kind.replace('_', ' '))}</td>{state}</tr>"
            )
        head = "".join(
            f"<th>{esc(h)}</th>"
            for h in ("Target", "Kind", "Last change", "Since", config.evaluation.metric, "Changes")
        )
        sections.append(
            f'<section class="model"><h2>{esc(config.model)} '
            f'<a class="muted" href="{esc(links.dag(config.dag_id))}" data-airflow>{esc(config.dag_id)}</a></h2>'
            f'<p class="muted">{esc(config.description)}</p>'
            f'<table class="targets"><thead><tr>{head}</tr></thead><tbody>{"".join(body_rows)}</tbody></table>'
            "</section>"
        )
    if not sections:
        sections.append('<p class="empty">No retraining config you may read.</p>')
    problems = "".join(f'<p class="error">{esc(e)}</p>' for e in errors)
    intro = (
        '<p class="muted">Per serving target: what it serves, every promotion and rollback its ledger recorded, '
        "and the evaluated metric over time.</p>"
    )
    return page("Model history", f"<h1>Model history</h1>{intro}{problems}{''.join(sections)}")


def dag_page(title: str, intro: str, sections: Sequence[str], links: Links) -> str:
    """Every target of one DAG (the view's tab on a DAG's page)."""
    crumbs = f'<a href="{esc(links.index())}">All models</a>'
    return page(
        f"Model history: {title}",
        f'<nav class="crumbs">{crumbs}</nav><h1>{esc(title)}</h1><p class="muted">{esc(intro)}</p>{"".join(sections)}',
    )


def message_page(title: str, message: str, links: Links) -> str:
    return page(
        title, f'<h1>{esc(title)}</h1><p>{esc(message)}</p><p><a href="{esc(links.index())}">All models</a></p>'
    )


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; padding: 20px 28px;
       color: #1f2328; background: #fff; font-size: 14px; }
h1 { font-size: 22px; margin: 6px 0 12px; } h2 { font-size: 17px; margin: 22px 0 6px; }
h3 { font-size: 14px; margin: 18px 0 6px; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.muted { color: #656d76; font-weight: normal; font-size: 13px; }
.crumbs { font-size: 13px; color: #656d76; }
table { border-collapse: collapse; margin: 6px 0 12px; width: 100%; max-width: 1200px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; font-size: 13px; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
td.uri code, .summary code { word-break: break-all; font-size: 12px; }
td.note { color: #656d76; font-size: 12px; max-width: 320px; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff;
         background: #6e7781; }
.badge.promotion { background: #1a7f37; } .badge.rollback { background: #bc4c00; }
.error { color: #cf222e; } .empty { color: #656d76; font-style: italic; }
form.metric, .axis-choice { margin: 6px 0; } .axis-choice strong { font-weight: 600; }
select { font: inherit; padding: 2px 4px; }
svg.plot { max-width: 100%; height: auto; font-size: 12px; background: #fff; }
svg .grid { stroke: #eaeef2; } svg .axis, svg .tick-mark { stroke: #8c959f; }
svg .tick, svg .strip-label { fill: #656d76; } svg .axis-title { fill: #1f2328; font-size: 12px; }
svg .legend text { fill: #1f2328; } svg .threshold-label { font-size: 11px; }
"""


# Inside the Airflow UI the page sits in a sandboxed iframe that may not navigate the top window;
# links to Airflow's own pages go through the UI's router instead, so they do not open nested.
SCRIPT = """
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[data-airflow]");
  if (!link || window.parent === window) return;
  try {
    window.parent.history.pushState(null, "", link.getAttribute("href"));
    window.parent.dispatchEvent(new PopStateEvent("popstate"));
    event.preventDefault();
  } catch (error) {}
});
"""


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>"
    )
