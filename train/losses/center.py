"""What DINO and iBOT share: a student temperature and the teacher's softmax centering.

The centre is an EMA of the teacher's mean prototype score over the *global* batch (summed over every rank), so
each rank subtracts the same centre. The buffer is named ``center`` in both losses (checkpoints rely on it).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` in place over every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


class CenteredTeacherLoss(nn.Module):
    """Base of the DINO and iBOT losses: softmax-centred teacher targets with a running centre."""

    def __init__(self, prototypes: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, prototypes))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the mean teacher score over the global batch (all ranks)."""
        total = all_reduce_sum(teacher_logits.float().sum(dim=0, keepdim=True))
        count = all_reduce_sum(torch.tensor(float(teacher_logits.shape[0]), device=total.device))
        # With no rows anywhere (iBOT with no masked patch in the global batch) there is nothing to average.
        if count.item() > 0:
            m = self.center_momentum
            self.center.mul_(m).add_(total / count, alpha=1 - m)
