"""Checkpoints: atomic writes, the last K kept, exact resume, refusal of foreign configs, backbone export.

A checkpoint is a plain dict of tensors and Python scalars (so it loads with ``weights_only=True``): student,
teacher, optimiser, grad scaler, the loss centring buffers, the iteration (which is also the data position and, since
every random draw is seeded from (seed, rank, iteration), the RNG state), the resolved config and its fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gapless.errors import InputError
from gapless.io import atomic_output
from gapless.train.config import recipe_fingerprint, recipe_items
from gapless.train.vit import VisionTransformer, build_vit

CHECKPOINT_FORMAT = "gapless-dinov2-checkpoint"
BACKBONE_FORMAT = "gapless-backbone"
FORMAT_VERSION = 1


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{iteration:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / "checkpoints").glob("ckpt_*.pt"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def atomic_save(obj: Any, path: Path) -> Path:
    """torch.save to a temporary name in the same directory, then rename: readers never see half a file."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    path = atomic_save(state, checkpoint_path(run_dir, state["iteration"]))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def training_state(
    config: dict[str, Any],
    student: nn.Module,
    teacher: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    iteration: int,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        "iteration": iteration,
        "config": config,
        "fingerprint": recipe_fingerprint(config),
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "objective": objective.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a gapless checkpoint or exported backbone; anything else is a InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or holding objects weights_only refuses
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a gapless checkpoint ({reason})") from exc
    if not isinstance(obj, dict) or obj.get("format") not in (CHECKPOINT_FORMAT, BACKBONE_FORMAT):
        raise InputError(f"{path}: not a gapless checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    return obj


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from a checkpoint whose recipe (model, optimiser, losses, schedules, data) differs."""
    if ckpt.get("fingerprint") == recipe_fingerprint(config):
        return
    old, new = recipe_items(ckpt["config"]), recipe_items(config)
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    raise InputError(
        f"{path}: this checkpoint was made with another config ({shown}); "
        "resume with the same config, or start a new run in another --out directory"
    )


def restore(
    ckpt: dict[str, Any],
    student: nn.Module,
    teacher: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> int:
    """Load every piece of training state; returns the iteration to continue from."""
    student.load_state_dict(ckpt["student"])
    teacher.load_state_dict(ckpt["teacher"])
    objective.load_state_dict(ckpt["objective"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    return int(ckpt["iteration"])


def teacher_backbone_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    if ckpt["format"] == BACKBONE_FORMAT:
        return ckpt["backbone"]
    prefix = "backbone."
    return {k[len(prefix) :]: v for k, v in ckpt["teacher"].items() if k.startswith(prefix)}


def save_backbone(
    state: dict[str, torch.Tensor], config: dict[str, Any], iteration: int, config_fingerprint: str, out: str | Path
) -> Path:
    """Write a backbone's weights with the config and iteration they belong to (the export format)."""
    exported = {
        "format": BACKBONE_FORMAT,
        "version": FORMAT_VERSION,
        "iteration": int(iteration),
        "config": config,
        "fingerprint": config_fingerprint,
        "backbone": state,
    }
    return atomic_save(exported, Path(out))


def export_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the teacher backbone (weights, config, iteration) of a checkpoint to ``out``."""
    ckpt = load_file(checkpoint)
    return save_backbone(teacher_backbone_state(ckpt), ckpt["config"], ckpt["iteration"], ckpt.get("fingerprint", ""),
                         out)  # fmt: skip


def load_teacher_backbone(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[VisionTransformer, dict[str, Any], int]:
    """(teacher backbone in eval mode, resolved config dict, iteration) from a checkpoint or an exported backbone."""
    model, config, iteration = backbone_from_checkpoint(load_file(path, map_location), path)
    return model.to(map_location).eval(), config, iteration


def backbone_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> tuple[VisionTransformer, dict[str, Any], int]:
    """(teacher backbone in eval mode, config, iteration) of a loaded checkpoint or backbone (``path`` names it)."""
    config = ckpt["config"]
    model = build_vit(config["model"], config["data"]["augment"]["global_size"], drop_path=0.0)
    try:
        model.load_state_dict(teacher_backbone_state(ckpt))
    except RuntimeError as exc:
        raise InputError(f"{path}: backbone weights do not match its config ({str(exc).splitlines()[0]})") from exc
    return model.eval(), config, int(ckpt["iteration"])


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

    from gapless.train.vit import ARCH_SIZES

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
    import json

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
