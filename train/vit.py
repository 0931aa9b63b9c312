"""Vision Transformer backbone in the DINOv2 layout (pre-norm blocks, CLS token, mask token for iBOT).

Crops of any size that is a multiple of the patch size are accepted: the position embedding, learnt for the global
crop grid, is resized bicubically for others (96 px local crops) with DINOv2's scale factors, (grid + 0.1) / learnt
grid, rather than the output size alone (``interpolate_offset``; 0 resizes to the output size).

Attention runs xFormers' ``memory_efficient_attention`` when xFormers is installed and the tensors are on CUDA, and
PyTorch's ``scaled_dot_product_attention`` otherwise; neither is imported on a machine that cannot use it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# name -> (embed_dim, depth, num_heads)
ARCH_SIZES = {
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_tiny_test": (32, 2, 2),
}


@functools.lru_cache(maxsize=1)
def xformers_ops() -> Any | None:
    """xformers.ops, or None when it is not installed (or cannot load, e.g. without CUDA)."""
    try:
        import xformers.ops as xops
    except Exception:  # ImportError, or a broken CUDA build: fall back to SDPA
        return None
    return xops


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, impl: str = "auto") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.impl = impl  # auto | xformers | sdpa
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def uses_xformers(self, x: torch.Tensor) -> bool:
        if self.impl == "sdpa" or not x.is_cuda:
            return False
        available = xformers_ops() is not None
        if self.impl == "xformers" and not available:
            raise RuntimeError("model.attention=xformers but xformers is not installed")
        return available

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        if self.uses_xformers(x):
            q, k, v = qkv.unbind(2)  # [B, N, H, hd]: xFormers' layout
            out = xformers_ops().memory_efficient_attention(q, k, v).reshape(B, N, C)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, hd]
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch for a random subset of samples, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def add_residual_of_subset(
    x: torch.Tensor, residual: Callable[[torch.Tensor], torch.Tensor], rate: float
) -> torch.Tensor:
    """Stochastic depth as DINOv2 does it above a rate of 0.1: the branch runs on a random ``1 - rate`` share of
    the batch only (the compute it saves pays for the indexing) and is added back scaled by batch / share."""
    b = x.shape[0]
    kept = max(int(b * (1.0 - rate)), 1)
    rows = torch.randperm(b, device=x.device)[:kept]
    branch = residual(x[rows]).flatten(1).to(x.dtype)
    return torch.index_add(x.flatten(1), 0, rows, branch, alpha=b / kept).view_as(x)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, ls: float, impl: str) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, impl)
        self.ls1 = LayerScale(dim, ls) if ls > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ls2 = LayerScale(dim, ls) if ls > 0 else nn.Identity()
        self.drop_path = drop_path

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x)))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_path > 0.1:  # DINOv2's choice of the two forms of stochastic depth
            x = add_residual_of_subset(x, self.attention_branch, self.drop_path)
            return add_residual_of_subset(x, self.mlp_branch, self.drop_path)
        x = x + drop_path(self.attention_branch(x), self.drop_path, self.training)
        return x + drop_path(self.mlp_branch(x), self.drop_path, self.training)


class VisionTransformer(nn.Module):
    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        layerscale: float = 0.0,
        attention: str = "auto",
        interpolate_offset: float = 0.1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.interpolate_offset = interpolate_offset
        self.embed_dim = embed_dim
        self.depth = depth
        self.grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_path_rate, layerscale, attention) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embedding for an h x w patch grid (bicubic resize of the learnt grid when it differs)."""
        if h == self.grid and w == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            # The output has floor(grid * factor) = (h, w) cells; the factor itself sets where they sample.
            factors = ((h + self.interpolate_offset) / self.grid, (w + self.interpolate_offset) / self.grid)
            resize: dict = {"scale_factor": factors}
        else:
            resize = {"size": (h, w)}
        patch_pos = F.interpolate(patch_pos.float(), mode="bicubic", align_corners=False, **resize)
        patch_pos = patch_pos.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        _, _, H, W = x.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"crop {H}x{W} is not a multiple of the patch size {self.patch_size}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        if masks is not None:
            # torch.where keeps mask_token in the graph even when nothing is masked (DDP needs every parameter).
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens + self.interpolate_pos_encoding(H // self.patch_size, W // self.patch_size)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x: [B, 3, H, W]; masks: optional bool [B, N] (True = replaced by the mask token)."""
        tokens = self.prepare_tokens(x, masks)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return {"x_norm_clstoken": tokens[:, 0], "x_norm_patchtokens": tokens[:, 1:]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["x_norm_clstoken"]


def build_vit(model_cfg: Any, img_size: int, drop_path: float | None = None) -> VisionTransformer:
    """A backbone from a ``ModelConfig`` (or its dict form); ``drop_path`` overrides it (the teacher uses 0)."""
    get = model_cfg.get if isinstance(model_cfg, dict) else functools.partial(getattr, model_cfg)
    embed_dim, depth, heads = ARCH_SIZES[get("arch")]
    return VisionTransformer(
        img_size=img_size,
        patch_size=get("patch_size"),
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        drop_path_rate=get("drop_path") if drop_path is None else drop_path,
        layerscale=get("layerscale"),
        attention=get("attention"),
    )


def vit_flops_per_image(embed_dim: int, depth: int, tokens: int, patch_size: int = 16, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one image of `tokens` tokens (2 FLOPs per multiply-add; norms and softmax ignored)."""
    per_token_linear = 2 * (3 + 1 + 2 * mlp_ratio) * embed_dim**2  # qkv, proj, mlp in and out
    attention = 2 * 2 * tokens * embed_dim  # QK^T and AV, per token
    patch_embed = 2 * 3 * patch_size**2 * embed_dim * (tokens - 1)
    return depth * tokens * (per_token_linear + attention) + patch_embed
