"""KoLeo regulariser (Sablayrolles et al., 2019): spread features by penalising small nearest-neighbour distances,
``-mean_i log(min_{j != i} ||x_i - x_j||)`` on L2-normalised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: [B, D] (B >= 2); computed in fp32 whatever the autocast dtype."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = F.normalize(features.float(), dim=-1, eps=self.eps)
            dots = x @ x.t()
            dots.fill_diagonal_(-2.0)  # below any cosine: a sample is never its own neighbour
            nearest = dots.argmax(dim=1)
            distances = F.pairwise_distance(x, x[nearest], p=2, eps=self.eps)
            return -torch.log(distances + self.eps).mean()
