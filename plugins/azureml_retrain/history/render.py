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
from azureml_retrain.history.data import TargetHistory
from azureml_retrain.ledger import target_blob_stem

COLORS = {
    "serving": "#0969da",
    "promotion": "#1a7f37",
    "rollback": "#bc4c00",
    "baseline": "#6e7781",
    "evaluation": "#8c959f",
    "threshold": "#cf222e",
}
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

    def target(self, target: str, metric: str | None = None) -> str:
        query = f"?{urlencode({'metric': metric})}" if metric else ""
        return f"{self.app}/targets/{quote(target, safe='')}{query}"

    def target_json(self, target: str) -> str:
        return f"{self.app}/api/targets/{quote(target, safe='')}"

    def dag(self, dag_id: str) -> str:
        return f"{self.airflow.rstrip('/')}/dags/{quote(dag_id, safe='')}"

    def run(self, dag_id: str, run_id: str) -> str:
        return f"{self.dag(dag_id)}/runs/{quote(run_id, safe='')}"


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


def _legend(has_threshold: bool) -> str:
    items = [
        ("serving", "serving model"),
        ("promotion", "promotion"),
        ("rollback", "rollback"),
        ("baseline", "baseline"),
        ("evaluation", "evaluated, not promoted"),
    ]
    if has_threshold:
        items.append(("threshold", "threshold"))
    parts, x = [], LEFT
    for kind, label in items:
        y = 18
        if kind == "serving":
            swatch = f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{COLORS[kind]}" stroke-width="2.5"/>'
        elif kind == "threshold":
            swatch = (
                f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{COLORS[kind]}" stroke-width="1.5" '
                'stroke-dasharray="5 4"/>'
            )
        else:
            swatch = _marker(kind, x + 9, y, label).replace('class="marker', 'class="legend')
        parts.append(f'{swatch}<text x="{x + 24}" y="{y + 4}">{esc(label)}</text>')
        x += 24 + 7 * len(label) + 22
    return f'<g class="legend">{"".join(parts)}</g>'


@dataclass(frozen=True)
class _Scale:
    """Maps moments and metric values to SVG coordinates."""

    start: datetime
    end: datetime
    low: float
    high: float

    @property
    def bottom(self) -> float:
        return HEIGHT - BOTTOM - STRIP

    @property
    def strip_y(self) -> float:
        return HEIGHT - BOTTOM - STRIP / 2

    def x(self, moment: datetime) -> float:
        return LEFT + (moment - self.start) / (self.end - self.start) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float | None) -> float:
        if value is None:
            return self.strip_y
        return TOP + (self.high - value) / (self.high - self.low) * (self.bottom - TOP)


def _axes(scale: _Scale, y_title: str) -> list[str]:
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
    axis_y = HEIGHT - BOTTOM
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{axis_y}"/>'
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
        f'<text class="axis-title" transform="translate(16 {(TOP + scale.bottom) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_title)}</text>'
        f'<text class="axis-title" x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{HEIGHT - 14}" '
        'text-anchor="middle">recorded at (UTC)</text>'
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


def plot(history: TargetHistory) -> str:
    """The plotted metric over time: the serving model's value as a step line, every ledger change
    marked by kind, and the challengers that were evaluated but not promoted."""
    metric = history.metric
    changes, evaluations = history.changes, [e for e in history.evaluations if metric in e.metrics]
    if not changes and not evaluations:
        return f'<p class="empty">Nothing recorded yet for {esc(history.target)}.</p>'
    values = [c.metrics[metric] for c in changes if metric in c.metrics] + [e.metrics[metric] for e in evaluations]
    threshold = history.threshold
    if threshold is not None:
        values.append(threshold)
    scale = _Scale(
        *_time_domain([c.at for c in changes] + [e.at for e in evaluations]),
        *(_value_domain(values) if values else (0.0, 1.0)),
    )
    direction = direction_text(history.higher_is_better)
    parts = [_legend(threshold is not None), *_axes(scale, f"{metric} ({direction})" if direction else metric)]
    if threshold is not None:
        parts.append(_threshold(scale, threshold))
    parts.append(_serving_line(scale, history))
    for evaluation in evaluations:
        evaluated = evaluation.metrics[metric]
        tooltip = f"evaluated {when(evaluation.at)}: {metric} {number(evaluated)}; {evaluation.reason or ''}"
        parts.append(_marker("evaluation", scale.x(evaluation.at), scale.y(evaluated), tooltip))
    for change in changes:
        value = change.metrics.get(metric)
        tooltip = f"{change.kind} {when(change.at)}: {metric} {number(value)}; {change.model_uri}"
        kind = change.kind if change.kind in KIND_LABELS else "baseline"
        parts.append(_marker(kind, scale.x(change.at), scale.y(value), tooltip))
    label = f"{metric} of {history.target} over time"
    return (
        f'<svg class="plot" role="img" aria-label="{esc(label)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
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
            f"<td>{_run_cell(links, change.dag_id, change.run_id)}</td>"
            f'<td class="note">{esc(note)}</td></tr>'
        )
    if not rows:
        return '<p class="empty">The ledger of this target is empty: nothing was promoted to it yet.</p>'
    head = "".join(
        f"<th>{esc(h)}</th>" for h in ("When", "Change", "Model", metric, "Data window", "Run", "Reason / replaced")
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
        f'<label>Metric <select name="metric" onchange="this.form.submit()">{options}</select></label>'
        '<noscript><button type="submit">Show</button></noscript></form>'
    )


def target_section(history: TargetHistory, links: Links, *, heading: bool = True) -> str:
    title = (
        f'<h2><a href="{esc(links.target(history.target))}">{esc(history.target)}</a> '
        f'<span class="muted">{esc(history.target_kind.replace("_", " "))}</span></h2>'
        if heading
        else ""
    )
    return (
        f'<section class="target" data-target="{esc(history.target)}">{title}{summary(history)}'
        f"{metric_form(history, links)}{plot(history)}{ledger_table(history, links)}"
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
form.metric { margin: 6px 0; } select { font: inherit; padding: 2px 4px; }
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
