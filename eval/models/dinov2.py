"""facebookresearch/dinov2 training checkpoints (``teacher_checkpoint.pth``) mapped onto timm's ViT.

The file holds ``{"teacher": {"backbone.<name>": tensor, "dino_head.…": …}}`` (or the same names flat, as
``teacher.backbone.<name>``). The backbone's names are timm's already, with three differences handled here: blocks may
be chunked (``blocks.<chunk>.<i>.…``, the chunks padded with identities so ``i`` is the block's own index), register
tokens are ``register_tokens`` (timm: ``reg_token``), and the SwiGLU MLP's packed weights are ``w12``/``w3`` (timm's
``SwiGLUPacked``: ``fc1``/``fc2``). ``mask_token`` and the heads are training-only and left out.

The architecture is read off the weights: width from the class token, depth from the blocks, patch size from the patch
embedding, the training crop from the position embedding, LayerScale from ``ls1.gamma``, the MLP's width and kind
from its first weight. DINOv2's ViTs have 64-dimensional heads, so ``num_heads = width / 64`` unless
``model.num_heads`` says otherwise. With registers, DINOv2 adds the position embedding before the registers are
inserted; timm's ``no_embed_class`` layout does the same once the class token's position is folded into it.
DINOv2 normalises with ImageNet statistics.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from gapless.errors import InputError
from gapless.eval.models.backbone import IMAGENET, Backbone
from gapless.eval.models.timm_models import backbone_of, file_identity, resolve_layers
from gapless.eval.models.weights import load_strict

PREFIX = "backbone."
CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.*)$")


def teacher_backbone(obj: Any) -> dict[str, Any] | None:
    """The teacher backbone's state (DINOv2 names) in a loaded checkpoint, or None if it is not one."""
    if not isinstance(obj, dict):
        return None
    teacher = obj.get("teacher")
    if isinstance(teacher, dict) and any(str(k).startswith(PREFIX) for k in teacher):
        return {k[len(PREFIX) :]: v for k, v in teacher.items() if k.startswith(PREFIX)}
    flat = "teacher." + PREFIX
    found = {k[len(flat) :]: v for k, v in obj.items() if isinstance(k, str) and k.startswith(flat)}
    return found or None


def to_timm_names(state: dict[str, Any]) -> dict[str, Any]:
    """DINOv2 backbone names -> timm's (chunks flattened, registers and SwiGLU renamed, training-only dropped)."""
    out = {}
    for key, value in state.items():
        chunked = CHUNKED.match(key)
        if chunked:
            key = f"blocks.{chunked.group(1)}.{chunked.group(2)}"
        key = key.replace("register_tokens", "reg_token").replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2.")
        if key != "mask_token":
            out[key] = value
    return out


def architecture(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """timm VisionTransformer arguments read off a DINOv2 backbone's (timm-named) weights."""
    try:
        width = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        fc1 = state["blocks.0.mlp.fc1.weight"].shape[0]
        grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: the teacher backbone lacks {exc} (not a DINOv2 ViT)") from exc
    swiglu = "blocks.0.mlp.fc2.weight" in state and state["blocks.0.mlp.fc2.weight"].shape[1] * 2 == fc1
    args: dict[str, Any] = {
        "img_size": grid * patch,
        "patch_size": patch,
        "embed_dim": width,
        "depth": depth,
        "num_heads": max(1, width // 64),
        "mlp_ratio": (fc1 + 0.5) / width,  # timm takes int(width * ratio): the half keeps float error from flooring
        "init_values": 1e-5 if "blocks.0.ls1.gamma" in state else None,
        "num_classes": 0,
    }
    if swiglu:
        args.update(mlp_layer="SwiGLUPacked", act_layer="SiLU")
    if "reg_token" in state:
        args.update(reg_tokens=state["reg_token"].shape[1], no_embed_class=True)
    return args


def fold_class_position(state: dict[str, Any]) -> dict[str, Any]:
    """With registers: the class token's position goes into the class token; the rest is the patch grid's."""
    state = dict(state)
    state["cls_token"] = state["cls_token"] + state["pos_embed"][:, :1]
    state["pos_embed"] = state["pos_embed"][:, 1:]
    return state


def from_checkpoint(path: Path, raw: dict[str, Any], kwargs: dict[str, Any], mean_std: tuple | None) -> Backbone:
    """A DINOv2 teacher backbone as a timm VisionTransformer."""
    from timm.models.vision_transformer import VisionTransformer

    state = to_timm_names(raw)
    args = {**architecture(state, path), **kwargs}
    if args.get("reg_tokens"):
        state = fold_class_position(state)
    try:
        model = VisionTransformer(**resolve_layers(args))
    except (TypeError, ValueError, AssertionError) as exc:
        raise InputError(f"{path}: timm cannot build the DINOv2 ViT {args} ({str(exc).splitlines()[0]})") from exc
    regs = args.get("reg_tokens") or 0
    target = (
        f"DINOv2 ViT (width {args['embed_dim']}, depth {args['depth']}, patch {args['patch_size']}, {regs} registers)"
    )
    load_strict(model, state, path, target)
    source = "--mean/--std" if mean_std else "DINOv2's ImageNet statistics"
    identity = {"dinov2": file_identity(path), "kwargs": repr(sorted(kwargs.items()))}
    return backbone_of(model, str(path), "dinov2", mean_std or IMAGENET, source, identity=identity, notes=[target])
