"""The synthetic loader (``data.loader=synthetic``): multi-crop batches made in memory, with no I/O at all.

It keeps the loader contract of :mod:`gapless.pipeline.loader` (shapes, crop-major order, epochs, counters) so the
trainer cannot tell it from the slide pipeline. It is the trainer's upper bound in benchmarks and the data of the
CPU tests. Its images are crops of a small fixed pool of smooth random textures, each with its own colour, so there
is something to learn; batch ``i`` of rank ``r`` is a pure function of (seed, r, i).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gapless.devices import torch_device
from gapless.pipeline.config import DataConfig
from gapless.pipeline.loader_base import TrainLoader
from gapless.pipeline.source import Shard
from gapless.seeding import derived_seed


class SyntheticLoader(TrainLoader):
    """Random multi-crop batches, deterministic per (seed, rank, iteration); zero I/O."""

    def __init__(
        self,
        cfg: DataConfig,
        shard: Shard | None = None,
        device: torch.device | None = None,
        pool: int = 32,
    ) -> None:
        super().__init__(cfg, device=device or torch_device("cpu" if cfg.device == "cpu" else "auto"))
        self.shard = shard or Shard()
        self.iteration = self.shard.start
        self.yielded = 0
        a = cfg.augment
        # The pool is the same on every rank (one "dataset"); which images a rank draws depends on the rank.
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, 0x5EED))
        # Smooth texture plus a per-image colour: crops of one image share an easily found signature.
        coarse = torch.randn(pool, 3, 8, 8, generator=gen) + torch.randn(pool, 3, 1, 1, generator=gen)
        self.pool = F.interpolate(coarse, size=(a.global_size, a.global_size), mode="bicubic", align_corners=False)
        self.pool = self.pool.to(self.out_device)

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = self.batch(self.iteration)
        self.iteration += 1
        self.yielded += 1
        return batch

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        """Batch ``iteration`` of this rank."""
        cfg, a, B, device = self.cfg, self.cfg.augment, self.cfg.batch_size, self.out_device
        gen = torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, self.shard.rank, iteration))

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen, device=device)

        images = self.pool[torch.randint(len(self.pool), (B,), generator=gen, device=device)]
        globals_, locals_ = [], []
        for _ in range(a.global_crops):
            flip = (rand(B, 1, 1, 1) < a.flip_p).expand_as(images)
            crop = torch.where(flip, images.flip(-1), images)
            globals_.append(crop + 0.1 * torch.randn(crop.shape, generator=gen, device=device))
        span = a.global_size - a.local_size
        for _ in range(a.local_crops):
            top, left = (int(v * (span + 1)) for v in rand(2).tolist())
            crop = images[:, :, top : top + a.local_size, left : left + a.local_size]
            locals_.append(crop + 0.1 * torch.randn(crop.shape, generator=gen, device=device))
        s = cfg.sampling
        return {
            "global_crops": torch.cat(globals_),
            "local_crops": torch.cat(locals_) if locals_ else images.new_zeros(0, 3, a.local_size, a.local_size),
            "mpp": s.low + (s.high - s.low) * rand(B),
            "level": torch.zeros(B, dtype=torch.long, device=device),
        }

    def stats(self) -> dict[str, int]:
        # The pipeline's counters (nothing is read, retried or skipped here) plus the batches made.
        return {**super().stats(), "batches": self.yielded}

    def _shutdown(self) -> None:
        pass
