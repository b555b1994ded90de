"""`timeline`: a rollout's weight over time and its metrics' checks, as a PNG.

Status keeps the transitions (`status.history`, the last 50) but only the latest
check per metric and the latest drift verdict, so the chart steps the weight through
history and shows each metric's one recorded value against its bounds. Earlier values
were never stored where the plugin can read them; Prometheus has them.

Drawn on a bare Figure with the Agg canvas: no pyplot, no display, no global state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from modelrollout.api.status import TERMINAL_PHASES, DriftStatus, MetricStatus, ThresholdStatus
from modelrollout.plugin.kube import Rollout

WIDTH_INCHES, DPI = 10.0, 100
WEIGHT_COLOR = "#1f77b4"
VALUE_COLOR = "#d62728"
SLO_COLOR, ABORT_COLOR, CRITICAL_COLOR = "#ff7f0e", "#7f0000", "#7f7f7f"
LIMITATION = (
    "status keeps each metric's latest check only: one point per metric; "
    "the weight steps through status.history"
)


def size(rollout: Rollout) -> tuple[int, int]:
    """The PNG's width and height in pixels: 3 inches for the weight, 2 per metric."""
    return int(WIDTH_INCHES * DPI), int(_height(_panels(rollout)) * DPI)


def _panels(rollout: Rollout) -> int:
    drift = rollout.status.drift
    return 1 + len(rollout.status.analysis) + (drift is not None and drift.aggregate is not None)


def _height(panels: int) -> float:
    return 1.0 + 2.0 * panels


def render(rollout: Rollout, path: Path, now: datetime) -> Path:
    s = rollout.status
    panels = _panels(rollout)
    figure = Figure(figsize=(WIDTH_INCHES, _height(panels)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0])
    times = _weight_panel(axes[0], rollout, now)
    for ax, metric in zip(axes[1:], s.analysis, strict=False):
        times.append(_metric_panel(ax, metric))
    if s.drift is not None and s.drift.aggregate is not None:
        times.append(_drift_panel(axes[-1], rollout, s.drift))
    start, end = min(times), max(times)
    margin = max((end - start) * 0.03, timedelta(seconds=30) - (end - start) / 2)
    start, end = start - margin, end + margin
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes[-1].set_xlim(_x(start), _x(end))
    figure.suptitle(f"{rollout.namespace}/{rollout.name}: {s.phase}, stage {s.stage_summary}")
    figure.text(0.01, 0.002, LIMITATION, fontsize=7, color="#555555")
    figure.savefig(path, format="png")
    return path


def _weight_panel(ax: Axes, rollout: Rollout, now: datetime) -> list[datetime]:
    """The declared weight after each transition, held until the next, then until now
    (or the end); each change of phase is labelled."""
    s = rollout.status
    times = [h.time for h in s.history]
    weights = [h.weight for h in s.history]
    if not times:
        times, weights = [rollout.created or now], [s.weight]
        ax.annotate("no transitions recorded yet", (0.5, 0.5), xycoords="axes fraction")
    end = s.finished_at if s.phase in TERMINAL_PHASES and s.finished_at else now
    times.append(max(end, times[-1]))
    weights.append(weights[-1])
    ax.step([_x(t) for t in times], weights, where="post", color=WEIGHT_COLOR, linewidth=2.5)
    for h, t in zip(s.history, times, strict=False):
        if h.from_phase != h.to_phase:
            where = (_x(t), h.weight)
            ax.annotate(
                h.to_phase,
                where,
                xytext=(3, 4),
                textcoords="offset points",
                fontsize=7,
                rotation=25,
            )
    ax.set_ylim(-5, 110)
    ax.set_ylabel("candidate weight (%)")
    ax.grid(alpha=0.3)
    return times


def _metric_panel(ax: Axes, metric: MetricStatus) -> datetime:
    checked = metric.checked_at
    _bounds(ax, metric.slo, SLO_COLOR, "--", "slo")
    _bounds(ax, metric.abort, ABORT_COLOR, "-", "abort")
    if metric.value is not None:
        ax.plot([_x(checked)], [metric.value], "o", color=VALUE_COLOR, markersize=9, label="value")
    else:
        missing = f"no data ({metric.no_data or metric.verdict})"
        ax.annotate(missing, (_x(checked), 0.5), xycoords=("data", "axes fraction"), fontsize=8)
    ax.set_ylabel(metric.name)
    ax.set_title(f"{metric.name}: {metric.verdict} at stage {metric.stage}", fontsize=9, loc="left")
    _finish(ax)
    return checked


def _drift_panel(ax: Axes, rollout: Rollout, drift: DriftStatus) -> datetime:
    checked = drift.checked_at
    gate = rollout.spec.drift_gate if rollout.spec else None
    if gate is not None:
        ax.axhline(gate.warn, color=SLO_COLOR, linestyle="--", label=f"warn {gate.warn:g}")
        ax.axhline(gate.max, color=ABORT_COLOR, linestyle="-", label=f"max {gate.max:g}")
    if drift.critical_value is not None:
        ax.axhline(
            drift.critical_value,
            color=CRITICAL_COLOR,
            linestyle=":",
            label=f"critical {drift.critical_value:.3g}",
        )
    ax.plot(
        [_x(checked)], [drift.aggregate or 0.0], "o", color=VALUE_COLOR, markersize=9, label="PSI"
    )
    ax.set_ylabel("drift PSI")
    ax.set_title(f"drift: {drift.verdict}", fontsize=9, loc="left")
    _finish(ax)
    return checked


def _bounds(
    ax: Axes, threshold: ThresholdStatus | None, color: str, style: str, label: str
) -> None:
    if threshold is None:
        return
    for name, value in (("min", threshold.min), ("max", threshold.max)):
        if value is not None:
            ax.axhline(value, color=color, linestyle=style, label=f"{label} {name} {value:g}")


def _finish(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)


def _x(moment: datetime) -> float:
    """Matplotlib's date number: plain floats keep the axes' types simple."""
    return float(date2num(moment))  # type: ignore[no-untyped-call]
