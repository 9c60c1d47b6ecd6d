"""The panel under the Runs table: the highlighted run's val and train curves as Sparklines."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Static

from lab.formatting import fmt_duration, fmt_loss, fmt_rate, status_style

from ..poller import LiveRun
from .charts import CurveSparkline


def finite(values: tuple[float, ...]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def fitted(values: list[float]) -> list[float]:
    """Values capped at the one a tenth of the way in, so the first steep drop does not
    flatten the rest of the curve (the same view as the detail chart's fitted y axis)."""
    if len(values) < 10:
        return values
    cap = values[len(values) // 10]
    return [min(v, cap) for v in values]


def _range(values: list[float]) -> str:
    return f"{fmt_loss(values[-1])}  (min {fmt_loss(min(values))}, max {fmt_loss(max(values))})" if values else "no evaluations yet"


class RunPanel(Vertical):
    """Live curves of one run; `show(None)` when the table is empty."""

    def compose(self) -> ComposeResult:
        yield Static(id="panel-title")
        with Horizontal(classes="curve-row"):
            yield Label("val  ", classes="curve-label")
            yield CurveSparkline([], id="val-spark")
            yield Label("", id="val-range", classes="curve-range")
        with Horizontal(classes="curve-row"):
            yield Label("train", classes="curve-label")
            yield CurveSparkline([], id="train-spark")
            yield Label("", id="train-range", classes="curve-range")

    def show(self, live: LiveRun | None) -> None:
        title = self.query_one("#panel-title", Static)
        val, train = self.query_one("#val-spark", CurveSparkline), self.query_one("#train-spark", CurveSparkline)
        if live is None:
            title.update("No runs yet: launch some from Experiments (F2) or `dropres-lab run --headless`.")
            val.data, train.data = [], []
            self.query_one("#val-range", Label).update("")
            self.query_one("#train-range", Label).update("")
            return
        r = live.row
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(live.label, style="bold")
        line.append("  ")
        line.append(r.status, style=status_style(r.status))
        parts = [f"step {r.step}/{r.max_iters}"]
        if r.best_val is not None:
            parts.append(f"best val {fmt_loss(r.best_val)}")
        if live.tokens_per_s:
            parts.append(f"{fmt_rate(live.tokens_per_s)} tok/s")
        if live.eta_s is not None:
            parts.append(f"ETA {fmt_duration(live.eta_s)}")
        if r.device:
            parts.append(f"{r.device}" + (f", group of {r.group_size}" if r.group_size else ""))
        if r.error:
            parts.append(r.error)
        line.append("  " + " · ".join(parts), style="dim")
        title.update(line)
        vals, trains = finite(live.val), finite(live.train)
        if list(val.data or []) != fitted(vals):
            val.data = fitted(vals)
        if list(train.data or []) != fitted(trains):
            train.data = fitted(trains)
        self.query_one("#val-range", Label).update(_range(vals))
        self.query_one("#train-range", Label).update(_range(trains))
