"""What a MODEL argument names, and the :class:`~gapless.eval.models.backbone.Backbone` it loads as.

- ``timm:ARCH`` with ``weights`` (a ``.safetensors``, ``.pth`` or ``.bin`` state dict, bare or nested);
- ``hf-hub:ORG/NAME``, through timm (needs the network unless the model is in the local Hugging Face cache);
- a folder holding ``config.json`` and ``NAME.safetensors`` (the released-model layout), or one such
  ``NAME.safetensors`` file;
- a gapless checkpoint or exported backbone (``gapless pretrain``, ``gapless export``): the teacher backbone, with the
  normalisation of its own training config;
- a facebookresearch/dinov2 ``teacher_checkpoint.pth``, mapped onto timm's ViT.

``kwargs`` are timm keyword arguments for the models timm builds; ``mean_std`` overrides every model's normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gapless.errors import InputError
from gapless.eval.models.backbone import IMAGENET, Backbone, normalisation
from gapless.eval.models.dinov2 import from_checkpoint, teacher_backbone
from gapless.eval.models.timm_models import file_identity, from_arch, from_folder, from_hub
from gapless.io import load_tensors

KINDS = (
    "a gapless checkpoint, timm:ARCH with --weights FILE, a folder with config.json and NAME.safetensors, "
    "a DINOv2 teacher_checkpoint.pth, or hf-hub:ORG/NAME"
)


def load_model(
    spec: str,
    weights: str | Path | None = None,
    kwargs: dict[str, Any] | None = None,
    mean_std: tuple[Any, Any] | None = None,
) -> Backbone:
    """The backbone ``spec`` names; every failure is an InputError naming it (or the file at fault)."""
    kwargs = dict(kwargs or {})
    if mean_std is not None:
        mean_std = normalisation(*mean_std, where="--mean/--std")
    if spec.startswith("timm:"):
        return from_arch(spec[len("timm:") :], weights or "", kwargs, mean_std)
    if weights:
        raise InputError(f"{spec}: --weights goes with timm:ARCH models only")
    if spec.startswith(("hf-hub:", "hf_hub:")):
        return from_hub("hf-hub:" + spec.split(":", 1)[1], kwargs, mean_std)
    path = Path(spec)
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        if not path.exists():
            raise InputError(f"{path}: no such file")
        return from_folder(path, kwargs, mean_std)
    if not path.is_file():
        raise InputError(f"{spec}: no such model file or folder (a model is {KINDS})")
    obj = load_tensors(path, "not a gapless checkpoint")
    from gapless.train.checkpoint import BACKBONE_FORMAT, CHECKPOINT_FORMAT

    if isinstance(obj, dict) and obj.get("format") in (CHECKPOINT_FORMAT, BACKBONE_FORMAT):
        if kwargs:
            raise InputError(
                f"{path}: model.KEY=VALUE or --model-args given but a gapless checkpoint describes itself and takes none "
                "(they go to timm:, hf-hub:, folder and DINOv2 models)"
            )
        return from_gapless(path, obj, mean_std)
    dinov2 = teacher_backbone(obj)
    if dinov2:
        return from_checkpoint(path, dinov2, kwargs, mean_std)
    raise InputError(
        f"{path}: not a gapless checkpoint nor a DINOv2 teacher checkpoint (a plain state dict loads with "
        "timm:ARCH --weights FILE)"
    )


def from_gapless(path: Path, ckpt: dict[str, Any], mean_std: tuple | None) -> Backbone:
    """A gapless teacher backbone; normalised as its training was (``data.augment.mean/std`` of its config)."""
    from gapless.train.checkpoint import backbone_from_checkpoint

    model, config, step = backbone_from_checkpoint(ckpt, path)
    augment = config.get("data", {}).get("augment", {})
    if mean_std is not None:
        stats, source = mean_std, "--mean/--std"
    elif "mean" in augment and "std" in augment:
        stats, source = (augment["mean"], augment["std"]), f"the training config of {path} (data.augment)"
    else:
        stats, source = IMAGENET, f"ImageNet statistics (the config of {path} names none)"
    mean, std = normalisation(*stats, where=str(path))
    return Backbone(
        model, str(path), "gapless", 1, int(model.patch_size), mean, std, source, None,
        identity={"gapless": file_identity(path)}, step=step, config=config,
    )  # fmt: skip


def model_key(spec: str, weights: str | Path | None, kwargs: dict[str, Any] | None, mean_std: Any) -> dict[str, Any]:
    """What determines a model's features, found without loading it: names, files' sizes and times, arguments."""
    files = [Path(spec)] if Path(spec).is_file() else sorted(Path(spec).iterdir()) if Path(spec).is_dir() else []
    files += [Path(weights)] if weights else []
    key = {
        "spec": spec,
        "files": [file_identity(p) for p in files if p.is_file()],
        "kwargs": repr(sorted((kwargs or {}).items())),
        "mean_std": repr(mean_std),
    }
    if spec.startswith("timm:") and mean_std is None:
        key["default_normalisation"] = "imagenet"  # not timm's config of ARCH (features cached before are stale)
    return key
