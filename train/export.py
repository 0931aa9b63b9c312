"""``gapless export --format timm``: a checkpoint's teacher backbone in the released-model layout timm loads.

``OUT/config.json`` (timm's ``architecture``, ``model_args`` and ``pretrained_cfg``, with the training's
normalisation) beside ``OUT/model.safetensors`` (the weights under timm's names, shapes unchanged):
``timm.create_model(cfg["architecture"], **cfg["model_args"])`` then ``load_state_dict`` load it with no missing or
unexpected keys, and so does ``timm.create_model("local-dir:OUT", pretrained=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from gapless.errors import InputError
from gapless.io import atomic_output, output_folder, temporary_path, write_json
from gapless.train.checkpoint import load_file, teacher_backbone_state
from gapless.train.vit import ARCH_SIZES

TIMM_EXPORT_FORMAT = "gapless-timm-export"
EXPORT_FILES = ("config.json", "model.safetensors")
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


def is_timm_export(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but a gapless timm export (or nothing at all): the one folder an export
    fills again. A released model's folder of the same layout is not one (no gapless marker)."""
    allowed = set(EXPORT_FILES) | {temporary_path(Path(name)).name for name in EXPORT_FILES}
    names = {p.name for p in folder.iterdir()}
    if not names <= allowed:
        return False
    try:
        if "model.safetensors" in names:
            from safetensors import safe_open

            with safe_open(str(folder / "model.safetensors"), "pt") as f:
                if (f.metadata() or {}).get("format") != TIMM_EXPORT_FORMAT:
                    return False
        if "config.json" in names:
            return "gapless" in json.loads((folder / "config.json").read_text())
    except Exception:  # unreadable or not a safetensors/JSON file: not an export either way
        return False
    return True


def timm_output(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """``out_dir`` as the folder of a timm export (created if missing): refused with an :class:`InputError` when it
    is the checkpoint's own folder or holds other files than an export."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        source = Path(checkpoint).parent
        if source.is_dir() and os.path.samefile(out_dir, source):
            raise InputError(f"{out_dir}: is the checkpoint's folder; write the timm export to a folder of its own")
        if not is_timm_export(out_dir):
            raise InputError(f"{out_dir}: holds other files than a timm export; give a new or empty folder "
                             "(or an export to replace)")  # fmt: skip
    return output_folder(out_dir)


def export_timm(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the teacher backbone as ``out_dir/config.json`` + ``out_dir/model.safetensors`` (timm's layout) into a
    new folder or one holding an earlier export (:func:`timm_output`, checked before the checkpoint is read)."""
    from safetensors.torch import save_file

    out_dir = timm_output(checkpoint, out_dir)
    ckpt = load_file(checkpoint)
    config = timm_config(ckpt["config"])
    meta = {"format": TIMM_EXPORT_FORMAT, "iteration": str(ckpt["iteration"]), "source": str(checkpoint)}
    with atomic_output(out_dir / "model.safetensors") as tmp:
        save_file(timm_state(teacher_backbone_state(ckpt)), str(tmp), metadata=meta)
    write_json({**config, "gapless": {"iteration": int(ckpt["iteration"])}}, out_dir / "config.json")
    return out_dir
