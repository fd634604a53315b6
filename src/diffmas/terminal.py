"""Terminal output of the CLI and the runners it calls: the libraries' own progress bars and deprecation notices
are not the user's concern (the demo printed transformers' "Loading weights" bar for every rung), and a progress
bar is drawn only once a run has started, so that an error found while it sets up is printed alone."""

from __future__ import annotations

import os
import sys
import warnings
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

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
