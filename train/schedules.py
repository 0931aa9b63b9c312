"""Per-iteration schedules, precomputed as arrays (DINOv2's CosineScheduler): a resumed run indexes the same
arrays at its iteration, so nothing about a schedule needs to be stored in a checkpoint beyond the iteration."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gapless.train.config import PretrainConfig


def cosine_schedule(
    base: float, final: float, total: int, warmup: int = 0, warmup_start: float = 0.0, freeze: int = 0
) -> np.ndarray:
    """``freeze`` iterations at 0, a linear warmup from ``warmup_start`` to ``base``, then cosine to ``final``.

    DINOv2's ``CosineScheduler``: the warmup's last iteration is at ``base`` already, and so is the first cosine one.
    """
    freeze = min(freeze, total)
    warmup = min(warmup, total - freeze)
    n_cos = total - freeze - warmup
    ramp = np.linspace(warmup_start, base, warmup)
    steps = np.arange(n_cos)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(n_cos, 1)))
    return np.concatenate([np.zeros(freeze), ramp, cos]).astype(np.float64)


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int) -> float:
    """DINOv2's square-root scaling of the learning rate with the global batch size."""
    return base_lr * math.sqrt(global_batch / reference_batch)


@dataclass
class Schedules:
    lr: np.ndarray
    last_layer_lr: np.ndarray  # lr, but 0 while the last layer is frozen
    weight_decay: np.ndarray
    momentum: np.ndarray  # teacher EMA momentum
    teacher_temp: np.ndarray

    def at(self, it: int) -> dict[str, float]:
        i = min(it, len(self.lr) - 1)
        return {
            "lr": float(self.lr[i]),
            "last_layer_lr": float(self.last_layer_lr[i]),
            "wd": float(self.weight_decay[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
        }


def build_schedules(cfg: PretrainConfig, world_size: int) -> Schedules:
    total = cfg.total_iterations
    ipe = cfg.data.iterations_per_epoch
    o, s = cfg.optim, cfg.schedule
    peak = scaled_lr(o.base_lr, cfg.data.batch_size * world_size, o.lr_reference_batch)
    warmup = round(o.warmup_epochs * ipe)
    lr = cosine_schedule(peak, o.min_lr, total, warmup=warmup)
    last_layer_lr = lr.copy()
    last_layer_lr[: round(o.freeze_last_layer_epochs * ipe)] = 0.0
    wd = cosine_schedule(o.weight_decay, o.weight_decay_end, total)
    momentum = cosine_schedule(s.teacher_momentum, s.teacher_momentum_end, total)
    temp_warmup = min(round(s.teacher_temp_warmup_epochs * ipe), total)
    temp = np.full(total, s.teacher_temp)
    temp[:temp_warmup] = np.linspace(s.teacher_temp_warmup, s.teacher_temp, temp_warmup)
    return Schedules(lr, last_layer_lr, wd, momentum, temp)
