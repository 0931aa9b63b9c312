"""DINOv2 losses as small modules with plain tensor arguments: DINO (CLS), iBOT (masked patches), KoLeo."""

from train.losses.dino import DINOLoss, sinkhorn_knopp
from train.losses.ibot import IBOTPatchLoss
from train.losses.koleo import KoLeoLoss

__all__ = ["DINOLoss", "IBOTPatchLoss", "KoLeoLoss", "sinkhorn_knopp"]
