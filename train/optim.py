"""AdamW with DINOv2's parameter groups: layer-wise lr decay, a smaller lr for the patch embedding, no weight decay
on biases, norms and LayerScale (the class, mask and register tokens and the position embedding are decayed, as in
DINOv2), and the head's last layer (prototype directions and gains) in its own group, frozen early."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

EMBEDDING_NAMES = ("patch_embed", "pos_embed", "cls_token", "mask_token", "register_tokens")


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for everything after the blocks (norm, head)."""
    if name.startswith("backbone."):
        rest = name[len("backbone.") :]
        if rest.startswith(EMBEDDING_NAMES):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
    return depth + 1


def is_decayed(name: str) -> bool:
    """DINOv2's rule: every parameter is decayed except biases, norms and LayerScale gains."""
    return not (name.endswith(".bias") or "norm" in name or "gamma" in name)


def param_groups(model: nn.Module, depth: int, layerwise_decay: float, patch_embed_lr_mult: float) -> list[dict]:
    """Groups of parameters sharing (lr multiplier, wd multiplier, is_last_layer); names as in ``SSLModel``."""
    grouped: dict[tuple[float, float, bool], list[nn.Parameter]] = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult = layerwise_decay ** (depth + 1 - layer_id(name, depth))
        if "patch_embed" in name:
            lr_mult *= patch_embed_lr_mult
        is_last = name.startswith("head.last_layer")
        grouped[(lr_mult, 1.0 if is_decayed(name) else 0.0, is_last)].append(p)
    return [
        {"params": ps, "lr_multiplier": lr, "wd_multiplier": wd, "is_last_layer": last}
        for (lr, wd, last), ps in sorted(grouped.items())
    ]


def build_optimizer(
    model: nn.Module,
    depth: int,
    layerwise_decay: float,
    patch_embed_lr_mult: float,
    betas: tuple[float, float],
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused`` takes PyTorch's fused kernel instead of the multi-tensor one."""
    groups = param_groups(model, depth, layerwise_decay, patch_embed_lr_mult)
    return torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0, betas=betas, **({"fused": True} if fused else {}))


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, last_layer_lr: float, wd: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = (last_layer_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        g["weight_decay"] = wd * g["wd_multiplier"]
