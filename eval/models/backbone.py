"""A loaded model as the evaluation sees it: tokens in, the embedding out.

Whatever its origin, a :class:`Backbone` has one forward, :meth:`Backbone.tokens`, that returns the final normed
tokens ``[B, N, D]`` with the prefix tokens first (the class token, then any register tokens), and it knows how many
prefix tokens there are, its patch size, the input size it insists on (``None``: any multiple of the patch size)
and the normalisation its inputs need, with where that normalisation came from.

The embedding of a tile (as in the paper's evaluation code) is ``L2(CLS) ⊕ L2(mean of the patch tokens)``: every prefix
token is left out of the mean, so register tokens never count as patches. The raw class token is kept beside it for
RankMe as the paper's code computes it (on the class token alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.config import IMAGENET_MEAN, IMAGENET_STD

IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)  # the statistics the paper and UNI2-h normalise with


@dataclass
class Backbone:
    """A model ready to embed tiles; ``identity`` says what determines its weights (for caches and reports)."""

    module: Any
    name: str
    kind: str  # gapless | timm | released | dinov2 | hf-hub
    prefix_tokens: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalisation_source: str
    input_size: int | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    step: int = -1
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tokens(self, x: Any) -> Any:
        """Final normed tokens ``[B, N, D]`` of normalised images ``x`` ``[B, 3, H, W]``, prefix tokens first."""
        import torch

        out = self.module.forward_features(x)
        if isinstance(out, dict):  # the DINOv2 layout (gapless's ViT): class token and patch tokens apart
            return torch.cat([out["x_norm_clstoken"].unsqueeze(1), out["x_norm_patchtokens"]], dim=1)
        return out

    def check_tiles(self, tile_px: int, set_path: Any) -> None:
        """Refuse tiles the model cannot take: a patch size that does not divide them, or a fixed input size."""
        if tile_px % self.patch_size:
            fit = max(self.patch_size, round(tile_px / self.patch_size) * self.patch_size)
            raise InputError(
                f"{self.name}: patch size {self.patch_size} does not divide the {tile_px} px tiles of {set_path}; "
                f"build the set with --tile-px a multiple of {self.patch_size} (e.g. {fit})"
            )
        if self.input_size is not None and self.input_size != tile_px:
            raise InputError(
                f"{self.name}: takes {self.input_size} px images and the tiles of {set_path} are {tile_px} px; build "
                f"the set with --tile-px {self.input_size}, or pass model.dynamic_img_size=true"
            )

    def embed(self, tiles: np.ndarray, device: Any) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings float32 ``[B, 2D]``, raw class tokens float32 ``[B, D]``) of uint8 tiles ``[B, H, W, 3]``.

        On CUDA the forward runs under bf16 autocast; the pooling and normalisation are done in float32.
        """
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - mean) / std
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            tokens = self.tokens(x)
        tokens = tokens.float()
        if tokens.ndim != 3 or tokens.shape[1] <= self.prefix_tokens:
            raise InputError(f"{self.name}: its forward gives shape {tuple(tokens.shape)}, not [batch, tokens, dim]")
        cls = tokens[:, 0]
        patch = tokens[:, self.prefix_tokens :].mean(dim=1)
        embedding = torch.cat([F.normalize(cls, dim=-1), F.normalize(patch, dim=-1)], dim=-1)
        return embedding.cpu().numpy(), cls.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """What the report records about the model."""
        return {
            "name": self.name,
            "kind": self.kind,
            "prefix_tokens": self.prefix_tokens,
            "patch_size": self.patch_size,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "normalisation_source": self.normalisation_source,
            "identity": self.identity,
            "notes": self.notes,
        }


def normalisation(mean: Any, std: Any, where: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Three positive-std channel statistics, or an InputError naming ``where`` they came from."""
    try:
        m, s = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: mean and std must be three numbers each, got {mean!r} and {std!r}") from exc
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise InputError(f"{where}: mean and std must be three numbers each (std > 0), got {mean!r} and {std!r}")
    return m, s  # type: ignore[return-value]
