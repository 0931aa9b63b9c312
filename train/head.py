"""DINO projection head: a 3-layer MLP to an L2-normalised bottleneck, then a weight-normalised prototype layer.

The prototype layer is DINOv2's ``weight_norm(nn.Linear(bottleneck, prototypes, bias=False))`` written out: each
prototype row is ``weight_g * weight_v / ||weight_v||`` with a trained gain ``weight_g`` that starts at 1, so the
parameters are plain tensors named as in DINOv2 (``last_layer.weight_g``, ``last_layer.weight_v``). Both belong to
the optimiser's last-layer group, which is frozen (learning rate 0) for the first epochs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """Linear layer without bias whose rows are ``weight_v`` directions scaled by the trained gains ``weight_g``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's initialisation, as DINOv2's layer

    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight())


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, prototypes: int = 65536, hidden: int = 2048, bottleneck: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck, prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        # fp16 cannot hold 1e-12: a larger eps keeps the normalisation finite under autocast.
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        return self.last_layer(F.normalize(x, dim=-1, eps=eps))
