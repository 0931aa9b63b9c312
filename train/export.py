"""``gapless export --format timm``: a checkpoint's teacher backbone in the released-model layout timm loads.

``OUT/config.json`` (timm's ``architecture``, ``model_args`` and ``pretrained_cfg``, with the training's
normalisation) beside ``OUT/model.safetensors`` (the weights under timm's names, shapes unchanged):
``timm.create_model(cfg["architecture"], **cfg["model_args"])`` then ``load_state_dict`` load it with no missing or
unexpected keys, and so does ``timm.create_model("local-dir:OUT", pretrained=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gapless.errors import InputError
from gapless.io import atomic_output
from gapless.train.checkpoint import load_file, teacher_backbone_state
from gapless.train.vit import ARCH_SIZES

TIMM_WIDTHS = {"vit_tiny_test": "vit_tiny", "vit_small": "vit_small", "vit_base": "vit_base", "vit_large": "vit_large"}


def timm_name(key: str) -> str:
    """timm's VisionTransformer name of a gapless ViT weight: only the patch embedding and the MLP are named apart."""
    if key.startswith("patch_embed."):
        return "patch_embed.proj." + key[len("patch_embed.") :]
    return key.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.2.", ".mlp.fc2.")


def timm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A gapless backbone's weights under timm's names, shapes unchanged (the training-only mask token left out)."""
    return {timm_name(k): v.contiguous() for k, v in state.items() if k != "mask_token"}


def timm_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json of the released-model layout: timm's ``architecture``/``model_args``/``pretrained_cfg``."""
    import timm

    model, augment = config["model"], config["data"]["augment"]
    width, depth, heads = ARCH_SIZES[model["arch"]]
    size, patch = int(augment["global_size"]), int(model["patch_size"])
    arch = f"{TIMM_WIDTHS[model['arch']]}_patch{patch}_224"
    arch = arch if timm.is_model(arch) else f"{TIMM_WIDTHS[model['arch']]}_patch16_224"
    args = {"img_size": size, "patch_size": patch, "embed_dim": width, "depth": depth, "num_heads": heads,
            "mlp_ratio": 4.0, "init_values": model.get("layerscale") or None, "dynamic_img_size": True}  # fmt: skip
    mean, std = augment.get("mean", (0.485, 0.456, 0.406)), augment.get("std", (0.229, 0.224, 0.225))
    pretrained = {"input_size": [3, size, size], "mean": list(mean), "std": list(std), "num_classes": 0,
                  "interpolation": "bicubic", "crop_pct": 1.0, "fixed_input_size": False}  # fmt: skip
    return {"architecture": arch, "img_size": size, "num_classes": 0, "num_features": width, "global_pool": "token",
            "model_args": args, "pretrained_cfg": pretrained}  # fmt: skip


def export_timm(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the teacher backbone as ``out_dir/config.json`` + ``out_dir/model.safetensors`` (timm's layout)."""
    from safetensors.torch import save_file

    ckpt = load_file(checkpoint)
    out_dir = Path(out_dir)
    if out_dir.is_file():
        raise InputError(f"{out_dir}: is a file; --format timm writes a folder")
    config = timm_config(ckpt["config"])
    meta = {"format": "gapless-timm-export", "iteration": str(ckpt["iteration"]), "source": str(checkpoint)}
    with atomic_output(out_dir / "model.safetensors") as tmp:
        save_file(timm_state(teacher_backbone_state(ckpt)), str(tmp), metadata=meta)
    with atomic_output(out_dir / "config.json") as tmp:
        tmp.write_text(json.dumps({**config, "gapless": {"iteration": int(ckpt["iteration"])}}, indent=2))
    return out_dir
