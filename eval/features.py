"""Embeddings of an evaluation set by any model (``gapless features``), cached per (model, set).

The embedding of a tile is ``L2(CLS) ⊕ L2(mean patch token)`` of the model's final normed tokens, every prefix
token (class and register) left out of the mean (:class:`~gapless.eval.models.backbone.Backbone`). Tiles are scaled
to [0, 1] and normalised with ``--mean/--std``, else the model's own statistics (a gapless checkpoint's training
config, the hub's config, a released folder's ``config.json``), else ImageNet's; the file records which. Batches run
on the GPU when there is one (bf16 autocast; features are stored as float32); on the CPU a small model runs on one
thread (:mod:`gapless.eval.threads`).

Layout of ``feats.h5``::

    attrs: format="gapless-features", version, set_id, set_path, source (the MODEL argument), step, config (JSON),
           model (JSON: kind, prefix tokens, patch size, normalisation and its source), model_key (JSON), dim, mpps,
           embedding (a description)
    features/<mpp>  float32 [N, dim]    row i = region i of the set
    cls/<mpp>       float32 [N, dim/2]  the raw (unnormalised) class token, for RankMe as the paper computes it
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gapless.config import fingerprint
from gapless.devices import torch_device
from gapless.errors import InputError
from gapless.eval.models.backbone import Backbone
from gapless.eval.sets.file import EvalSet
from gapless.eval.threads import SMALL_WORK, one_thread_if
from gapless.io import atomic_output
from gapless.pipeline.sampling.magnifications import mpp_key

FEATURES_FORMAT = "gapless-features"
FEATURES_VERSION = 2
EMBEDDING = "concat(L2norm(CLS), L2norm(mean of the patch tokens, prefix tokens excluded))"


def extract_features(
    backbone: Backbone,
    evalset: EvalSet,
    out: str | Path,
    batch_size: int = 64,
    device: str = "auto",
    progress=None,
    model_key: dict[str, Any] | None = None,
) -> Path:
    """Embed every tile of ``evalset`` at every mpp and write ``out`` (write-then-rename)."""
    backbone.check_tiles(evalset.tile_px, evalset.path)
    dev = torch_device(device, setting="--device")
    backbone.module = backbone.module.to(dev).eval()
    parameters = sum(p.numel() for p in backbone.module.parameters())
    with one_thread_if(dev.type == "cpu" and parameters < SMALL_WORK):
        return _extract(backbone, evalset, Path(out), batch_size, dev, progress, model_key)


def _extract(
    backbone: Backbone, evalset: EvalSet, out: Path, batch_size: int, dev: Any, progress: Any, model_key: dict | None
) -> Path:
    task = progress.add_task(f"features {Path(out).stem}", total=len(evalset) * len(evalset.mpps)) if progress else None
    dim = 0
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        for m in evalset.mpps:
            embeddings, classes = [], []
            for start in range(0, len(evalset), batch_size):
                embedding, cls = backbone.embed(evalset.read_tiles(m, start, start + batch_size), dev)
                embeddings.append(embedding)
                classes.append(cls)
                if progress:
                    progress.advance(task, len(embedding))
            feats = np.concatenate(embeddings).astype(np.float32)
            dim = feats.shape[1]
            f.create_dataset(f"features/{mpp_key(m)}", data=feats)
            f.create_dataset(f"cls/{mpp_key(m)}", data=np.concatenate(classes).astype(np.float32))
        f.attrs.update(
            format=FEATURES_FORMAT,
            version=FEATURES_VERSION,
            set_id=evalset.set_id,
            set_path=str(evalset.path),
            source=backbone.name,
            step=int(backbone.step),
            config=json.dumps(backbone.config, default=str),
            model=json.dumps(backbone.describe(), default=str),
            model_key=json.dumps(model_key or {}, default=str),
            dim=int(dim),
            mpps=np.asarray(evalset.mpps, dtype=np.float64),
            embedding=EMBEDDING,
        )
    return out


def featurise(
    spec: str,
    evalset: EvalSet,
    out: str | Path,
    weights: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    mean_std: tuple | None = None,
    reuse: bool = False,
    **kwargs: Any,
) -> Path:
    """Features of the model ``spec`` names (:func:`~gapless.eval.models.resolve.load_model`) on ``evalset``.

    With ``reuse``, an existing ``out`` computed by the same model (same files, arguments and normalisation) on the
    same set is kept as it is.
    """
    from gapless.eval.models.resolve import load_model, model_key

    key = {**model_key(spec, weights, model_kwargs, mean_std), "set_id": evalset.set_id, "version": FEATURES_VERSION}
    if reuse and cached_key(out) == fingerprint(key):
        return Path(out)
    backbone = load_model(spec, weights, model_kwargs, mean_std)
    return extract_features(backbone, evalset, out, model_key={**key, "fingerprint": fingerprint(key)}, **kwargs)


def featurise_checkpoint(checkpoint: str | Path, evalset: EvalSet, out: str | Path, **kwargs: Any) -> Path:
    """Features of a gapless checkpoint (or any other MODEL, see :func:`featurise`)."""
    return featurise(str(checkpoint), evalset, out, **kwargs)


def cached_key(path: str | Path) -> str | None:
    """The model fingerprint a features file was computed with, or None (no file, or not a current one)."""
    if not is_features_file(path):
        return None
    with h5py.File(path, "r") as f:
        if int(f.attrs.get("version", 1)) != FEATURES_VERSION:
            return None
        return json.loads(f.attrs.get("model_key", "{}")).get("fingerprint")


def stored_model(path: str | Path) -> dict:
    """The description of the model a features file was computed with (its ``model`` attribute), features unread."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs.get("model", "{}"))


def is_features_file(path: str | Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FEATURES_FORMAT
    except OSError:
        return False


@dataclass
class FeatureFile:
    """Features of one model on one set, validated against the set when loaded (``cls`` empty in older files)."""

    path: Path
    source: str
    step: int
    config: dict
    dim: int
    features: dict[str, np.ndarray]
    cls: dict[str, np.ndarray] = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, evalset: EvalSet) -> FeatureFile:
        path = Path(path)
        if not is_features_file(path):
            raise InputError(f"{path}: not a features file (make one with `gapless features`)")
        with h5py.File(path, "r") as f:
            if str(f.attrs["set_id"]) != evalset.set_id:
                raise InputError(f"{path}: features were computed on another set than {evalset.path}")
            features, classes = {}, {}
            for m in evalset.mpps:
                key = mpp_key(m)
                if f"features/{key}" not in f:
                    raise InputError(f"{path}: no features at mpp {key}, which {evalset.path} holds")
                features[key] = f[f"features/{key}"][:]
                if f"cls/{key}" in f:
                    classes[key] = f[f"cls/{key}"][:]
            attrs = dict(f.attrs)
        dim = int(attrs["dim"])
        for key, x in features.items():
            if x.ndim != 2 or x.shape != (len(evalset), dim):
                raise InputError(
                    f"{path}: features at mpp {key} have shape {x.shape}, expected ({len(evalset)}, {dim}) "
                    f"({len(evalset)} regions of {evalset.path}, dimension {dim})"
                )
        model = json.loads(attrs.get("model", "{}"))
        return cls(path, str(attrs["source"]), int(attrs["step"]), json.loads(attrs["config"]), dim, features,
                   classes if len(classes) == len(features) else {}, model)  # fmt: skip
