"""The launch dialog: what a launch will train and how long this machine will take for it.

The prediction is `lab.bench`'s (the same as `dropres-lab bench`): the runs are planned as
the driver will train them and every group shape is timed for a few steps in as many
processes as the launch starts workers. That takes seconds to a minute, so it runs in a
thread worker while the dialog shows "measuring…". Launch is disabled meanwhile (Cancel has
the focus): a launch is confirmed knowing what it costs. Once measured, Launch is the default,
unless the prediction is longer than `LONG_LAUNCH_S`: such a launch is confirmed deliberately,
by ticking a box that names its length, and enter still cancels. When the dialog cannot
measure (runs are training, or measuring failed) Launch works at once: nothing better will be
known. Leaving the dialog cancels the measuring (its processes end), so it never competes with
the training it was asked about. Finished predictions are kept by the caller for the session.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Label, Static

from lab.experiments import RunSpec
from lab.formatting import counted, fmt_duration
from lab.workers.settings import DriverSettings

from .quit import ChoiceScreen

if TYPE_CHECKING:
    from lab.bench import Prediction

#: `lab.bench.bench_suite`, or a stand-in with its signature (tests).
Estimator = Callable[..., "Prediction"]

LAUNCH = "launch"
MEASURING = "measuring this machine…"
WAITING = "Launch is enabled once the estimate is known; esc cancels."

#: A launch predicted to take longer than this (a day) is confirmed deliberately: past a day
#: it holds the machine through a night and a working day, which one key should not start
#: by accident (an `A` that meant "the two new runs" can be a week of training).
LONG_LAUNCH_S = 24 * 3600.0


@dataclass(frozen=True)
class Estimate:
    """What the dialog says about a launch's wall time, and the predicted seconds if measured."""

    text: str
    wall_s: float | None = None


class LaunchScreen(ChoiceScreen):
    """Confirm a launch; shows the predicted wall time once measured. Returns "launch" or None.

    The key that opened it (l, L or A) confirms as well as enter on Launch, once Launch is
    enabled; escape cancels.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("l,L,A", "confirm", "Launch", show=False)]

    class Estimated(Message):
        """The measuring thread's news: progress (not final), the prediction, or why there is none."""

        def __init__(self, text: str, final: bool = False, wall_s: float | None = None) -> None:
            super().__init__()
            self.text = text
            self.final = final
            self.wall_s = wall_s

    def __init__(self, title: str, text: str, specs: Sequence[RunSpec], settings: DriverSettings,
                 cache: dict[Any, Estimate], key: Any, estimator: Estimator | None,
                 not_measured: str | None = None) -> None:
        """`specs`: the runs the launch will train; `cache[key]` a finished estimate of them,
        filled in here; `not_measured`: why not to measure now (shown instead)."""
        super().__init__(title, text, [(LAUNCH, "Launch", "primary"), ("cancel", "Cancel", "default")],
                         id="launch-dialog")
        self.specs = list(specs)
        self.settings = settings
        self.cache = cache
        self.key = key
        self.estimator = estimator
        self.not_measured = not_measured
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, classes="dialog-text", markup=False)
            yield Static("", id="launch-estimate", classes="dialog-text", markup=False)
            yield Checkbox("", False, compact=True, id="launch-long")
            with Vertical(classes="dialog-choices"):
                for key, label, variant in self.choices:
                    yield Button(label, id=key, variant=variant)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        if self.key in self.cache:
            self._settle(self.cache[self.key])
        elif not self.specs:
            self._show("Nothing to train: every run already has a result or is training.")
            self._allow_launch(False)
        elif self.not_measured:
            self._settle(Estimate(self.not_measured))
        else:
            self._show(f"{MEASURING} {WAITING}")
            self._allow_launch(False)
            self._measure()

    def on_unmount(self) -> None:
        self._cancel.set()  # its processes end within a fraction of a second

    def _show(self, text: str) -> None:
        self.query_one("#launch-estimate", Static).update(text)

    @property
    def estimate_text(self) -> str:
        """What the dialog says about the wall time now."""
        return str(self.query_one("#launch-estimate", Static).render())

    @property
    def launch_button(self) -> Button:
        return self.query_one(f"#{LAUNCH}", Button)

    def _allow_launch(self, allowed: bool) -> None:
        """Enable Launch and make it the default, or disable it and leave the focus on Cancel."""
        button = self.launch_button
        button.disabled = not allowed
        (button if allowed else self.query_one("#cancel", Button)).focus()

    def _settle(self, estimate: Estimate) -> None:
        """The estimate is as known as it will be: Launch works, deliberately for a long one."""
        self._show(estimate.text)
        if estimate.wall_s is not None and estimate.wall_s > LONG_LAUNCH_S:
            long = self.query_one("#launch-long", Checkbox)
            long.label = (f"Yes, launch {counted(len(self.specs), 'run')} for about "
                          f"{fmt_duration(estimate.wall_s, 'long')} (over a day)")
            long.add_class("-shown")
            self._allow_launch(False)
        else:
            self._allow_launch(True)

    @on(Checkbox.Changed, "#launch-long")
    def _long_confirmed(self, event: Checkbox.Changed) -> None:
        self.launch_button.disabled = not event.value

    def on_launch_screen_estimated(self, message: "LaunchScreen.Estimated") -> None:
        if message.final:
            self._settle(Estimate(message.text, message.wall_s))
        else:
            self._show(message.text)

    @work(thread=True, exclusive=True, group="launch-estimate", exit_on_error=False)
    def _measure(self) -> None:
        from lab.bench import BenchCancelled, Plan, bench_suite, plan_text

        def progress(plan: Plan, done: int, total: int) -> None:
            self.post_message(self.Estimated(f"{plan_text(plan)}; {MEASURING[:-1]} ({done} of "
                                             f"{counted(total, 'group shape')})… {WAITING}"))

        estimator = self.estimator or bench_suite
        s = self.settings
        try:
            prediction = estimator(self.specs, s.device, s.workers, s.group_size, progress=progress, cancel=self._cancel)
        except BenchCancelled:
            return
        except Exception as exc:  # shown, never fatal: the launch does not depend on it
            self.post_message(self.Estimated(f"No estimate: {exc}", final=True))
            return
        estimate = Estimate(f"{prediction.summary()} (measured on this machine; assumes it is otherwise idle)",
                            prediction.wall_s)
        self.cache[self.key] = estimate
        self.post_message(self.Estimated(estimate.text, final=True, wall_s=estimate.wall_s))

    def action_confirm(self) -> None:
        """Launch, if Launch is enabled (measured, and a long launch ticked); else say why not."""
        if self.launch_button.disabled:
            long = self.query_one("#launch-long", Checkbox)
            why = "tick the box first: this launch is long" if long.display else "wait for the estimate"
            self.notify(f"Not launched yet: {why} (esc cancels)", severity="warning", timeout=4)
            return
        self.dismiss(LAUNCH)


__all__ = ["Estimate", "LAUNCH", "LONG_LAUNCH_S", "LaunchScreen", "MEASURING"]
