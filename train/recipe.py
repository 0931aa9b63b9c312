"""How a run's recipe differs from DINOv2's default ViT-S/16 recipe (facebookresearch/dinov2), said in a table.

DINOv2 trains 100 epochs of 1,250 iterations at a global batch of 1,024 (base lr 4e-3 there, scaled by the square
root of the batch ratio elsewhere); its warmups and freezes are fractions of that length: lr warmup 10 epochs, teacher
temperature warmup 30, last layer frozen 1. A run is compared with that recipe *scaled to its length*: a schedule
counts as DINOv2's when it covers the same fraction of the run. :func:`explain` lists the scale (length, global
batch, peak lr), every value that differs, and what this implementation does differently whatever the config says.
``gapless pretrain`` prints the list when it starts; ``gapless pretrain --explain`` prints it without training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gapless.config import (
    ConfigError,
    flatten,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    resolve_config_path,
    to_dict,
)
from gapless.pipeline.config import AugmentConfig
from gapless.train.config import PretrainConfig
from gapless.train.schedules import scaled_lr

DINOV2_ITERATIONS = 125_000  # 100 epochs x 1,250
DINOV2_EPOCHS = 100.0
DINOV2_BATCH = 1024

# The values of DINOv2's recipe, under this project's config keys.
DINOV2_VALUES: dict[str, Any] = {
    "model.arch": "vit_small",
    "model.patch_size": 16,
    "model.drop_path": 0.3,
    "model.layerscale": 1e-5,
    "model.head_prototypes": 65536,
    "model.head_hidden": 2048,
    "model.head_bottleneck": 256,
    "optim.base_lr": 4e-3,
    "optim.lr_reference_batch": 1024,
    "optim.min_lr": 1e-6,
    "optim.weight_decay": 0.04,
    "optim.weight_decay_end": 0.4,
    "optim.betas": [0.9, 0.999],
    "optim.clip_grad": 3.0,
    "optim.layerwise_decay": 0.9,
    "optim.patch_embed_lr_mult": 0.2,
    "loss.dino_weight": 1.0,
    "loss.ibot_weight": 1.0,
    "loss.koleo_weight": 0.1,
    "loss.student_temp": 0.1,
    "loss.centering": "softmax",
    "loss.center_momentum": 0.9,
    "loss.sinkhorn_iterations": 3,
    "loss.mask_probability": 0.5,
    "loss.mask_ratio": [0.1, 0.5],
    "schedule.teacher_momentum": 0.992,
    "schedule.teacher_momentum_end": 1.0,
    "schedule.teacher_temp_warmup": 0.04,
    "schedule.teacher_temp": 0.07,
    # DINOv2's multi-crop: the schema's defaults are its values.
    **{f"data.augment.{k}": v for k, v in flatten(to_dict(AugmentConfig())).items()},
}
# Schedules DINOv2 gives in epochs of its 100: compared as fractions of the run.
DINOV2_FRACTIONS = {
    "optim.warmup_epochs": 10.0 / DINOV2_EPOCHS,
    "schedule.teacher_temp_warmup_epochs": 30.0 / DINOV2_EPOCHS,
    "optim.freeze_last_layer_epochs": 1.0 / DINOV2_EPOCHS,
}
# What this implementation does differently whatever the config says.
IMPLEMENTATION = [
    ("data", "tiles cut from slides at a sampled mpp (the method under test)", "images of a dataset"),
    ("colour jitter", "DALI's colour twist: brightness, contrast, saturation, hue as one map in a fixed order",
     "torchvision ColorJitter: the four in a random order per image"),
    ("crop resize", "antialiased bicubic (DALI; OpenCV cubic up, area down in the DataLoader twin)",
     "PIL bicubic (torchvision RandomResizedCrop)"),
    ("precision", "autocast (bf16 where the GPU has it) over fp32 weights, DDP", "FSDP with fp16 parameters"),
]  # fmt: skip


@dataclass
class Row:
    setting: str
    ours: str
    dinov2: str


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


def scale_rows(cfg: PretrainConfig, world_size: int) -> list[Row]:
    """The run's length, global batch and peak lr next to DINOv2's."""
    batch = cfg.data.batch_size * world_size
    o = cfg.optim
    return [
        Row("iterations", f"{cfg.total_iterations:,} ({cfg.epochs:g} epochs x {cfg.data.iterations_per_epoch:,})",
            f"{DINOV2_ITERATIONS:,} (100 x 1,250)"),
        Row("global batch", f"{batch:,} ({cfg.data.batch_size} x {world_size} process(es))", f"{DINOV2_BATCH:,}"),
        Row("peak lr", f"{scaled_lr(o.base_lr, batch, o.lr_reference_batch):.3g} (base_lr x sqrt(batch / "
            f"{o.lr_reference_batch}))", f"{scaled_lr(4e-3, batch, 1024):.3g} at this batch by DINOv2's rule"),
    ]  # fmt: skip


def value_rows(cfg: PretrainConfig) -> list[Row]:
    """Every setting whose value (or, for schedules, fraction of the run) differs from DINOv2's."""
    flat = flatten(to_dict(cfg))
    rows = [Row(k, _show(flat[k]), _show(v)) for k, v in DINOV2_VALUES.items() if not _same(flat[k], v)]
    for key, fraction in DINOV2_FRACTIONS.items():
        ours = flat[key] / cfg.epochs
        if not math.isclose(ours, fraction, rel_tol=1e-6, abs_tol=1e-12):
            rows.append(Row(key, f"{_show(flat[key])} of {cfg.epochs:g} epochs ({100 * ours:.3g} % of the run)",
                            f"{100 * fraction:g} % of the run"))  # fmt: skip
    return rows


def explain(cfg: PretrainConfig, world_size: int) -> dict[str, list[Row]]:
    """The comparison in three parts: scale, differing values, implementation differences."""
    return {
        "scale": scale_rows(cfg, world_size),
        "values": value_rows(cfg),
        "implementation": [Row(*r) for r in IMPLEMENTATION],
    }


EXPERIMENT_SECTIONS = {"slides", "evalset", "eval"}  # besides `pretrain`: a demo or reproduce config


def load_pretrain_config(path: str, overrides: list[str]) -> PretrainConfig:
    """A pretraining config from a pretraining YAML, or from the ``pretrain`` section of a demo or reproduce YAML
    (overrides then name keys of that section, with or without the ``pretrain.`` prefix)."""
    resolved = resolve_config_path(path)
    data = load_yaml(resolved)
    if "pretrain" not in data or not set(data) - {"pretrain"} <= EXPERIMENT_SECTIONS:
        return load_config(PretrainConfig, resolved, overrides)
    flat = {**flatten(to_dict(PretrainConfig())), **flatten(data["pretrain"] or {})}
    for text in overrides:
        key, value = parse_override(text)
        flat[".".join(key[1:] if key[0] == "pretrain" else key)] = value
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return from_dict(PretrainConfig, nested, prefix="pretrain.")
    except ConfigError as exc:
        raise ConfigError(f"{resolved}: {exc}") from exc


def print_explanation(cfg: PretrainConfig, world_size: int, console: Any) -> None:
    """The comparison as tables on ``console``."""
    from rich.table import Table

    titles = {
        "scale": "Scale (schedules follow the run's length)",
        "values": "Settings that differ from DINOv2's recipe",
        "implementation": "What this implementation does differently",
    }
    for name, rows in explain(cfg, world_size).items():
        if name == "values" and not rows:
            console.print("Every setting is DINOv2's (schedules in proportion to the run's length).")
            continue
        t = Table(title=titles[name], title_justify="left")
        for column in ("", "this run", "DINOv2"):
            t.add_column(column, overflow="fold")
        for r in rows:
            t.add_row(r.setting, r.ours, r.dinov2)
        console.print(t)
