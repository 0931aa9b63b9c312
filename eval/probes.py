"""k-NN and linear probes per magnification, cross-validated over patient-disjoint folds.

Protocol: for each split (:mod:`gapless.eval.folds`), probes train on embeddings pooled from the training mpps
(default 0.25/0.5/1.0/2.0), choose their hyperparameter on the validation part's balanced accuracy (pooled over the
same mpps; ties go to the smaller k or C), are refitted on train + validation when ``refit`` is in force (the paper
keeps the model fitted on train alone), and are tested on the test part at every mpp.

- k-NN: cosine similarity, k in {1, 3, 5, 10, 20, 40, 80}. ``majority`` vote counts the k neighbours equally (ties
  go to the smallest class index, as scikit-learn's ``KNeighborsClassifier`` does); ``weighted`` weights each
  neighbour by ``exp(cos / T)`` (DINO's k-NN). All k are scored from one top-k search.
- Linear: scikit-learn ``LogisticRegression`` (L-BFGS, multinomial, class_weight balanced, max_iter 1000) over a
  C grid, each C an independent fit from zero (the reference protocol). ``linear_warm_start`` starts each C from the
  previous C's weights and the refit from the chosen C's: about 2-3x less CPU, but not the same results. sklearn
  stops L-BFGS when the gradient of its sample-weight-normalised objective is below ``tol``, and after a step up in
  C that gradient is already tiny at the old weights, so large-C fits stop at once (0 iterations) near the smaller
  C's optimum, so it can choose another C than cold fits do. Use it for quick looks, not for reported numbers.

Metrics: balanced accuracy, accuracy, macro-F1 and weighted F1; :func:`summarise` gives mean ± std over folds.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gapless.eval.config import EvalConfig, protocol_settings
from gapless.eval.folds import FoldSplit
from gapless.eval.threads import SMALL_WORK, one_thread_if
from gapless.pipeline.sampling.magnifications import mpp_key

METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "weighted_f1")


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, f1_labels: str = "all") -> dict[str, float]:
    """Balanced accuracy (mean recall over the classes present), accuracy, macro- and weighted F1.

    ``f1_labels`` "all" averages macro-F1 over every class (an absent, never-predicted class scores 0); "present"
    over the classes in the truth or the predictions (scikit-learn's default, the paper's). Weighted F1 weights each
    class by its count in the truth. The definitions are scikit-learn's (the tests compare them), computed from one
    confusion matrix: the probes score thousands of predictions, and scikit-learn's checks cost more than the sums.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    confusion = np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)
    tp, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    present = (support > 0) | (predicted > 0)
    denominator = support + predicted
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    in_truth = support > 0
    return {
        "balanced_accuracy": float(np.mean(tp[in_truth] / support[in_truth])),
        "accuracy": float(tp.sum() / len(y_true)),
        "macro_f1": float(f1.mean() if f1_labels == "all" else f1[present].mean()),
        "weighted_f1": float(np.sum(f1 * support) / support.sum()),
    }


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    ks: list[int],
    n_classes: int,
    vote: str = "majority",
    temperature: float = 0.07,
    chunk: int = 2048,
) -> dict[int, np.ndarray]:
    """Predictions for every k in ``ks`` from one cosine top-k search (k larger than the train set is clipped)."""
    train = torch.nn.functional.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(train_y, dtype=torch.int64)
    k_max = min(max(ks), len(train))
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, len(test_x), chunk):
        query = torch.nn.functional.normalize(torch.as_tensor(test_x[start : start + chunk], dtype=torch.float32))
        sims, idx = (query @ train.T).topk(k_max, dim=1)  # sorted, most similar first
        neighbour_labels = labels[idx]
        weights = torch.exp(sims / temperature) if vote == "weighted" else torch.ones_like(sims)
        one_hot = torch.nn.functional.one_hot(neighbour_labels, n_classes).to(weights.dtype)
        # Cumulative votes over the ranked neighbours give the votes of every k at once.
        votes = torch.cumsum(one_hot * weights.unsqueeze(-1), dim=1)
        for k in ks:
            preds[k].append(votes[:, min(k, k_max) - 1].argmax(dim=1))  # argmax: first (smallest) class on ties
    return {k: torch.cat(p).numpy() for k, p in preds.items()}


def _pool(features: dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray, mpps: list[float]):
    x = np.concatenate([features[mpp_key(m)][rows] for m in mpps])
    return x, np.tile(labels[rows], len(mpps))


def linear_model(c: float, max_iter: int, seed: int, warm_start: bool = False):
    from sklearn.linear_model import LogisticRegression

    # lbfgs on several classes is the multinomial model (the `multi_class` argument is gone from recent sklearn).
    return LogisticRegression(
        C=c, solver="lbfgs", class_weight="balanced", max_iter=max_iter, warm_start=warm_start, random_state=seed
    )


def fit_quietly(model, x: np.ndarray, y: np.ndarray) -> int:
    """Fit, counting (not printing) convergence warnings; returns 1 if it hit max_iter.

    A small problem is fitted on one thread (:mod:`gapless.eval.threads`); the result does not depend on it.
    """
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught, one_thread_if(x.size < SMALL_WORK):
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    return int(any(issubclass(w.category, ConvergenceWarning) for w in caught))


def linear_sweep(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    cs: list[float],
    n_classes: int,
    max_iter: int = 1000,
    seed: int = 0,
    warm_start: bool = False,
    on_fit: Callable[[float, Any, float, int, float], None] | None = None,
) -> tuple[Any, dict[float, float], int]:
    """Fit the logistic probe at every C (smallest first) and keep the best on validation balanced accuracy.

    Returns (the chosen fitted model, {C: validation balanced accuracy}, fits that hit ``max_iter``); ties go to the
    smaller (stronger) C. ``on_fit(C, model, seconds, unconverged, val_score)`` is called after each fit.
    """
    model = linear_model(1.0, max_iter, seed, warm_start)
    val_scores, unconverged, best = {}, 0, None
    for c in sorted(cs):  # small C first: each fit can warm-start from the previous optimum
        model.set_params(C=c)
        start = time.perf_counter()
        missed = fit_quietly(model, train_x, train_y)
        seconds = time.perf_counter() - start
        unconverged += missed
        val_scores[c] = scores(val_y, model.predict(val_x), n_classes)["balanced_accuracy"]
        if best is None or val_scores[c] > val_scores[best.C]:
            best = copy.deepcopy(model)
        if on_fit is not None:
            on_fit(c, model, seconds, missed, val_scores[c])
    return best, val_scores, unconverged


def run_probes(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    splits: list[FoldSplit],
    cfg: EvalConfig,
    test_mpps: list[float],
    progress_callback=None,
) -> dict:
    """Cross-validated probes over ``splits`` (:func:`~gapless.eval.folds.fold_splits` or
    :func:`~gapless.eval.folds.nested_splits`); returns ``{probe: {"folds": [...], "chosen": [...], ...}}`` with
    per-fold scores. Small problems run on one thread."""
    labels = np.asarray(labels)
    results: dict[str, dict] = {p: {"folds": [], "chosen": [], "val_balanced_accuracy": []} for p in cfg.probes}
    if "linear" in cfg.probes:
        results["linear"]["unconverged_fits"] = 0
    small = sum(features[mpp_key(m)].size for m in cfg.train_mpps) < SMALL_WORK
    with one_thread_if(small):
        for split in splits:
            probe_split(features, labels, split, cfg, test_mpps, results)
            if progress_callback is not None:
                progress_callback()
    return results


def probe_split(
    features: dict[str, np.ndarray], labels: np.ndarray, split: FoldSplit, cfg: EvalConfig, test_mpps: list[float],
    results: dict,
) -> None:  # fmt: skip
    """Both probes on one split: choose on validation, fit (refit when in force), score the test part per mpp."""
    n_classes = int(labels.max()) + 1
    settings = protocol_settings(cfg)
    refit, f1_labels = settings["refit"], settings["f1_labels"]
    train_x, train_y = _pool(features, labels, split.train, cfg.train_mpps)
    val_x, val_y = _pool(features, labels, split.val, cfg.train_mpps)
    fit_rows = np.concatenate([split.train, split.val]) if refit else split.train
    fit_x, fit_y = _pool(features, labels, fit_rows, cfg.train_mpps)
    if "knn" in cfg.probes:
        val_pred = knn_predict(train_x, train_y, val_x, cfg.knn_ks, n_classes, cfg.knn_vote, cfg.knn_temperature)
        val_scores = {k: scores(val_y, p, n_classes)["balanced_accuracy"] for k, p in val_pred.items()}
        best_k = max(cfg.knn_ks, key=lambda k: (val_scores[k], -k))  # ties: the smaller k
        per_mpp = {}
        for m in test_mpps:
            test_x = features[mpp_key(m)][split.test]
            pred = knn_predict(fit_x, fit_y, test_x, [best_k], n_classes, cfg.knn_vote, cfg.knn_temperature)
            per_mpp[mpp_key(m)] = scores(labels[split.test], pred[best_k], n_classes, f1_labels)
        _record(results["knn"], per_mpp, best_k, val_scores)
    if "linear" in cfg.probes:
        best, val_scores, unconverged = linear_sweep(
            train_x, train_y, val_x, val_y, cfg.linear_cs, n_classes, cfg.linear_max_iter, cfg.seed,
            cfg.linear_warm_start,
        )  # fmt: skip
        if refit:  # from the chosen model's weights when warm-starting (the same optimum, sooner)
            model = best if cfg.linear_warm_start else linear_model(best.C, cfg.linear_max_iter, cfg.seed)
            unconverged += fit_quietly(model, fit_x, fit_y)
        else:
            model = best
        per_mpp = {
            mpp_key(m): scores(labels[split.test], model.predict(features[mpp_key(m)][split.test]), n_classes,
                               f1_labels)
            for m in test_mpps
        }  # fmt: skip
        _record(results["linear"], per_mpp, best.C, val_scores)
        results["linear"]["unconverged_fits"] += unconverged


def _record(result: dict, per_mpp: dict, chosen, val_scores: dict) -> None:
    result["folds"].append(per_mpp)
    result["chosen"].append(chosen)
    result["val_balanced_accuracy"].append({str(k): v for k, v in val_scores.items()})


def summarise(probe_result: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {mpp: {"mean", "std", "folds"}}}`` over folds (std: population std over the k folds)."""
    folds = probe_result["folds"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for metric in METRICS:
        out[metric] = {}
        for m in folds[0]:
            values = np.array([f[m][metric] for f in folds])
            out[metric][m] = {"mean": float(values.mean()), "std": float(values.std()), "folds": values.tolist()}
    return out
