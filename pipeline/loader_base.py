"""What every training loader shares: epochs of a fixed length, read counters, the output device, normalising the
views, clean closing.

Subclasses make batches (:meth:`TrainLoader.next_batch`) and stop their workers (:meth:`TrainLoader._shutdown`);
the contract they keep is stated once, in :mod:`gapless.pipeline.loader`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from gapless.devices import torch_device
from gapless.pipeline.config import DataConfig


class ViewNormalizer:
    """uint8 views [N, S, S, 3] (HWC, as both loaders make them) -> float32 [N, 3, S, S], ``(x/255 - mean)/std``.

    Views cross processes as bytes and are normalised here, once per batch, on the device that receives them: on a
    GPU it costs no CPU time; on a CPU it is three single-threaded NumPy passes over the batch (torch's intra-op
    threads would spin on a busy machine and cost several times the CPU time). Both compute ``x * scale - shift``
    in float32, so they give the same values.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.scale = (np.float32(1.0) / (np.float32(255.0) * std_a)).reshape(1, 3, 1, 1)
        self.shift = (mean_a / std_a).reshape(1, 3, 1, 1)
        self.device = device
        if device.type != "cpu":
            self.scale_t, self.shift_t = (
                torch.from_numpy(self.scale).to(device),
                torch.from_numpy(self.shift).to(device),
            )

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            out = np.empty((views.shape[0], 3, *views.shape[1:3]), np.float32)
            out[...] = views.numpy().transpose(0, 3, 1, 2)
            out *= self.scale
            out -= self.shift
            return torch.from_numpy(out)
        views = views.to(self.device, non_blocking=True)
        out = torch.empty((views.shape[0], 3, *views.shape[1:3]), dtype=torch.float32, device=self.device)
        out.copy_(views.permute(0, 3, 1, 2))  # uint8 -> float32 and HWC -> CHW in one pass
        return out.mul_(self.scale_t).sub_(self.shift_t)


class TrainLoader(ABC):
    """Base of the DALI and the baseline loader."""

    def __init__(self, cfg: DataConfig, skipped_slides: int = 0, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.iterations_per_epoch = cfg.iterations_per_epoch
        self.out_device = device if device is not None else torch_device("auto")
        self.normalize = ViewNormalizer(cfg.augment.mean, cfg.augment.std, self.out_device)
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
