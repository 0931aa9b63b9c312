"""What every training loader shares: epochs of a fixed length, read counters, the output device, clean closing.

Subclasses make batches (:meth:`TrainLoader.next_batch`) and stop their workers (:meth:`TrainLoader._shutdown`);
the contract they keep is stated once, in :mod:`gapless.pipeline.loader`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch

from gapless.devices import torch_device
from gapless.pipeline.config import DataConfig


class TrainLoader(ABC):
    """Base of the DALI and the baseline loader."""

    def __init__(self, cfg: DataConfig, skipped_slides: int = 0, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.iterations_per_epoch = cfg.iterations_per_epoch
        self.out_device = device if device is not None else torch_device("auto")
        self._counts = {"reads": 0, "retries": 0, "skipped_tiles": 0, "skipped_slides": int(skipped_slides)}
        self._open = True

    @abstractmethod
    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next batch of the stream."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Stop worker processes and release buffers (called once)."""

    def __len__(self) -> int:
        return self.iterations_per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch: exactly ``iterations_per_epoch`` batches; the stream continues across epochs."""
        for _ in range(self.iterations_per_epoch):
            yield self.next_batch()

    def _count(self, retries: Any, skipped: Any) -> None:
        """Add one batch's per-sample retry and skip flags to the counters."""
        n_skipped = int(skipped.sum())
        self._counts["reads"] += int(skipped.numel()) - n_skipped
        self._counts["skipped_tiles"] += n_skipped
        self._counts["retries"] += int(retries.sum())

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        """Stop the loader's workers (idempotent)."""
        if getattr(self, "_open", False):
            self._open = False
            self._shutdown()

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
