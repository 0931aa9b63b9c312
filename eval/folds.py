"""Patient-disjoint, stratified k-fold assignment, and the train/validation/test split of each fold.

Every region gets a fold number; all regions of one patient share a fold (so no patient is seen in training and in
testing), and each fold's label distribution is as close to the whole set's as whole patients allow (scikit-learn's
``StratifiedGroupKFold``). For test fold ``f``, the validation fold is ``(f + 1) % k`` and the remaining ``k - 2``
folds train: validation is patient-disjoint from both, and every fold is tested exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def assign_folds(labels: np.ndarray, patients: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..n_folds-1) of every sample; raises ValueError when there are too few patients."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    patients = np.asarray(patients)
    n_patients = len(np.unique(patients))
    if n_folds < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {n_folds}")
    if n_patients < n_folds:
        raise ValueError(f"{n_patients} patients cannot fill {n_folds} patient-disjoint folds")
    folds = np.full(len(labels), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups=patients)):
        folds[test_idx] = fold
    if (folds < 0).any():  # cannot happen with sklearn's splitter; guard against a silent hole
        raise RuntimeError("some samples were assigned to no fold")
    for split in fold_splits(folds):
        # A probe cannot be fitted on one class: say so here, at build time, not mid-evaluation.
        if len(np.unique(labels[split.train])) < 2:
            counts = {str(c): len(np.unique(patients[labels == c])) for c in np.unique(labels)}
            raise ValueError(
                f"the training split of fold {split.fold} holds a single class; patients per class {counts} "
                f"are too few for {n_folds} patient-disjoint folds (use fewer folds or more patients)"
            )
    return folds


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold's training, validation and test regions."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def fold_splits(folds: np.ndarray) -> list[FoldSplit]:
    """One split per fold: test = fold f, validation = fold (f + 1) % k, train = the rest."""
    folds = np.asarray(folds)
    ids = np.unique(folds)
    if len(ids) < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), the set has {len(ids)}")
    splits = []
    for i, f in enumerate(ids):
        v = ids[(i + 1) % len(ids)]
        splits.append(
            FoldSplit(
                fold=int(f),
                train=np.flatnonzero((folds != f) & (folds != v)),
                val=np.flatnonzero(folds == v),
                test=np.flatnonzero(folds == f),
            )
        )
    return splits
