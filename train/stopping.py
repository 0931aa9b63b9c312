"""Stopping a run on request: SIGTERM (what SLURM sends before preemption, and ``docker stop``) ends the run after
its current step with a checkpoint, so the requeued job continues where it stopped.

The signal handler only records the request; the training loop shares it with every rank in the collective it
makes at each step anyway, so all ranks stop after the same step and rank 0 writes one checkpoint.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from gapless.errors import RunError

STOP_SIGNALS = (signal.SIGTERM,)


class TrainingStopped(RunError):
    """The run stopped on request (a signal) after saving a checkpoint; rerunning the command continues it."""


class StopRequests:
    """``with StopRequests() as stop:`` records SIGTERM in ``stop.signal`` instead of dying; the previous handlers
    come back when the block ends. Signals can be caught only in the main thread; elsewhere nothing changes."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name

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
