"""Where the trainer's batches come from: the real pipeline (``pipeline.loader``) or an in-memory synthetic source.

Both follow one contract. Iterating the loader yields the batches of the current epoch (``iterations_per_epoch``
of them, fewer for the first epoch of a run resumed mid-epoch), each a dict:
``global_crops`` float [n_global*B, 3, G, G], ``local_crops`` float [n_local*B, 3, L, L] (crop-major: all B samples
of crop 0, then crop 1, ...), ``mpp`` float [B], ``level`` int [B]; normalised, on the GPU when there is one.
``stats()`` returns read/skip counters, ``close()`` releases workers.

The synthetic source costs no I/O: it is the trainer's upper bound in benchmarks and the data of the CPU tests.
Its images are crops of a small fixed pool of smooth random textures, so there is something to learn.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import DataConfig


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, iteration, ...), well mixed."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def default_device(data_cfg: DataConfig) -> torch.device:
    if data_cfg.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class SyntheticMultiCropLoader:
    """Random multi-crop batches, deterministic per (seed, rank, iteration); zero I/O."""

    def __init__(
        self,
        cfg: DataConfig,
        rank: int = 0,
        world_size: int = 1,
        start_iteration: int = 0,
        device: torch.device | None = None,
        pool: int = 32,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.iteration = start_iteration
        self.device = device or default_device(cfg)
        self.yielded = 0
        a = cfg.augment
        # The pool is the same on every rank (one "dataset"); which images a rank draws depends on the rank.
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, 0x5EED))
        # Smooth texture plus a per-image colour: crops of one image share an easily found signature.
        coarse = torch.randn(pool, 3, 8, 8, generator=gen) + torch.randn(pool, 3, 1, 1, generator=gen)
        self.pool = F.interpolate(coarse, size=(a.global_size, a.global_size), mode="bicubic", align_corners=False)
        self.pool = self.pool.to(self.device)

    def __len__(self) -> int:
        return self.cfg.iterations_per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        ipe = self.cfg.iterations_per_epoch
        end = (self.iteration // ipe + 1) * ipe
        while self.iteration < end:
            batch = self.batch(self.iteration)
            self.iteration += 1
            self.yielded += 1
            yield batch

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        cfg, a, B = self.cfg, self.cfg.augment, self.cfg.batch_size
        gen = torch.Generator(device=self.device).manual_seed(derived_seed(cfg.seed, self.rank, iteration))

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen, device=self.device)

        images = self.pool[torch.randint(len(self.pool), (B,), generator=gen, device=self.device)]
        globals_, locals_ = [], []
        for _ in range(a.global_crops):
            flip = (rand(B, 1, 1, 1) < a.flip_p).expand_as(images)
            crop = torch.where(flip, images.flip(-1), images)
            globals_.append(crop + 0.1 * torch.randn(crop.shape, generator=gen, device=self.device))
        span = a.global_size - a.local_size
        for _ in range(a.local_crops):
            top, left = (int(v * (span + 1)) for v in rand(2).tolist())
            crop = images[:, :, top : top + a.local_size, left : left + a.local_size]
            locals_.append(crop + 0.1 * torch.randn(crop.shape, generator=gen, device=self.device))
        s = cfg.sampling
        return {
            "global_crops": torch.cat(globals_),
            "local_crops": torch.cat(locals_) if locals_ else images.new_zeros(0, 3, a.local_size, a.local_size),
            "mpp": s.low + (s.high - s.low) * rand(B),
            "level": torch.zeros(B, dtype=torch.long, device=self.device),
        }

    def stats(self) -> dict[str, int]:
        # The pipeline's counters (nothing is read or skipped here) plus the batches produced.
        return {"batches": self.yielded, "reads": 0, "retries": 0, "skipped_tiles": 0, "skipped_slides": 0}

    def close(self) -> None:
        pass


def make_loader(data_cfg: DataConfig, rank: int, world_size: int, start_iteration: int):
    """The loader ``data_cfg.loader`` names: ``synthetic`` here, anything else from ``pipeline.loader``."""
    if data_cfg.loader == "synthetic":
        return SyntheticMultiCropLoader(data_cfg, rank, world_size, start_iteration)
    try:
        from pipeline.loader import build_loader
    except ModuleNotFoundError as exc:
        from gapless.cli import UserError

        raise UserError(
            f"data.loader={data_cfg.loader} needs the slide pipeline (pipeline.loader), which cannot be imported "
            f"({exc}); use data.loader=synthetic for a run without slides"
        ) from exc
    return build_loader(data_cfg, rank=rank, world_size=world_size, start_iteration=start_iteration)
