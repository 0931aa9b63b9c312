"""Timings of the evaluation metrics on the CPU: ``python -m gapless.benchmarks.eval_metrics``.

- RankMe on a 25,600 x 768 matrix (the paper's N; ViT-S's 2 x 384 embedding), both variants.
- The k-NN sweep (k in {1, ..., 80}) and the linear-probe sweep (logistic regression over the C grid) on 20,000
  embeddings of dimension 768: 5 patient-disjoint folds (train 3 folds, validation 1, test 1), one mpp.

Embeddings are synthetic but shaped like real ones: class clusters on the unit sphere with heavy overlap, so the
probes are neither trivial nor hopeless and L-BFGS runs a realistic number of iterations. The linear sweep is timed
fold by fold, with independent cold fits per C (the protocol; ``--warm`` for the warm-started sweep);
``--linear-folds`` runs fewer folds than the protocol and extrapolates (said so in the output).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from gapless.eval.config import LINEAR_CS, EvalConfig
from gapless.eval.folds import assign_folds, fold_splits
from gapless.eval.probes import fit_quietly, linear_model, linear_sweep, run_probes, scores
from gapless.eval.rankme import rankme


def embeddings(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    # A decaying spectrum (a few strong directions, a long tail) shared by signal and noise, as in real embeddings.
    spectrum = np.exp(-np.arange(dim) / 100.0) + 0.02
    centres = rng.normal(size=(classes, dim)) * spectrum
    x = centres[labels] * 0.2 + rng.normal(size=(n, dim)) * spectrum
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    patients = rng.integers(0, n // 20, n).astype(str)  # about 20 regions per patient
    return x.astype(np.float32), labels, patients


def timed(fn, *args, **kwargs):
    """(result, wall seconds); the process CPU time is accumulated in ``CPU`` (a shared machine inflates wall time)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU.append(time.process_time() - cpu)
    return out, time.perf_counter() - start


CPU: list[float] = []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rankme-n", type=int, default=25_600)
    p.add_argument("--n", type=int, default=20_000, help="embeddings for the probe sweeps")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--linear-folds", type=int, default=5, help="folds of the linear sweep actually run (<= 5)")
    p.add_argument("--warm", action="store_true", help="warm-started C sweep (faster, other results: eval.probes)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, load average: {load:.1f}")

    x, _, _ = embeddings(args.rankme_n, args.dim, args.classes, args.seed)
    for method in ("svd", "cov"):
        value, seconds = timed(rankme, x, method=method)
        print(
            f"RankMe ({method}) on {args.rankme_n} x {args.dim}: {value:.1f} in {seconds:.2f} s (cpu {CPU[-1]:.2f} s)"
        )

    x, labels, patients = embeddings(args.n, args.dim, args.classes, args.seed + 1)
    folds = assign_folds(labels, patients, 5, args.seed)
    feats = {"1": x}
    cfg = EvalConfig(train_mpps=[1.0], probes=["knn"])
    result, seconds = timed(run_probes, feats, labels, folds, cfg, [1.0])
    chosen = result["knn"]["chosen"]
    bal = np.mean([f["1"]["balanced_accuracy"] for f in result["knn"]["folds"]])
    print(
        f"k-NN sweep, 7 k values x 5 folds on {args.n} x {args.dim}: {seconds:.2f} s (cpu {CPU[-1]:.1f} s; "
        f"k chosen {chosen}, test bal acc {bal:.3f})"
    )
    linear_cpu_start = len(CPU)

    total = 0.0
    for split in fold_splits(folds)[: args.linear_folds]:
        tx, ty, vx, vy = x[split.train], labels[split.train], x[split.val], labels[split.val]

        def report(c: float, model, seconds: float, unconverged: int, val: float, fold: int = split.fold) -> None:
            note = " (hit max_iter)" if unconverged else ""
            print(f"  fold {fold} C={c:g}: {seconds:.2f} s, {int(model.n_iter_[0])} iterations{note}, "
                  f"val bal acc {val:.3f}")  # fmt: skip

        cpu0, start = time.process_time(), time.perf_counter()
        best, _, _ = linear_sweep(tx, ty, vx, vy, list(LINEAR_CS), args.classes, 1000, args.seed, args.warm, report)
        CPU.append(time.process_time() - cpu0)
        fold_seconds = time.perf_counter() - start
        refit = best if args.warm else linear_model(best.C, 1000, args.seed)
        _, seconds = timed(fit_quietly, refit, np.concatenate([tx, vx]), np.concatenate([ty, vy]))
        fold_seconds += seconds
        test_bal = scores(labels[split.test], refit.predict(x[split.test]), args.classes)["balanced_accuracy"]
        print(
            f"  fold {split.fold}: C={best.C:g} chosen, refit {seconds:.2f} s, test bal acc {test_bal:.3f}; "
            f"fold total {fold_seconds:.1f} s"
        )
        total += fold_seconds
    done = min(args.linear_folds, 5)
    estimate = "" if done == 5 else f" (measured {done} fold(s); 5 folds extrapolated: {total * 5 / done:.0f} s)"
    start = "warm-started" if args.warm else "cold, independent fits"
    cpu = sum(CPU[linear_cpu_start:])
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (wall times are inflated when it exceeds the cores)")
    print(
        f"linear sweep, {len(LINEAR_CS)} C values ({start}) + refit per fold: {total:.1f} s (cpu {cpu:.1f} s){estimate}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
