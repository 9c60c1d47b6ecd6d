"""The report's figures, drawn with matplotlib (Agg: no display) from a `SuiteData`.

Three figures per suite, as the paper shows its results:

* validation loss against iteration for every row, the whole run beside its last half zoomed
  in (where settings differ by a few thousandths), replicates as the mean line with a shaded
  95 % band;
* exact validation loss against the swept setting with 95 % interval bars, the published
  values as distinct markers;
* the train-val gap (final val - final train) against the swept setting.

Made for print: every axis is labelled with its unit, legends name rows as the results table
does, and with many rows the legend goes below the plot in columns and tick labels are slanted,
so nothing overlaps. Sizes are fixed (no tight bounding box) so a figure's pixel size is known.
matplotlib is imported here only, when a report is written, never by the TUI's start-up.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .data import SuiteData, per_run_values

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg")
DPI = 150
#: Figure sizes in inches (at DPI): a PNG is exactly this many inches times DPI pixels.
CURVES_SIZE = (12.0, 6.0)
SWEPT_SIZE = (8.0, 5.0)

LOSS_UNIT = "nats/character"
#: The least y range of the swept-setting figures (nats/character): about twice the scatter
#: of one evaluation (DESIGN.md section 1), so single runs a few thousandths apart do not
#: look far apart.
MIN_SPAN = 0.02
#: (file stem, what it shows): the figures of every suite, in the order report.md embeds them.
FIGURES = (
    ("val-loss", "validation loss against iteration (right: the last half)"),
    ("exact-val", "exact validation loss against the swept setting, 95 % intervals"),
    ("gap", "train-val gap against the swept setting, 95 % intervals"),
)


def figure_name(suite: str, stem: str, fmt: str) -> str:
    """The file name of one figure of a suite, safe as a path component and in Markdown."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in suite)
    return f"{safe}-{stem}.{fmt}"


def write_figures(data: SuiteData, folder: Path, fmt: str = "png") -> list[Path]:
    """Draw the suite's figures into `folder` as `fmt` files; returns their paths in FIGURES order."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    drawers = {"val-loss": draw_curves, "exact-val": draw_exact_val, "gap": draw_gap}
    paths = []
    for stem, _ in FIGURES:
        fig = drawers[stem](data)
        path = folder / figure_name(data.suite, stem, fmt)
        try:
            fig.savefig(path, format=fmt, dpi=DPI, metadata=_metadata(fmt))
        finally:
            plt.close(fig)
        paths.append(path)
    return paths


def _metadata(fmt: str) -> dict:
    """No creation date in SVGs, so the same results give the same file."""
    return {"Date": None} if fmt == "svg" else {}


def colours(n: int) -> list:
    """n distinct colours: tab10 up to 10 rows, tab20 (paired shades) beyond."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


#: Line styles cycled beyond 10 rows, so two rows of similar colour still differ in print.
STYLES = ("-", "--", "-.", ":")


def _title(data: SuiteData, what: str) -> str:
    return f"{data.suite}: {what}"


def _new_figure(size: tuple[float, float], ncols: int = 1) -> tuple["Figure", list]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def draw_curves(data: SuiteData) -> "Figure":
    """Validation loss against iteration: the whole run, and its last half zoomed in."""
    fig, (full, zoom) = _new_figure(CURVES_SIZE, 2)
    order = data.axis().order
    palette = colours(len(order))
    last = max((b.steps[-1] for b in data.curves if b.steps), default=0)
    for k, i in enumerate(order):
        band = data.curves[i]
        if not band.steps:
            continue
        label = data.labels[i] + (f" (n={data.rows[i].n})" if data.rows[i].n > 1 else "")
        style = dict(color=palette[k], linestyle=STYLES[k // 10 % len(STYLES)] if len(order) > 10 else "-", linewidth=1.4)
        for ax in (full, zoom):
            ax.plot(band.steps, band.mean, label=label if ax is full else None,
                    marker="o" if len(band.steps) <= 30 else None, markersize=3, **style)
            if band.has_band:
                steps = [s for s, lo in zip(band.steps, band.low) if lo is not None]
                low = [lo for lo in band.low if lo is not None]
                high = [hi for hi in band.high if hi is not None]
                ax.fill_between(steps, low, high, color=palette[k], alpha=0.2, linewidth=0)
    if not any(band.steps for band in data.curves):
        for ax in (full, zoom):
            ax.text(0.5, 0.5, "no evaluations recorded yet", transform=ax.transAxes, ha="center", color="grey")
    full.set_title("whole run")
    zoom.set_title("last half")
    for ax in (full, zoom):
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"validation loss ({LOSS_UNIT})")
        ax.grid(True, alpha=0.3)
    if last > 0:
        zoom.set_xlim(last / 2, last + last * 0.02)
        lo, hi = _range_after(data, last / 2)
        if lo is not None and hi is not None:
            pad = (hi - lo) * 0.08 or 0.01
            zoom.set_ylim(lo - pad, hi + pad)
    fig.suptitle(_title(data, "validation loss" + (" (mean of replicates, shaded: 95 % interval)"
                                                    if any(b.has_band for b in data.curves) else "")))
    _legend_below(fig, full, len(order))
    return fig


def _range_after(data: SuiteData, start: float) -> tuple[float | None, float | None]:
    """The lowest and highest value (band included) any curve reaches from `start` on."""
    values = []
    for band in data.curves:
        for s, m, lo, hi in zip(band.steps, band.mean, band.low, band.high):
            if s >= start:
                values += [v for v in (m, lo, hi) if v is not None and math.isfinite(v)]
    return (min(values), max(values)) if values else (None, None)


def _legend_below(fig: "Figure", ax, n: int) -> None:
    """One legend for the figure under the plots, in as many columns as fit without overlap."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    widest = max(len(label) for label in labels)
    ncol = max(1, min(n, int(110 // max(widest + 4, 1)), 5))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize="small", frameon=False)


def draw_exact_val(data: SuiteData) -> "Figure":
    """Exact validation loss per row with its 95 % interval, and the published values."""
    return _swept(data, "exact_val", f"exact validation loss ({LOSS_UNIT})",
                  "final exact validation loss (whole split, end of training)", references=True)


def draw_gap(data: SuiteData) -> "Figure":
    """Final val - final train per row with its 95 % interval: how far validation trails training."""
    return _swept(data, "gap", f"val − train loss ({LOSS_UNIT})",
                  "train-val gap at the last evaluation (positive: validation is worse)", references=False)


def _swept(data: SuiteData, key: str, ylabel: str, title: str, references: bool) -> "Figure":
    from lab.stats import mean_interval

    fig, (ax,) = _new_figure(SWEPT_SIZE)
    axis = data.axis()
    palette = colours(len(axis.order))
    xs = list(range(len(axis.order)))
    intervals = [mean_interval(per_run_values(data.per_run[k], key)) for k in axis.order]
    limits = _scale_without_outliers(intervals, [data.rows[k].reference if references else None for k in axis.order])
    shown_interval = shown_single = shown_ref = shown_off = False
    for x, k, interval in zip(xs, axis.order, intervals):
        if interval.mean is None:  # say why the slot is empty: queued, running, diverged, ...
            ax.text(x, 0.03, f"no value\n({data.rows[k].status})", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize="small", color="grey")
            continue
        mean = interval.mean
        if limits is not None and not limits[0] <= mean <= limits[1]:
            edge = limits[1] if mean > limits[1] else limits[0]
            ax.plot([x], [edge], "^" if mean > limits[1] else "v", color=palette[x], markersize=9, clip_on=False,
                    label=None if shown_off else "off the scale (value written beside)")
            ax.annotate(f"{mean:.3f}", (x, edge), xytext=(6, -12 if mean > limits[1] else 4), textcoords="offset points",
                        fontsize="small", color=palette[x])
            shown_off = True
            continue
        if interval.low is not None and interval.high is not None:
            ax.errorbar([x], [mean], yerr=[[mean - interval.low], [interval.high - mean]], fmt="o", color=palette[x],
                        capsize=5, markersize=7, label=None if shown_interval else "ours: mean, 95 % interval")
            shown_interval = True
        else:
            ax.plot([x], [mean], "o", color=palette[x], markersize=7, markerfacecolor="white",
                    label=None if shown_single else "ours: one run (no interval)")
            shown_single = True
        reference = data.rows[k].reference
        if references and reference is not None:
            ax.plot([x + 0.12], [reference], "D", color="black", markerfacecolor="none", markersize=7,
                    label=None if shown_ref else "published (last evaluation)")
            shown_ref = True
    if key == "gap":
        ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(xs, axis.ticks)
    if axis.setting is None:
        ax.set_xlabel("run")
        long = max((len(t) for t in axis.ticks), default=0)
        if long * len(xs) > 60:  # would overlap written flat
            ax.tick_params(axis="x", labelrotation=35)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
    else:
        ax.set_xlabel(setting_label(axis.setting))
    ax.set_xlim(-0.6, len(xs) - 0.4)
    if limits is not None:
        ax.set_ylim(*limits)
    low, high = ax.get_ylim()
    if high - low < MIN_SPAN:  # never magnify differences below an evaluation's scatter into a gulf
        middle = (low + high) / 2
        ax.set_ylim(middle - MIN_SPAN / 2, middle + MIN_SPAN / 2)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(_title(data, title), fontsize="medium")
    _legend_below(fig, ax, 3)  # below the plot: never over a point
    return fig


def _scale_without_outliers(intervals: Sequence, references: Sequence[float | None]) -> tuple[float, float] | None:
    """y limits that leave out rows far from the rest (a run that barely trained beside runs a
    few thousandths apart), so the differences that matter stay visible; None when no row is
    that far. A row is far when its mean is more than 10 median absolute deviations (and 0.05)
    from the median of the means; at least three rows must remain."""
    means = [i.mean for i in intervals if i.mean is not None]
    if len(means) < 4:
        return None
    centre = statistics.median(means)
    spread = statistics.median(abs(m - centre) for m in means)
    near = [abs(m - centre) <= max(10 * spread, 0.05) for m in (i.mean for i in intervals)]
    if all(n for n, i in zip(near, intervals) if i.mean is not None) or sum(near) < 3:
        return None
    values = []
    for keep, interval, reference in zip(near, intervals, references):
        if keep and interval.mean is not None:
            values += [v for v in (interval.mean, interval.low, interval.high, reference) if v is not None]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.01
    return lo - pad, hi + pad


def setting_label(key: str) -> str:
    """An axis label for a swept setting, saying what it is and how the table names it."""
    if key.startswith("skips."):
        depth = key.split(".", 1)[1]
        return f"dropout rate on the skip-{depth} path ({key})"
    names = {"dropout": "dropout rate at every site", "n_layer": "blocks", "n_embd": "embedding width",
             "lr": "peak learning rate", "max_iters": "iterations", "seed": "seed"}
    return f"{names[key]} ({key})" if key in names else key


def figure_paths(suites: Sequence[str], folder: Path, fmt: str) -> list[Path]:
    """The files `write_figures` writes for these suites (for messages and tests)."""
    return [folder / figure_name(s, stem, fmt) for s in suites for stem, _ in FIGURES]
