"""The whole evaluation of one or more models on one set (``gapless evaluate``).

Each input is a features file (used as it is) or a MODEL (:mod:`gapless.eval.models.resolve`), featurised into
``OUT/features/<name>.h5`` unless that file already holds this model's features on this set: adding a model to a
report computes only its own. For each: RankMe at every mpp (today's variant and the paper's), the probes over the
protocol's splits, the gaps; then one JSON, tables, and the plots with all models overlaid.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gapless.config import to_dict
from gapless.errors import InputError
from gapless.eval.config import EvalConfig, protocol_settings
from gapless.eval.features import FeatureFile, featurise, is_features_file
from gapless.eval.folds import FoldSplit, fold_splits, nested_splits
from gapless.eval.probes import run_probes, summarise
from gapless.eval.rankme import PAPER_METHOD, rankme_paper_per_mpp, rankme_per_mpp
from gapless.eval.report import add_gaps, plot_gaps, plot_series, print_tables
from gapless.eval.sets.file import EvalSet
from gapless.pipeline.sampling.magnifications import mpp_key

TIMM_BUILT = ("timm:", "hf-hub:", "hf_hub:")  # the inputs model.KEY=VALUE words go to in a many-model evaluation
SAFE_NAME = re.compile(r"[^\w.-]+")  # what a run name may not carry into a file name


def test_mpps(cfg: EvalConfig, evalset: EvalSet) -> list[float]:
    mpps = cfg.test_mpps or evalset.mpps
    held = {mpp_key(m) for m in evalset.mpps}
    missing = [mpp_key(m) for m in [*mpps, *cfg.train_mpps] if mpp_key(m) not in held]
    if missing:
        raise InputError(f"{evalset.path}: the set has no tiles at mpp {', '.join(sorted(set(missing)))}")
    return sorted(mpps)


def protocol_splits(cfg: EvalConfig, evalset: EvalSet) -> list[FoldSplit]:
    """The train/validation/test splits the protocol in force asks for; a set too small for them is refused."""
    if protocol_settings(cfg)["split"] == "folds":
        return fold_splits(evalset.folds)
    try:
        return nested_splits(evalset.labels, evalset.patients, cfg.nested_folds, cfg.split_seed, evalset.classes)
    except ValueError as exc:
        raise InputError(
            f"{evalset.path}: too few patients for the paper's nested split ({exc}); build the set from more "
            "patients, or evaluate with nested_folds=N (fewer folds) or protocol=gapless"
        ) from exc


def evaluate_features(feats: FeatureFile, evalset: EvalSet, cfg: EvalConfig, name: str, progress=None) -> dict:
    """RankMe, probes and gaps of one features file; a JSON-ready dict."""
    mpps = test_mpps(cfg, evalset)
    splits = protocol_splits(cfg, evalset)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a too-small N is recorded in the result and shown with the table
        rank = rankme_per_mpp(
            {mpp_key(m): feats.features[mpp_key(m)] for m in mpps},
            n_samples=cfg.rankme_samples,
            eps=cfg.rankme_eps,
            method=cfg.rankme_method,
            seed=cfg.seed,
        )
    if feats.cls:
        rank_paper = rankme_paper_per_mpp({mpp_key(m): feats.cls[mpp_key(m)] for m in mpps})
    else:
        rank_paper = {"values": {}, "method": PAPER_METHOD, "warning": "the features file holds no raw class tokens"}
    task = progress.add_task(f"probes {name}", total=len(splits)) if progress else None
    raw = run_probes(
        feats.features,
        evalset.labels,
        splits,
        cfg,
        mpps,
        progress_callback=(lambda: progress.advance(task)) if progress else None,
    )
    probes = {probe: {"summary": summarise(result), **result} for probe, result in raw.items()}
    run = {
        "name": name,
        "features": str(feats.path),
        "source": feats.source,
        "step": feats.step,
        "dim": feats.dim,
        "model": feats.model,
        "rankme": rank,
        "rankme_paper": rank_paper,
        "probes": probes,
        "split_sizes": [[len(s.train), len(s.val), len(s.test)] for s in splits],
        "seconds": round(time.perf_counter() - started, 2),
    }
    return add_gaps(run)


def default_name(spec: str, weights: str | None = None) -> str:
    """A run's display name: the weights file's stem for timm:ARCH, the repository for hf-hub, else the stem."""
    if spec.startswith("timm:"):
        return Path(weights).stem if weights else spec[len("timm:") :]
    if spec.startswith(("hf-hub:", "hf_hub:")):
        return spec.rstrip("/").rsplit("/", 1)[-1]
    return Path(spec).stem


def run_names(inputs: list[str], names: list[str] | None, weights: dict[int, str] | None = None) -> list[str]:
    if names and len(names) != len(inputs):
        raise InputError(f"--name: {len(names)} names for {len(inputs)} inputs (give one per input, or none)")
    chosen = list(names) if names else [default_name(p, (weights or {}).get(i)) for i, p in enumerate(inputs)]
    seen: dict[str, int] = {}
    for i, n in enumerate(chosen):  # two runs called "teacher" become "teacher" and "teacher-2"
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            chosen[i] = f"{n}-{seen[n]}"
    return chosen


def weights_by_input(inputs: list[str], weights: list[str] | None) -> dict[int, str]:
    """``--weights`` files, one per ``timm:`` input in order, keyed by the input's position."""
    timm_inputs = [i for i, spec in enumerate(inputs) if spec.startswith("timm:")]
    weights = list(weights or [])
    if len(weights) != len(timm_inputs) and weights:
        raise InputError(f"--weights: {len(weights)} files for {len(timm_inputs)} timm: models (give one per model)")
    return dict(zip(timm_inputs, weights))


def evaluate(
    inputs: list[str],
    set_path: str | Path,
    out_dir: str | Path,
    cfg: EvalConfig,
    names: list[str] | None = None,
    console=None,
    progress=None,
    weights: list[str] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    mean_std: tuple | None = None,
) -> dict:
    """Evaluate every input; writes ``report.json``, the plots and (for models) cached features; returns the report."""
    from gapless.io import write_json

    if model_kwargs and not any(path.startswith(TIMM_BUILT) for path in inputs):
        raise InputError("model.KEY=VALUE or --model-args given but no timm:/hf-hub: model takes them")
    evalset = EvalSet.load(set_path)
    protocol_splits(cfg, evalset)  # refuse a set the protocol cannot split before any model is loaded
    out_dir = Path(out_dir)
    by_input = weights_by_input(inputs, weights)
    runs = []
    for i, (path, name) in enumerate(zip(inputs, run_names(inputs, names, by_input))):
        if not is_features_file(path):
            features_path = out_dir / "features" / f"{SAFE_NAME.sub('_', name)}.h5"
            kwargs = model_kwargs if path.startswith(TIMM_BUILT) else None  # the others describe themselves
            path = featurise(path, evalset, features_path, by_input.get(i), kwargs, mean_std, reuse=True,
                             batch_size=cfg.batch_size, device=cfg.device, progress=progress)  # fmt: skip
        runs.append(evaluate_features(FeatureFile.load(path, evalset), evalset, cfg, name, progress))
    report = {
        "set": str(evalset.path),
        "regions": len(evalset),
        "patients": int(len(np.unique(evalset.patients))),
        # The nested split stratifies each patient by its first region's label; these patients have others too.
        "patients_with_several_labels": sum(
            len(np.unique(evalset.labels[evalset.patients == p])) > 1 for p in np.unique(evalset.patients)
        ),
        "classes": evalset.classes,
        "resampling": evalset.resampling,
        "folds": len(runs[0]["split_sizes"]) if runs else 0,
        "protocol": protocol_settings(cfg),
        "config": to_dict(cfg),
        "rankme_method": runs[0]["rankme"]["method"] if runs else "",
        "rankme_paper_method": PAPER_METHOD,
        "gap_definition": "mean of the two neighbouring mpps minus the value at the intermediate mpp",
        "runs": runs,
    }
    write_json(report, out_dir / "report.json")
    plots = plot_series(runs, out_dir)
    plots.append(plot_gaps(runs, out_dir))
    report["plots"] = [str(p) for p in plots]
    write_json(report, out_dir / "report.json")
    if console is not None:
        print_tables(runs, console)
    return report
