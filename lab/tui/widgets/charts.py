"""Charts: line charts (textual-plotext) for the detail screen (losses, overlays and the lr
schedule), and the Sparkline of a live curve in the Runs panel."""

from __future__ import annotations

import math
from typing import Sequence

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual.widgets import Sparkline
from textual_plotext import PlotextPlot

from lab.core.config import RunConfig
from lab.core.config import lr_at

#: Distinct plotext colours for overlaid curves, in order.
PALETTE = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white")
MARKER = "hd"  # quarter blocks: finer than whole cells, and drawn by every terminal font
POINT = "●"  # a curve of one point (the first evaluation): a quarter block alone is hard to see
MAX_POINTS = 400  # a plot is at most a few hundred cells wide: thin longer curves


def thin(steps: Sequence[int], values: Sequence[float], limit: int = MAX_POINTS) -> tuple[list[int], list[float]]:
    """Drop non-finite points, then keep every k-th so at most `limit` remain (the last kept)."""
    pts = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    if len(pts) > limit:
        k = math.ceil(len(pts) / limit)
        pts = pts[::k] + ([pts[-1]] if (len(pts) - 1) % k else [])
    return [s for s, _ in pts], [v for _, v in pts]


class LossChart(PlotextPlot):
    """Loss against iteration: one run's train and val curves, or several runs' val curves."""

    def show_curves(self, title: str, curves: Sequence[tuple[str, Sequence[int], Sequence[float]]],
                    xmax: int | None = None, colors: Sequence[str] = PALETTE, zoom: bool = False) -> None:
        """Plot (label, steps, losses) curves; an empty list shows an empty frame.

        `zoom`: fit the y axis to the curves after the first tenth of training (as the paper's
        figures do), so the differences between runs are not flattened by the initial drop.
        """
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        plt.xlabel("iteration")
        tails: list[float] = []
        for i, (label, steps, values) in enumerate(curves):
            xs, ys = thin(steps, values)
            if xs:
                plt.plot(xs, ys, label=label, color=colors[i % len(colors)], marker=MARKER if len(xs) > 1 else POINT)
                tails += [y for x, y in zip(xs, ys) if xmax and x >= xmax / 10]
        if xmax:
            plt.xlim(0, xmax)
        if zoom and len(tails) > 1 and max(tails) > min(tails):
            pad = (max(tails) - min(tails)) * 0.05
            plt.ylim(min(tails) - pad, max(tails) + pad)
        self.refresh()


class LrChart(PlotextPlot):
    """The learning-rate schedule of one or more runs (`lr_at`, the trainer's own function)."""

    def show_schedules(self, configs: Sequence[tuple[str, RunConfig]], at_step: int | None = None) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title("learning rate")
        seen: list[tuple] = []
        for i, (label, cfg) in enumerate(configs):
            key = (cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.max_iters)
            if key in seen:  # identical schedules are drawn once
                continue
            seen.append(key)
            n = 120
            xs = sorted({round(cfg.max_iters * j / n) for j in range(n + 1)} | {min(cfg.warmup_iters, cfg.max_iters)})
            plt.plot(xs, [lr_at(cfg, x) for x in xs], color=PALETTE[i % len(PALETTE)], marker=MARKER)
        if seen:
            top = max(k[0] for k in seen)
            ticks = [0.0, top / 2, top]
            plt.yticks(ticks, [f"{t:.0e}" if t else "0" for t in ticks])
        if at_step is not None and configs:
            plt.vline(at_step, "gray")
        self.refresh()


class CurveSparkline(Sparkline):
    """A Sparkline that draws a curve of one point as one point.

    Textual's Sparkline fills its whole area when given a single value (there is no range to
    scale it by), so a run's first evaluation read as a solid block. One point is drawn as a
    marker at the left, where the curve will start; from two points on, the bars as usual.
    """

    def render(self) -> RenderableType:
        data = list(self.data or [])
        if len(data) != 1:
            return super().render()
        color = self.get_component_styles("sparkline--min-color").color
        marker = Text(POINT, style=Style(color=color.rich_color) if color else "")
        lines = [Text("")] * (self.size.height // 2) + [marker]
        return Text("\n").join(lines)
