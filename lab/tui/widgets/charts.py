"""Line charts (textual-plotext) for the detail screen: losses, overlays and the lr schedule."""

from __future__ import annotations

import math
from typing import Sequence

from textual_plotext import PlotextPlot

from lab.core.config import RunConfig
from lab.core.train import lr_at

#: Distinct plotext colours for overlaid curves, in order.
PALETTE = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white")
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
                    xmax: int | None = None) -> None:
        """Plot (label, steps, losses) curves; an empty list shows an empty frame."""
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        plt.xlabel("iteration")
        plt.ylabel("loss")
        for i, (label, steps, values) in enumerate(curves):
            xs, ys = thin(steps, values)
            if xs:
                plt.plot(xs, ys, label=label, color=PALETTE[i % len(PALETTE)], marker="braille")
        if xmax:
            plt.xlim(0, xmax)
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
            plt.plot(xs, [lr_at(cfg, x) for x in xs], color=PALETTE[i % len(PALETTE)], marker="braille")
        if at_step is not None and configs:
            plt.vline(at_step, "grey")
        self.refresh()
