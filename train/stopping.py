"""Stopping a run on request: SIGTERM (what SLURM sends before preemption, and ``docker stop``) ends the run after
its current step with a checkpoint, so the requeued job continues where it stopped.

The signal handler only records the request; the training loop shares it with every rank in the collective it
makes at each step anyway, so all ranks stop after the same step and rank 0 writes one checkpoint. :func:`closing`
and :func:`stopped_while_starting` keep the run's own reason the one reported when the loader's workers, in the same
process group, die of the signal too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from gapless.errors import GaplessError, RunError
from gapless.train.checkpoint import latest_checkpoint

STOP_SIGNALS = (signal.SIGTERM,)


def _child_ended(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD while a run stops: nothing to do (the loader finds its dead workers itself)."""


class TrainingStopped(RunError):
    """The run stopped on request (a signal), its completed steps in a checkpoint; rerunning the command continues."""


class StopRequests:
    """``with StopRequests() as stop:`` records SIGTERM in ``stop.signal`` instead of dying; the previous handlers
    come back when the block ends. Signals can be caught only in the main thread; elsewhere nothing changes."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        # The loader's workers get the signal too (it goes to the job's process group), and PyTorch's DataLoader
        # raises from its SIGCHLD handler when they die: at whatever line the run is on, mid-step, mid-checkpoint or
        # mid-print. With that handler replaced by one that does nothing (not by the default: CPython would report a
        # signal already received as ignored), a dead worker shows where the loader is used (the next batch, closing
        # it), where the loop expects it. The handler comes back when the block ends.
        if signal.SIGCHLD not in self._previous:
            previous = signal.signal(signal.SIGCHLD, _child_ended)
            self._previous[signal.SIGCHLD] = signal.SIG_DFL if previous is None else previous  # None: set in C

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def closing(loader: Any) -> Iterator[None]:
    """Close ``loader`` (if any) when the block ends, however it ends. When the block fails, a close that fails too
    does not replace the block's error, which says why the run ended: workers killed by the signal that stops the run
    make PyTorch's DataLoader raise as it joins them."""
    try:
        yield
    except BaseException:
        if loader is not None:
            with contextlib.suppress(Exception):
                loader.close()
        raise
    if loader is not None:
        loader.close()


@contextlib.contextmanager
def stopped_while_starting(stop: StopRequests, run_dir: Path) -> Iterator[None]:
    """A failure that reaches this block while ``stop`` is requested, from before the first step (the loader's workers,
    just started, got the signal too), is the run's :class:`TrainingStopped`: nothing trained, the last checkpoint
    named. The steps report their own stops; gapless's own errors pass as they are."""
    try:
        yield
    except GaplessError:
        raise
    except Exception:
        if not stop.requested:
            raise
        kept = latest_checkpoint(run_dir)
        raise TrainingStopped(
            f"stopped by {stop.signal} while the run was starting: nothing trained, "
            f"{f'the last checkpoint is {kept}' if kept else 'no checkpoint yet'}; rerun the same command to continue"
        ) from None
