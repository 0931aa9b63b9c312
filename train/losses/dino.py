"""DINO self-distillation loss on prototype scores, with the teacher's two ways of avoiding collapse.

- Softmax centering: subtract a running mean of the teacher's scores (momentum 0.9), sharpen with the teacher
  temperature, softmax.
- Sinkhorn-Knopp: a few iterations (3) that make the teacher's assignment matrix doubly stochastic over the batch,
  summed over every rank when running distributed, so the batch is the global one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gapless.train.losses.center import CenteredTeacherLoss, all_reduce_sum


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor, teacher_temp: float, iterations: int = 3, n_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Teacher targets [B, K] whose columns (prototypes) get equal mass and whose rows sum to one.

    ``n_rows`` is this rank's number of valid rows (a tensor, so it can be all-reduced); default B.
    """
    Q = torch.exp(teacher_logits.float() / teacher_temp).t()  # [K, B]
    K = Q.shape[0]
    n = torch.tensor(float(Q.shape[1]), device=Q.device) if n_rows is None else n_rows.float().clone()
    B = all_reduce_sum(n)
    Q /= all_reduce_sum(Q.sum())
    for _ in range(iterations):
        Q /= all_reduce_sum(Q.sum(dim=1, keepdim=True))  # each prototype: total mass 1/K
        Q /= K
        Q /= Q.sum(dim=0, keepdim=True)  # each sample: total mass 1/B
        Q /= B
    Q *= B
    return Q.t()


class DINOLoss(CenteredTeacherLoss):
    """Cross-entropy between teacher targets and student log-probabilities, summed over (student, teacher) pairs."""

    def forward(self, student_logits: list[torch.Tensor], teacher_probs: list[torch.Tensor]) -> torch.Tensor:
        """Sum over every (student crop, teacher crop) pair of the batch-mean cross-entropy."""
        total = student_logits[0].new_zeros((), dtype=torch.float32)
        for s in student_logits:
            log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)
            for t in teacher_probs:
                total = total - (t * log_p).sum(dim=-1).mean()
        return total
