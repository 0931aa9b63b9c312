"""Embeddings of a evaluation set from a checkpoint's teacher backbone (``gapless features``).

The embedding of a tile is the CLS token and the mean patch token of the backbone's final (normed) tokens, each
L2-normalised, concatenated: 2·D values per tile (REFERENCE.md §1). Tiles are scaled to [0, 1] and normalised with
the ImageNet mean/std, as in training. Batches run on the GPU when there is one (bf16 autocast; features are stored
as float32).

Layout of ``feats.h5``::

    attrs: format="gapless-features", version, set_id, set_path, source (checkpoint path), step, config (JSON),
           dim, mpps, embedding (a description)
    features/<mpp>  float32 [N, dim]   row i = region i of the set
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gapless.devices import torch_device
from gapless.errors import InputError
from gapless.eval.sets.file import EvalSet
from gapless.pipeline.sampling.magnifications import mpp_key

FEATURES_FORMAT = "gapless-features"
FEATURES_VERSION = 1
EMBEDDING = "concat(L2norm(CLS), L2norm(mean patch token))"


def embed(model: Any, tiles: np.ndarray, device, mean=None, std=None) -> np.ndarray:
    """Embeddings (float32 [B, 2D]) of uint8 tiles [B, H, W, 3]."""
    import torch

    from gapless.pipeline.config import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(mean or IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std or IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - mean) / std
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        out = model.forward_features(x)
    cls = torch.nn.functional.normalize(out["x_norm_clstoken"].float(), dim=-1)
    patch = torch.nn.functional.normalize(out["x_norm_patchtokens"].float().mean(dim=1), dim=-1)
    return torch.cat([cls, patch], dim=-1).cpu().numpy()


def extract_features(
    model: Any,
    evalset: EvalSet,
    out: str | Path,
    meta: dict[str, Any],
    batch_size: int = 64,
    device: str = "auto",
    progress=None,
) -> Path:
    """Embed every tile of ``evalset`` at every mpp and write ``out`` (write-then-rename)."""
    dev = torch_device(device, setting="--device")
    model = model.to(dev).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    task = progress.add_task("features", total=len(evalset) * len(evalset.mpps)) if progress else None
    dim = None
    with h5py.File(tmp, "w") as f:
        for m in evalset.mpps:
            chunks = []
            for start in range(0, len(evalset), batch_size):
                chunks.append(embed(model, evalset.read_tiles(m, start, start + batch_size), dev))
                if progress:
                    progress.advance(task, len(chunks[-1]))
            feats = np.concatenate(chunks).astype(np.float32)
            dim = feats.shape[1]
            f.create_dataset(f"features/{mpp_key(m)}", data=feats)
        f.attrs.update(
            format=FEATURES_FORMAT,
            version=FEATURES_VERSION,
            set_id=evalset.set_id,
            set_path=str(evalset.path),
            source=str(meta.get("source", "")),
            step=int(meta.get("step", -1)),
            config=json.dumps(meta.get("config", {}), default=str),
            dim=int(dim),
            mpps=np.asarray(evalset.mpps, dtype=np.float64),
            embedding=EMBEDDING,
        )
    tmp.replace(out)
    return out


def featurise_checkpoint(checkpoint: str | Path, evalset: EvalSet, out: str | Path, **kwargs: Any) -> Path:
    """Load a gapless checkpoint's teacher backbone and extract features (errors name the checkpoint)."""
    try:
        from gapless.train.checkpoint import load_teacher_backbone
    except ImportError as exc:
        raise InputError(f"{checkpoint}: checkpoint loading is not available ({exc})") from exc
    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    model, config, step = load_teacher_backbone(path, map_location="cpu")
    return extract_features(model, evalset, out, {"source": path, "step": step, "config": config}, **kwargs)


def is_features_file(path: str | Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FEATURES_FORMAT
    except OSError:
        return False


@dataclass
class FeatureFile:
    """Features of one model on one set, validated against the set when loaded."""

    path: Path
    source: str
    step: int
    config: dict
    dim: int
    features: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: str | Path, evalset: EvalSet) -> FeatureFile:
        path = Path(path)
        if not is_features_file(path):
            raise InputError(f"{path}: not a features file (make one with `gapless features`)")
        with h5py.File(path, "r") as f:
            if str(f.attrs["set_id"]) != evalset.set_id:
                raise InputError(f"{path}: features were computed on another set than {evalset.path}")
            features = {}
            for m in evalset.mpps:
                key = mpp_key(m)
                if f"features/{key}" not in f:
                    raise InputError(f"{path}: no features at mpp {key}, which {evalset.path} holds")
                features[key] = f[f"features/{key}"][:]
            attrs = dict(f.attrs)
        dim = int(attrs["dim"])
        for key, x in features.items():
            if x.ndim != 2 or x.shape != (len(evalset), dim):
                raise InputError(
                    f"{path}: features at mpp {key} have shape {x.shape}, expected ({len(evalset)}, {dim}) "
                    f"({len(evalset)} regions of {evalset.path}, dimension {dim})"
                )
        return cls(path, str(attrs["source"]), int(attrs["step"]), json.loads(attrs["config"]), dim, features)
