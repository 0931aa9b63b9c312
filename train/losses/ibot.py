"""iBOT masked-image-modelling loss: the student sees mask tokens, the teacher the real patches; the student's
prototype scores at the masked positions are trained towards the teacher's.

Each masked crop contributes equally whatever its number of masked patches (``weights`` = 1 / masked count of the
patch's crop), and the sum is divided by the number of global crops (masked or not), as in DINOv2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.losses.dino import all_reduce_sum


class IBOTPatchLoss(nn.Module):
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
        total = all_reduce_sum(teacher_logits.float().sum(dim=0, keepdim=True))
        count = all_reduce_sum(torch.tensor(float(teacher_logits.shape[0]), device=total.device))
        m = self.center_momentum
        # With no masked patch anywhere there is nothing to average: keep the centre.
        if count.item() > 0:
            self.center.mul_(m).add_(total / count, alpha=1 - m)

    def forward(
        self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, weights: torch.Tensor, n_crops: int
    ) -> torch.Tensor:
        """student_logits, teacher_probs: [M, K] at the M masked patches; weights: [M]; n_crops: global crops."""
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        per_patch = (teacher_probs * log_p).sum(dim=-1)
        return -(per_patch * weights).sum() / max(n_crops, 1)
