"""Terminal output of the CLI and the runners it calls: the libraries' own progress bars and deprecation notices
are not the user's concern (the demo printed transformers' "Loading weights" bar for every rung), and a progress
bar is drawn only once a run has started, so that an error found while it sets up is printed alone."""

from __future__ import annotations

import os
import sys
import warnings
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LIBRARIES = ("transformers", "peft", "accelerate", "datasets", "huggingface_hub", "torch", "tensorboard")


def quiet_libraries() -> None:
    """Silence the libraries' progress bars, info logs and deprecation warnings. Our own warnings still show.

    Environment variables are read when a library is first imported (the CLI imports them lazily, inside
    commands); a library imported already is told directly."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # the hub's "Retrying in 1s" lines are warnings
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    libraries = "|".join(LIBRARIES)
    warnings.filterwarnings("ignore", category=UserWarning, module=rf"({libraries})(\.|$)")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()


class LazyProgress:
    """A callable `progress(done, total)` that draws one rich progress bar from its first call on.

    Use as a context manager around a run: nothing is drawn while the run loads its data and model, so an error
    raised there is the only output; the bar is closed on exit."""

    def __init__(self, console: Console, label: str):
        self.console, self.label = console, label
        self._bar: Progress | None = None
        self._job: TaskID | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None or self._job is None:
            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.start()
            self._job = self._bar.add_task("run", total=total)
        self._bar.update(self._job, completed=done, total=total)

    @property
    def started(self) -> bool:
        return self._bar is not None

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


def progress_enabled(console: Console) -> bool:
    """Whether to draw progress bars on `console`: a terminal that can move its cursor, not set quiet. Redirected
    to a file or a pipe (a log, CI, a captured run), output stays plain lines without control codes."""
    return console.is_terminal and not console.is_dumb_terminal and not console.quiet


class RunProgress:
    """A training run's progress: a bar of optimizer steps with the last loss and tokens/s, the time elapsed and
    the ETA; while the held-out evaluation runs, a second bar of its items. Nothing is drawn when `enabled` is false
    (by default: when `progress_enabled(console)` is), but the counts are kept either way.

    `start()` draws it (a resumed run's bar starts at its checkpoint's step, and the ETA counts only the steps
    run here); `close()` removes nothing the run printed: lines printed on the same console go above the bar."""

    def __init__(self, console: Console, steps: int, done: int = 0, enabled: bool | None = None):
        self.console = console
        self.enabled = progress_enabled(console) if enabled is None else enabled
        self.steps, self.done = steps, done
        self.eval_total = self.eval_done = 0
        self._bar: Progress | None = None
        self._train: TaskID | None = None
        self._eval: TaskID | None = None

    def start(self) -> RunProgress:
        if self.enabled and self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
            self._train = self._bar.add_task(
                "[bold]train[/bold]", total=self.steps, completed=self.done, stats=""
            )
        return self

    def step(self, step: int, loss: float, tokens_per_s: float) -> None:
        """Optimizer step `step` is done."""
        self.done = step
        if self._bar is not None and self._train is not None:
            stats = f"loss {loss:.4g}  {tokens_per_s:,.0f} tok/s"
            self._bar.update(self._train, completed=step, stats=stats)

    def eval_start(self, total: int) -> None:
        """The held-out evaluation of `total` items begins."""
        self.eval_total, self.eval_done = total, 0
        if self._bar is not None:
            self._eval = self._bar.add_task("[bold]eval[/bold]", total=total, stats="")

    def eval_advance(self, items: int) -> None:
        self.eval_done += items
        if self._bar is not None and self._eval is not None:
            self._bar.update(self._eval, completed=self.eval_done)

    def eval_end(self) -> None:
        if self._bar is not None and self._eval is not None:
            self._bar.remove_task(self._eval)
        self._eval = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = None
