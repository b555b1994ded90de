"""What get, status and history show: rich renderables built from a parsed rollout.

`now` is a parameter so the same status always renders the same text, in tests and
in `status --watch` alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from modelrollout.api.durations import parse_duration
from modelrollout.api.spec import Stage
from modelrollout.api.status import (
    TERMINAL_PHASES,
    DriftStatus,
    MetricStatus,
    ModelRolloutStatus,
    ThresholdStatus,
    format_timestamp,
    parse_timestamp,
)
from modelrollout.plugin.kube import Rollout, event_time

EVENTS_SHOWN = 10
PHASE_STYLES = {
    "Pending": "dim",
    "Progressing": "cyan",
    "Paused": "yellow",
    "Succeeded": "green",
    "RollingBack": "red",
    "RolledBack": "red",
    "Failed": "bold red",
}
VERDICT_STYLES = {
    "pass": "green",
    "stable": "green",
    "warn": "yellow",
    "inconclusive": "yellow",
    "nodata": "yellow",
    "error": "yellow",
    "fail": "red",
    "invalid": "red",
    "abort": "bold red",
    "drift": "bold red",
}


# -- small formats --------------------------------------------------------------------


def span(seconds: float) -> str:
    """A duration as kubectl prints ages: 45s, 4m05s, 12m, 3h20m, 2d."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 36000:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def age(then: datetime | str | None, now: datetime) -> str:
    if then is None:
        return "-"
    moment = parse_timestamp(then) if isinstance(then, str) else then
    return span((now - moment).total_seconds())


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def bounds(threshold: ThresholdStatus | None) -> str:
    if threshold is None or (threshold.min is None and threshold.max is None):
        return "-"
    if threshold.min is None:
        return f"<= {number(threshold.max)}"
    if threshold.max is None:
        return f">= {number(threshold.min)}"
    return f"[{number(threshold.min)}, {number(threshold.max)}]"


def styled(word: str, styles: dict[str, str]) -> Text:
    return Text(word, style=styles.get(word, ""))


def weight_text(status: ModelRolloutStatus) -> str:
    text = f"{status.weight}%"
    effective = status.effective_weight
    if effective is not None and effective != status.weight:
        text += f" ({effective:g}% effective)"
    return text


def drift_text(drift: DriftStatus | None) -> str:
    if drift is None:
        return "-"
    return f"{number(drift.aggregate)} {drift.verdict}"


# -- get --------------------------------------------------------------------------------


def rollouts_table(rollouts: list[Rollout], now: datetime, namespaces: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    if namespaces:
        table.add_column("NAMESPACE")
    for column in ("NAME", "PHASE", "STAGE", "WEIGHT", "DRIFT", "AGE"):
        table.add_column(column, no_wrap=True)
    for r in rollouts:
        s = r.status
        row: list[RenderableType] = [r.namespace] if namespaces else []
        row += [
            r.name,
            styled(s.phase, PHASE_STYLES),
            f"{s.stage}/{s.stage_count}",
            weight_text(s),
            drift_text(s.drift),
            age(r.created, now),
        ]
        table.add_row(*row)
    return table


# -- status -----------------------------------------------------------------------------


def status_view(rollout: Rollout, events: list[Any], now: datetime) -> Group:
    s = rollout.status
    header = Text.assemble(
        (f"{rollout.namespace}/{rollout.name}", "bold"),
        "  ",
        styled(s.phase, PHASE_STYLES),
        f"  stage {s.stage}/{s.stage_count}",
    )
    parts: list[RenderableType] = [header]
    if s.message:
        parts.append(Text(s.message))
    current = _current_stage(rollout)
    shadowed = current is not None and current.match_rate is not None
    parts += [stage_bar(rollout), Text(weight_line(s, shadowed)), *timing_lines(rollout, now)]
    parts.append(Text(conditions_line(rollout)))
    if s.analysis:
        parts.append(metrics_table(s.analysis, now))
    if s.drift is not None:
        parts += drift_view(rollout, s.drift, now)
    if events:
        parts.append(events_table(events[-EVENTS_SHOWN:], now))
    return Group(*parts)


def _stages(rollout: Rollout) -> list[Stage] | None:
    return rollout.spec.strategy.resolved_stages() if rollout.spec else None


def _current_stage(rollout: Rollout) -> Stage | None:
    stages = _stages(rollout)
    number_ = rollout.status.stage
    return stages[number_ - 1] if stages and 1 <= number_ <= len(stages) else None


def stage_bar(rollout: Rollout) -> Text:
    """Every stage with its weight: done ones ticked, the current one highlighted."""
    s = rollout.status
    stages = _stages(rollout)
    labels = (
        [_stage_label(stage) for stage in stages]
        if stages
        else [f"stage {i}" for i in range(1, s.stage_count + 1)]
    )
    stopped = s.phase in ("RollingBack", "RolledBack", "Failed")
    bar = Text("stages  ")
    for number_, label in enumerate(labels, start=1):
        if number_ > 1:
            bar.append(" → ", style="dim")
        if s.phase == "Succeeded" or number_ < s.stage:
            bar.append(f"✓ {label}", style="green")
        elif number_ == s.stage:
            mark = "✗" if stopped else "▶"
            bar.append(f"{mark} {label}", style="bold reverse red" if stopped else "bold reverse")
        else:
            bar.append(f"  {label}", style="dim")
    return bar


def _stage_label(stage: Stage) -> str:
    """A mirror stage judged on the comparator's match rate is a shadow stage."""
    label = "shadow" if stage.match_rate else "mirror" if stage.mirror else f"{stage.weight}%"
    return label + (" (approval)" if stage.approval == "Manual" else "")


def weight_line(s: ModelRolloutStatus, shadowed: bool = False) -> str:
    """`shadowed`: the stage's copies come from the shadow comparator, which compares
    the answers (the match-rate row of the analysis)."""
    effective = "-" if s.effective_weight is None else f"{s.effective_weight:g}%"
    line = f"weight  {s.weight}% declared, {effective} effective"
    if s.mirroring and shadowed:
        line += ", the shadow comparator copying the stable's traffic and comparing answers"
    elif s.mirroring:
        line += ", mirroring the stable's traffic"
    if s.preparing_weight is not None:
        line += f", preparing {s.preparing_weight}%"
    return line


def timing_lines(rollout: Rollout, now: datetime) -> list[Text]:
    """How long the stage has left: its minimum duration and its sample count, the
    later of the two being when it can complete at the earliest."""
    s = rollout.status
    if s.phase in TERMINAL_PHASES or not s.stage_started_at:
        return []
    started = s.stage_started_at
    line = f"stage   began {span((now - started).total_seconds())} ago"
    waits: list[float] = []
    stages = _stages(rollout)
    if stages and 1 <= s.stage <= len(stages):
        duration = stages[s.stage - 1].duration
        remaining = (started + parse_duration(duration) - now).total_seconds()
        if remaining > 0:
            line += f"; {span(remaining)} left of its {duration}"
            waits.append(remaining)
        else:
            line += f"; its {duration} have passed"
    lines = [Text(line)]
    samples = s.samples
    if samples is not None:
        text = f"samples {samples.count:g}"
        if samples.required is not None:
            text += f" of {samples.required}"
        if samples.rate_per_second is not None:
            text += f" at {samples.rate_per_second:.3g}/s"
        if samples.eta_seconds is not None and samples.eta_seconds > 0:
            text += f", about {span(samples.eta_seconds)} to go"
            waits.append(samples.eta_seconds)
        lines.append(Text(text))
    if waits and s.phase == "Progressing":
        lines.append(Text(f"dwell   can complete in about {span(max(waits))}"))
    return lines


def conditions_line(rollout: Rollout) -> str:
    s = rollout.status
    shown = " ".join(f"{c.type}={c.status}" for c in s.conditions) or "none yet"
    if s.observed_generation < rollout.generation:
        shown += f" (generation {rollout.generation} not yet seen by the operator)"
    return f"conditions  {shown}"


def metrics_table(metrics: list[MetricStatus], now: datetime) -> Table:
    table = Table(title="analysis", title_justify="left", header_style="bold")
    for column in ("METRIC", "VALUE", "SLO", "ABORT", "VERDICT", "FAILURES", "CHECKED"):
        table.add_column(column, no_wrap=True)
    table.add_column("DETAIL")
    for m in metrics:
        value = f"no data ({m.no_data})" if m.no_data else number(m.value)
        detail = m.message or ""
        if m.p_value is not None or m.effect is not None:
            detail = f"p={number(m.p_value)} effect={number(m.effect)} {detail}".strip()
        table.add_row(
            m.name,
            value,
            bounds(m.slo),
            bounds(m.abort),
            styled(m.verdict, VERDICT_STYLES),
            str(m.consecutive_failures),
            f"{age(m.checked_at, now)} ago",
            detail,
        )
    return table


def drift_view(rollout: Rollout, drift: DriftStatus, now: datetime) -> list[RenderableType]:
    gate = rollout.spec.drift_gate if rollout.spec else None
    summary = Text.assemble(
        "drift   ",
        styled(drift.verdict, VERDICT_STYLES),
        f": aggregate {number(drift.aggregate)} (critical {number(drift.critical_value)})",
        f", warn {gate.warn:g} max {gate.max:g}" if gate else "",
        ", enforced" if drift.enforced else ", observe-only",
        f", {drift.looks} looks at stage {drift.stage}, checked {age(drift.checked_at, now)} ago",
    )
    table = Table(header_style="bold")
    for column in ("FEATURE", "PSI", "CRITICAL", "CANDIDATE N", "REFERENCE N", "VERDICT"):
        table.add_column(column, no_wrap=True)
    for f in drift.features:
        table.add_row(
            f.feature,
            number(f.psi),
            number(f.critical_value),
            number(f.candidate_samples),
            number(f.reference_samples),
            styled(f.verdict, VERDICT_STYLES),
        )
    parts: list[RenderableType] = [summary, table]
    if drift.message:
        parts.append(Text(drift.message))
    return parts


def events_table(events: list[Any], now: datetime) -> Table:
    table = Table(title="events", title_justify="left", header_style="bold")
    for column in ("LAST SEEN", "TYPE", "REASON"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE")
    for e in events:
        count = f" (x{e.count})" if e.count and e.count > 1 else ""
        kind = e.type or ""
        table.add_row(
            age(event_time(e), now),
            Text(kind, style="yellow" if kind == "Warning" else ""),
            e.reason or "",
            (e.message or "") + count,
        )
    return table


# -- history ----------------------------------------------------------------------------


def history_table(rollout: Rollout) -> Table:
    table = Table(header_style="bold")
    for column in ("TIME", "TRANSITION", "STAGE", "WEIGHT", "REASON"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE")
    for h in rollout.status.history:
        table.add_row(
            format_timestamp(h.time),
            f"{h.from_phase} → {h.to_phase}",
            str(h.stage),
            f"{h.weight}%",
            h.reason,
            h.message,
        )
    return table


def terminal(rollout: Rollout) -> bool:
    return rollout.status.phase in TERMINAL_PHASES
