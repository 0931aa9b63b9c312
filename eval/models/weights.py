"""Weights files: reading a state dict from ``.safetensors``, ``.pth``, ``.pt`` or ``.bin``, and loading it strictly.

A file may hold a bare state dict (names to tensors) or one nested under a key (``state_dict``, ``model``,
``teacher``, ...): the one nested dict of tensors is taken, and where there are several the first of
:data:`PREFERRED_KEYS` present. Names may carry a prefix the model lacks (``module.``, ``backbone.``, ...): the prefix
that makes the most names match the model is stripped, and the names outside it (a projection head beside the
backbone) are set aside and reported. Training-only parameters a backbone does not have (``mask_token``, a classifier
``head``) are set aside too. Everything else must match exactly: a missing or unexpected name, or a shape that
differs, is an :class:`InputError` that names the file and the first offending keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gapless.errors import InputError
from gapless.io import load_tensors

SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
PREFERRED_KEYS = ("teacher", "model", "state_dict", "model_state_dict", "module", "backbone")
PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.", "teacher.backbone.", "student.backbone.")
TRAINING_ONLY = ("mask_token", "head.", "fc_norm.")  # set aside when the model has no such parameter
SHOWN = 3  # offending keys named in an error


def read_state_dict(path: str | Path) -> tuple[dict[str, Any], str]:
    """(the state dict in ``path``, the key it was nested under or "")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: weights must be one of {', '.join(SUFFIXES)}")
    return unnest(load_tensors(path, "cannot read weights"), path)


def is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unnest(obj: Any, path: Path) -> tuple[dict[str, Any], str]:
    """The state dict in a loaded object: itself, or the one (or preferred) nested dict of tensors."""
    import torch

    if is_tensor_dict(obj):
        return obj, ""
    if not isinstance(obj, dict):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    nested = [k for k, v in obj.items() if isinstance(v, dict) and any(isinstance(t, torch.Tensor) for t in v.values())]
    if not nested:
        raise InputError(f"{path}: holds no state dict (keys: {', '.join(map(str, list(obj)[:6]))})")
    key = next((k for k in PREFERRED_KEYS if k in nested), nested[0] if len(nested) == 1 else None)
    if key is None:
        raise InputError(f"{path}: holds several state dicts ({', '.join(nested)}) and none of {PREFERRED_KEYS}")
    return {k: v for k, v in obj[key].items() if isinstance(v, torch.Tensor)}, str(key)


def match_names(state: dict[str, Any], model_keys: set[str]) -> tuple[dict[str, Any], list[str]]:
    """(the state renamed to the model's names, the names set aside); the prefix is the one that matches most."""
    best, best_hits = "", sum(k in model_keys for k in state)
    for prefix in PREFIXES:
        hits = sum(k[len(prefix) :] in model_keys for k in state if k.startswith(prefix))
        if hits > best_hits:
            best, best_hits = prefix, hits
    renamed, aside = {}, []
    for key, value in state.items():
        if not key.startswith(best):
            aside.append(key)
            continue
        name = key[len(best) :]
        if name not in model_keys and name.startswith(TRAINING_ONLY):
            aside.append(key)
        else:
            renamed[name] = value
    return renamed, aside


def load_strict(model: Any, state: dict[str, Any], source: str | Path, target: str) -> list[str]:
    """Load ``state`` into ``model`` with no key left over or missing; returns the names set aside.

    ``source`` names the file, ``target`` the model, in the error.
    """
    expected = model.state_dict()
    renamed, aside = match_names(state, set(expected))
    missing = [k for k in expected if k not in renamed]
    unexpected = [k for k in renamed if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing ({', '.join(missing[:SHOWN])}{', ...' if len(missing) > SHOWN else ''})"
            )
        if unexpected:
            more = ", ..." if len(unexpected) > SHOWN else ""
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:SHOWN])}{more})")
        raise InputError(f"{source}: weights do not match {target}: {'; '.join(parts)}")
    wrong = [k for k in expected if tuple(renamed[k].shape) != tuple(expected[k].shape)]
    if wrong:
        shapes = ", ".join(f"{k} {tuple(renamed[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:SHOWN])
        raise InputError(
            f"{source}: {len(wrong)} weights have another shape than in {target} (file vs model: {shapes})"
        )
    model.load_state_dict(renamed, strict=True)
    return aside
