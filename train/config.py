"""Configuration schema of a pretraining run (defaults: the DINOv2 ViT-S recipe).

Loaded with ``gapless.config.load_config(PretrainConfig, yaml, overrides)``; every key is checked, so a typo is an
error that names the key. ``recipe_fingerprint`` hashes the fields that decide what a checkpoint means, so a run refuses to
resume from a checkpoint made by another recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gapless.config import fingerprint, flatten, to_dict
from gapless.pipeline.config import DataConfig
from gapless.train.health import HealthConfig

ARCHS = ("vit_small", "vit_base", "vit_large", "vit_tiny_test")
CENTERINGS = ("softmax", "sinkhorn")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class ModelConfig:
    arch: str = "vit_small"  # vit_small (ViT-S: 384/12/6) | vit_base | vit_large | vit_tiny_test (32/2/2)
    patch_size: int = 16
    drop_path: float = 0.3  # uniform over blocks, student only
    layerscale: float = 1e-5  # LayerScale init value (DINOv2's); 0 leaves LayerScale out
    attention: str = "auto"  # auto (xFormers on CUDA when installed, else SDPA) | xformers | sdpa
    head_prototypes: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch: unknown architecture '{self.arch}' (choose from {', '.join(ARCHS)})")
        if self.attention not in ("auto", "xformers", "sdpa"):
            raise ValueError(f"attention: '{self.attention}' is not one of auto, xformers, sdpa")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path: must be in [0, 1), got {self.drop_path}")
        if min(self.patch_size, self.head_prototypes, self.head_hidden, self.head_bottleneck) < 1:
            raise ValueError("patch_size and the head sizes must be >= 1")


@dataclass
class OptimConfig:
    base_lr: float = 4e-3  # at a global batch of `lr_reference_batch`, scaled by sqrt(batch / reference)
    lr_reference_batch: int = 1024
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0  # 0 disables clipping
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_epochs: float = 1.0
    fused: bool = False  # PyTorch's fused AdamW kernel instead of the multi-tensor one (not measured on a GPU)

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or self.lr_reference_batch < 1:
            raise ValueError("base_lr must be > 0 and lr_reference_batch >= 1")
        if not 0.0 < self.layerwise_decay <= 1.0:
            raise ValueError(f"layerwise_decay: must be in (0, 1], got {self.layerwise_decay}")


@dataclass
class LossConfig:
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    student_temp: float = 0.1
    centering: str = "softmax"  # softmax (centre with momentum) | sinkhorn (Sinkhorn-Knopp)
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3
    mask_probability: float = 0.5  # share of global crops that get an iBOT mask
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # masked share of patches, spread uniformly over masked crops

    def __post_init__(self) -> None:
        if self.centering not in CENTERINGS:
            raise ValueError(f"centering: '{self.centering}' is not one of {', '.join(CENTERINGS)}")
        if not 0.0 <= self.mask_probability <= 1.0:
            raise ValueError(f"mask_probability: must be in [0, 1], got {self.mask_probability}")
        low, high = self.mask_ratio
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"mask_ratio: need 0 <= low <= high < 1, got {self.mask_ratio}")


@dataclass
class ScheduleConfig:
    teacher_momentum: float = 0.992  # EMA momentum, cosine to `teacher_momentum_end`
    teacher_momentum_end: float = 1.0
    teacher_temp: float = 0.07
    teacher_temp_warmup: float = 0.04  # linear warmup from this value ...
    teacher_temp_warmup_epochs: float = 30.0  # ... over this many epochs


@dataclass
class CheckpointConfig:
    every: int = 1000  # iterations between checkpoints (the last iteration always writes one)
    keep: int = 3  # the newest `keep` checkpoints are kept

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ValueError("checkpoint.every and checkpoint.keep must be >= 1")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    out: str = ""  # run directory (the CLI's --out wins)
    seed: int = 0
    epochs: float = 100.0  # an epoch is data.iterations_per_epoch iterations
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile each transformer block (student and teacher); not measured on a GPU

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: '{self.device}' is not one of auto, cpu, cuda")
        if self.epochs <= 0 or self.log_every < 1:
            raise ValueError("epochs must be > 0 and log_every >= 1")
        a, patch = self.data.augment, self.model.patch_size
        for name, size in (("global_size", a.global_size), ("local_size", a.local_size if a.local_crops else patch)):
            if size % patch:
                raise ValueError(f"data.augment.{name}: {size} px is not a multiple of model.patch_size ({patch})")

    @property
    def total_iterations(self) -> int:
        return max(1, round(self.epochs * self.data.iterations_per_epoch))


# Keys that do not change what is trained (where data is read from, logging, checkpoint cadence): a run may resume
# with these changed. Everything else must match the checkpoint.
LOGISTICS_KEYS = (
    "out",
    "log_every",
    "device",
    "checkpoint.",
    "health.",
    "compile",
    "optim.fused",
    "data.index",
    "data.loader",
    "data.device",
    "data.read_device",
    "data.gpu_decode",
    "data.workers",
    "data.prefetch",
    "data.handle_cache",
    "data.max_read_retries",
)


def recipe_items(cfg: PretrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The flattened config without the logistics keys: what a checkpoint's meaning depends on."""
    flat = flatten(cfg if isinstance(cfg, dict) else to_dict(cfg))
    return {k: v for k, v in flat.items() if not any(k == p or k.startswith(p) for p in LOGISTICS_KEYS)}


def recipe_fingerprint(cfg: PretrainConfig | dict[str, Any]) -> str:
    """The digest of :func:`recipe_items`: equal for configs that train the same thing."""
    return fingerprint(recipe_items(cfg))
