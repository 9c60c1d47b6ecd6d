"""The launch dialog: what a launch will train and how long this machine will take for it.

The prediction is `lab.bench`'s (the same as `dropres-lab bench`): the runs are planned as
the driver will train them and every group shape is timed for a few steps in as many
processes as the launch starts workers. That takes seconds to a minute, so it runs in a
thread worker while the dialog shows "measuring…"; Launch works at once, without waiting.
Leaving the dialog cancels the measuring (its processes end), so it never competes with the
training it was asked about. Finished predictions are kept by the caller for the session.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Label, Static

from lab.experiments import RunSpec
from lab.workers.settings import DriverSettings

from .quit import ChoiceScreen

if TYPE_CHECKING:
    from lab.bench import Prediction

#: `lab.bench.bench_suite`, or a stand-in with its signature (tests).
Estimator = Callable[..., "Prediction"]

LAUNCH = "launch"
MEASURING = "measuring this machine…"


class LaunchScreen(ChoiceScreen):
    """Confirm a launch; shows the predicted wall time once measured. Returns "launch" or None.

    The key that opened it (l, L or A) confirms as well as enter; escape cancels.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("l,L,A", "confirm", "Launch", show=False)]

    class Estimated(Message):
        """The measuring thread's news: progress, the prediction, or why there is none."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, title: str, text: str, specs: Sequence[RunSpec], settings: DriverSettings,
                 cache: dict[Any, str], key: Any, estimator: Estimator | None, not_measured: str | None = None) -> None:
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
            with Vertical(classes="dialog-choices"):
                for key, label, variant in self.choices:
                    yield Button(label, id=key, variant=variant)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        super().on_mount()
        if self.key in self.cache:
            self._show(self.cache[self.key])
        elif not self.specs:
            self._show("Nothing to train: every run already has a result.")
        elif self.not_measured:
            self._show(self.not_measured)
        else:
            self._show(MEASURING)
            self._measure()

    def on_unmount(self) -> None:
        self._cancel.set()  # its processes end within a fraction of a second

    def _show(self, text: str) -> None:
        self.query_one("#launch-estimate", Static).update(text)

    @property
    def estimate_text(self) -> str:
        """What the dialog says about the wall time now."""
        return str(self.query_one("#launch-estimate", Static).render())

    def on_launch_screen_estimated(self, message: "LaunchScreen.Estimated") -> None:
        self._show(message.text)

    @work(thread=True, exclusive=True, group="launch-estimate", exit_on_error=False)
    def _measure(self) -> None:
        from lab.bench import BenchCancelled, Plan, bench_suite, plan_text

        def progress(plan: Plan, done: int, total: int) -> None:
            self.post_message(self.Estimated(f"{plan_text(plan)}; {MEASURING[:-1]} ({done} of {total} group "
                                             f"shape{'s' if total != 1 else ''})…"))

        estimator = self.estimator or bench_suite
        s = self.settings
        try:
            prediction = estimator(self.specs, s.device, s.workers, s.group_size, progress=progress, cancel=self._cancel)
        except BenchCancelled:
            return
        except Exception as exc:  # shown, never fatal: the launch does not depend on it
            self.post_message(self.Estimated(f"No estimate: {exc}"))
            return
        text = f"{prediction.summary()} (measured on this machine; assumes it is otherwise idle)"
        self.cache[self.key] = text
        self.post_message(self.Estimated(text))

    def action_confirm(self) -> None:
        self.dismiss(LAUNCH)


__all__ = ["LAUNCH", "LaunchScreen", "MEASURING"]
