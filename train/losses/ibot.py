"""iBOT masked-image-modelling loss: the student sees mask tokens, the teacher the real patches; the student's
prototype scores at the masked positions are trained towards the teacher's.

Each masked crop contributes equally whatever its number of masked patches (``weights`` = 1 / masked count of the
patch's crop), and the sum is divided by the number of global crops (masked or not), as in DINOv2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gapless.train.losses.center import CenteredTeacherLoss


class IBOTPatchLoss(CenteredTeacherLoss):
    """Cross-entropy at the masked patches, teacher targets softmax-centred with their own running centre."""

    def forward(
        self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, weights: torch.Tensor, n_crops: int
    ) -> torch.Tensor:
        """student_logits, teacher_probs: [M, K] at the M masked patches; weights: [M]; n_crops: global crops."""
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        per_patch = (teacher_probs * log_p).sum(dim=-1)
        return -(per_patch * weights).sum() / max(n_crops, 1)
