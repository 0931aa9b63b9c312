"""iBOT block-wise masks, made on the CPU per batch and deterministic in (seed, rank, iteration).

The block generator follows BEiT/DINOv2: rectangles of random area and aspect ratio are added until the target
number of patches is masked (or no rectangle fits). Per batch, ``mask_probability`` of the global crops get a mask;
their target ratios are spread over ``mask_ratio`` (one draw per equal-width bin, so a batch always covers the range),
and the masked crops are shuffled among the unmasked ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gapless.seeding import generator


def block_mask(
    rng: np.random.Generator,
    grid: tuple[int, int],
    n_masked: int,
    min_block: int = 4,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    max_block: int | None = None,
) -> np.ndarray:
    """A bool [h, w] mask with about ``n_masked`` patches set, built from random rectangles."""
    h, w = grid
    mask = np.zeros((h, w), dtype=bool)
    max_block = max_block or max(n_masked, min_block)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    count = 0
    while count < n_masked:
        budget = min(n_masked - count, max_block)
        added = 0
        for _ in range(10):  # a few tries to place one rectangle that adds at least one new patch
            area = min_block + (budget - min_block) * rng.random()  # DINOv2: uniform(min_block, budget)
            ratio = math.exp(rng.uniform(*log_aspect))
            bh = int(round(math.sqrt(area * ratio)))
            bw = int(round(math.sqrt(area / ratio)))
            if not (0 < bh < h and 0 < bw < w):
                continue
            top = int(rng.integers(0, h - bh + 1))
            left = int(rng.integers(0, w - bw + 1))
            new = bh * bw - int(mask[top : top + bh, left : left + bw].sum())
            if 0 < new <= budget:
                mask[top : top + bh, left : left + bw] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask


@dataclass
class MaskBatch:
    masks: torch.Tensor  # bool [n_global * B, N], crop-major like the global crops
    indices: torch.Tensor  # long [M]: positions of masked patches in masks.flatten()
    weights: torch.Tensor  # float [M]: 1 / (masked patches of the patch's crop)

    def to(self, device: torch.device) -> MaskBatch:
        return MaskBatch(*(t.to(device, non_blocking=True) for t in (self.masks, self.indices, self.weights)))


def make_masks(
    seed: int,
    rank: int,
    iteration: int,
    n_crops: int,
    grid: tuple[int, int],
    probability: float = 0.5,
    ratio: tuple[float, float] = (0.1, 0.5),
) -> MaskBatch:
    """Masks for ``n_crops`` global crops of a ``grid`` of patches."""
    rng = generator(seed, rank, iteration, 0x1B07)
    n_patches = grid[0] * grid[1]
    n_masked_crops = int(n_crops * probability)
    bounds = np.linspace(ratio[0], ratio[1], n_masked_crops + 1)
    masks = np.zeros((n_crops, n_patches), dtype=bool)
    for i in range(n_masked_crops):
        target = int(n_patches * rng.uniform(bounds[i], bounds[i + 1]))
        masks[i] = block_mask(rng, grid, target, max_block=n_patches // 2).reshape(-1)
    masks = masks[rng.permutation(n_crops)]
    masks_t = torch.from_numpy(masks)
    counts = masks_t.sum(dim=1, keepdim=True).clamp(min=1).float()
    weights = (1.0 / counts).expand_as(masks_t)[masks_t]
    return MaskBatch(masks_t, masks_t.flatten().nonzero().squeeze(1), weights)
