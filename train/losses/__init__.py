"""DINOv2 losses as small modules with plain tensor arguments: DINO (CLS), iBOT (masked patches), KoLeo."""

from gapless.train.losses.dino import DINOLoss, sinkhorn_knopp
from gapless.train.losses.ibot import IBOTPatchLoss
from gapless.train.losses.koleo import KoLeoLoss

__all__ = ["DINOLoss", "IBOTPatchLoss", "KoLeoLoss", "sinkhorn_knopp"]
