"""The whole evaluation of one or more runs on one set (``gapless evaluate``).

Each input is a features file (used as it is) or a checkpoint (featurised first, into ``OUT/features/``). For each:
RankMe at every mpp, the cross-validated probes, the gaps; then one JSON, one table per run, and the plots with all
runs overlaid.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from gapless.config import to_dict
from gapless.errors import InputError
from gapless.eval.config import EvalConfig
from gapless.eval.features import FeatureFile, featurise_checkpoint, is_features_file
from gapless.eval.probes import run_probes, summarise
from gapless.eval.rankme import rankme_per_mpp
from gapless.eval.report import add_gaps, plot_gaps, plot_series, print_tables
from gapless.eval.sets.file import EvalSet
from gapless.pipeline.sampling.magnifications import mpp_key


def test_mpps(cfg: EvalConfig, evalset: EvalSet) -> list[float]:
    mpps = cfg.test_mpps or evalset.mpps
    held = {mpp_key(m) for m in evalset.mpps}
    missing = [mpp_key(m) for m in [*mpps, *cfg.train_mpps] if mpp_key(m) not in held]
    if missing:
        raise InputError(f"{evalset.path}: the set has no tiles at mpp {', '.join(sorted(set(missing)))}")
    return sorted(mpps)


def evaluate_features(feats: FeatureFile, evalset: EvalSet, cfg: EvalConfig, name: str, progress=None) -> dict:
    """RankMe, probes and gaps of one features file; a JSON-ready dict."""
    mpps = test_mpps(cfg, evalset)
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
    task = progress.add_task(f"probes {name}", total=len(np.unique(evalset.folds))) if progress else None
    raw = run_probes(
        feats.features,
        evalset.labels,
        evalset.folds,
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
        "rankme": rank,
        "probes": probes,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return add_gaps(run)


def run_names(inputs: list[str], names: list[str] | None) -> list[str]:
    if names and len(names) != len(inputs):
        raise InputError(f"--name: {len(names)} names for {len(inputs)} inputs (give one per input, or none)")
    chosen = list(names) if names else [Path(p).stem for p in inputs]
    seen: dict[str, int] = {}
    for i, n in enumerate(chosen):  # two runs called "teacher" become "teacher" and "teacher-2"
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            chosen[i] = f"{n}-{seen[n]}"
    return chosen


def evaluate(
    inputs: list[str],
    set_path: str | Path,
    out_dir: str | Path,
    cfg: EvalConfig,
    names: list[str] | None = None,
    console=None,
    progress=None,
) -> dict:
    """Evaluate every input; writes ``report.json``, the plots and (for checkpoints) features; returns the report."""
    from gapless.io import write_json

    evalset = EvalSet.load(set_path)
    out_dir = Path(out_dir)
    runs = []
    for path, name in zip(inputs, run_names(inputs, names)):
        if not Path(path).exists():
            raise InputError(f"{path}: no such checkpoint or features file")
        if not is_features_file(path):
            features_path = out_dir / "features" / f"{name}.h5"
            featurise_checkpoint(
                path, evalset, features_path, batch_size=cfg.batch_size, device=cfg.device, progress=progress
            )
            path = features_path
        runs.append(evaluate_features(FeatureFile.load(path, evalset), evalset, cfg, name, progress))
    report = {
        "set": str(evalset.path),
        "regions": len(evalset),
        "classes": evalset.classes,
        "folds": int(len(np.unique(evalset.folds))),
        "config": to_dict(cfg),
        "rankme_method": runs[0]["rankme"]["method"] if runs else "",
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
