"""Models built with timm: ``timm:ARCH`` with a weights file, a released-model folder, and ``hf-hub:ORG/NAME``.

Keyword arguments for ``timm.create_model`` come from a YAML/JSON file and ``model.KEY=VALUE`` words (the words win).
A value naming a layer (``mlp_layer=SwiGLUPacked``, ``act_layer=SiLU``) is looked up in ``timm.layers`` and then
``torch.nn``. The classifier is always left off (``num_classes=0``): only the tokens are used.

A released-model folder (the paper's layout, and what ``gapless export --format timm`` writes) holds ``config.json``
(``architecture``; optionally ``img_size``, timm's ``model_args`` and ``pretrained_cfg``, or ``mean``/``std``) beside
``NAME.safetensors``. Normalisation comes from ``--mean/--std``, else from ``config.json`` or the hub's config, else
ImageNet statistics, as the paper's evaluation used (for ``timm:ARCH --weights`` too: timm's pretrained config of the
architecture describes timm's weights, not the file given).
"""

from __future__ import annotations

import functools
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gapless.errors import InputError
from gapless.eval.models.backbone import IMAGENET, Backbone, normalisation
from gapless.eval.models.weights import load_strict, read_state_dict

LAYER_KEYS = ("mlp_layer", "act_layer", "norm_layer", "embed_layer", "block_fn", "embed_norm_layer")


def resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """kwargs with layer names (``SwiGLUPacked``, ``SiLU``) replaced by the classes from timm.layers or torch.nn."""
    import timm.layers
    import torch.nn

    out = dict(kwargs)
    for key in LAYER_KEYS:
        value = out.get(key)
        if isinstance(value, str):
            for namespace in (timm.layers, torch.nn):
                found = getattr(namespace, value, None)
                if isinstance(found, (type, functools.partial)):  # SwiGLUPacked is a partial of GluMlp
                    out[key] = found
                    break
    return out


def create(arch: str, kwargs: dict[str, Any], where: str, **extra: Any) -> Any:
    """``timm.create_model(arch, num_classes=0, **kwargs)``; an unknown name or bad argument is one line."""
    import timm

    if not arch.startswith("hf-hub:") and not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
        raise InputError(f"{where}: unknown timm architecture '{arch}'{hint}")
    try:
        return timm.create_model(arch, **{"num_classes": 0, **resolve_layers(kwargs), **extra})
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise InputError(f"{where}: timm cannot build '{arch}' with {kwargs} ({str(exc).splitlines()[0]})") from exc


def backbone_of(module: Any, name: str, kind: str, mean_std: tuple | None, source: str, **fields: Any) -> Backbone:
    """A :class:`Backbone` of a timm model: prefix tokens, patch size and input size read off the module."""
    if getattr(module, "cls_token", 0) is None:
        raise InputError(f"{name}: the model has no class token, which the embedding needs")
    prefix = getattr(module, "num_prefix_tokens", None)
    patch = getattr(getattr(module, "patch_embed", None), "patch_size", None)
    if prefix is None or patch is None:
        raise InputError(f"{name}: not a ViT-style model (no num_prefix_tokens or patch_embed.patch_size)")
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    embed = module.patch_embed
    fixed = not getattr(module, "dynamic_img_size", False) and getattr(embed, "strict_img_size", True)
    size = getattr(embed, "img_size", None)
    input_size = (size[0] if isinstance(size, (tuple, list)) else size) if fixed else None
    if mean_std is None:
        cfg = getattr(module, "pretrained_cfg", {}) or {}
        mean_std = (cfg.get("mean", IMAGENET[0]), cfg.get("std", IMAGENET[1]))
        tag = ".".join(filter(None, [cfg.get("architecture"), cfg.get("tag")]))
        source = source or f"timm's pretrained config ({tag or 'default'})"
    mean, std = normalisation(*mean_std, where=name)
    return Backbone(module.eval(), name, kind, int(prefix), int(patch), mean, std, source, input_size, **fields)


def from_arch(arch: str, weights: str | Path, kwargs: dict[str, Any], mean_std: tuple | None) -> Backbone:
    """``timm:ARCH`` with a weights file."""
    name = f"timm:{arch}"
    if not weights:
        raise InputError(f"{name}: give its weights with --weights FILE (.safetensors, .pth or .bin)")
    model = create(arch, kwargs, name)
    state, nested = read_state_dict(weights)
    aside = load_strict(model, state, weights, name)
    # timm's pretrained config of ARCH describes timm's own weights, not these: ImageNet unless --mean/--std say.
    source = "--mean/--std" if mean_std else f"ImageNet statistics (--weights of {name}; no --mean/--std given)"
    mean_std = mean_std or IMAGENET
    identity = {"arch": arch, "weights": file_identity(weights), "kwargs": repr(sorted(kwargs.items()))}
    notes = [f"set aside from the weights: {', '.join(aside[:6])}{' ...' if len(aside) > 6 else ''}"] if aside else []
    notes += [f"state dict nested under '{nested}'"] if nested else []
    return backbone_of(model, name, "timm", mean_std, source, identity=identity, notes=notes)


def from_folder(path: Path, kwargs: dict[str, Any], mean_std: tuple | None) -> Backbone:
    """A released-model folder (or one ``NAME.safetensors`` in it): config.json + safetensors."""
    folder, weights = (path.parent, path) if path.is_file() else (path, None)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputError(f"{path}: no config.json beside the weights (a released model needs 'architecture' in it)")
    try:
        config = json.loads(config_path.read_text())
        arch = config["architecture"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{config_path}: not a model config (needs JSON with an 'architecture')") from exc
    if weights is None:
        found = sorted(folder.glob("*.safetensors"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise InputError(f"{folder}: needs exactly one .safetensors beside config.json ({names}); name the file")
        weights = found[0]
    args = {**config.get("model_args", {}), **({"img_size": config["img_size"]} if "img_size" in config else {})}
    model = create(arch, {**args, **kwargs}, str(path))
    load_strict(model, read_state_dict(weights)[0], weights, f"{arch} of {config_path}")
    cfg = config.get("pretrained_cfg", {})
    stats = mean_std or ((config["mean"], config["std"]) if "mean" in config else None)
    stats = stats or ((cfg["mean"], cfg["std"]) if "mean" in cfg else None)
    source = (
        "--mean/--std" if mean_std else str(config_path) if stats else f"ImageNet statistics ({config_path} names none)"
    )
    identity = {"arch": arch, "config": file_identity(config_path), "weights": file_identity(weights)}
    return backbone_of(model, str(path), "released", stats or IMAGENET, source, identity=identity)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers on its port (offline mode says no)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def from_hub(spec: str, kwargs: dict[str, Any], mean_std: tuple | None) -> Backbone:
    """``hf-hub:ORG/NAME`` through timm (a cached copy works offline)."""
    from huggingface_hub import try_to_load_from_cache

    repo = spec.split(":", 1)[1]
    cached = isinstance(try_to_load_from_cache(repo.split("@")[0], "config.json"), str)
    if not cached and not hub_reachable():
        raise InputError(f"{spec}: needs the network to download the model, and this machine cannot reach the "
                         "Hugging Face Hub (nor holds the model in its cache)")  # fmt: skip
    try:
        model = create(spec, kwargs, spec, pretrained=True)
    except InputError:
        raise
    except Exception as exc:  # gated, missing, or the connection dropped: huggingface_hub's many error types
        gated = "gated" in type(exc).__name__.lower() or "401" in str(exc)
        why = "is gated: accept its terms on huggingface.co and log in" if gated else str(exc).splitlines()[0][:200]
        raise InputError(f"{spec}: cannot load ({why})") from exc
    source = "--mean/--std" if mean_std else f"the hub's config of {repo}"
    return backbone_of(model, spec, "hf-hub", mean_std, source, identity={"hub": spec, "kwargs": repr(kwargs)})


def file_identity(path: str | Path) -> str:
    """A file's resolved path, size and modification time: changes whenever the file does."""
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
