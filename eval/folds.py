"""Patient-disjoint train/validation/test splits: the set's stored folds, or the paper's nested split.

Stored folds (the ``gapless`` protocol): every region gets a fold number when the set is built; all regions of one
patient share a fold, and each fold's label distribution is as close to the whole set's as whole patients allow
(scikit-learn's ``StratifiedGroupKFold``). For test fold ``f``, the validation fold is ``(f + 1) % k`` and the
remaining ``k - 2`` folds train.

Nested split (the ``paper`` protocol, as the paper's public evaluation code does it): over the *sorted* patient ids,
each with one label (its first region's, as the paper's code takes its first slide's), an outer ``StratifiedKFold(k,
shuffle=True, random_state=seed)`` gives each fold's test patients; an inner one with the same arguments over the
remaining patients gives, from its first split, train and validation. Each inner split needs ``k`` patients of every
class among the outer-training ones; :func:`nested_splits` refuses a set that has fewer, saying which class falls short.

Either way validation and test are patient-disjoint from training, and every patient is tested exactly once.
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


def patient_labels(labels: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted patient ids, each patient's label: that of its first region)."""
    ids, first = np.unique(np.asarray(patients), return_index=True)
    return ids, np.asarray(labels)[first]


def nested_splits(
    labels: np.ndarray, patients: np.ndarray, n_folds: int = 5, seed: int = 42, names: list[str] | None = None
) -> list[FoldSplit]:
    """The paper's nested split; raises ValueError (naming the class and fold) when a class has too few patients.

    ``names`` are the class names of the label codes, for that message.
    """
    from sklearn.model_selection import StratifiedKFold

    patients = np.asarray(patients)
    ids, plabels = patient_labels(labels, patients)
    short = shortfall(plabels, n_folds, seed, names)
    if short:
        raise ValueError(short)
    splits = []
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    inner = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (rest, test) in enumerate(outer.split(ids, plabels)):
        train, val = next(inner.split(ids[rest], plabels[rest]))
        rows = [np.flatnonzero(np.isin(patients, ids[part])) for part in (rest[train], rest[val], test)]
        splits.append(FoldSplit(fold, *rows))
    return splits


def shortfall(plabels: np.ndarray, n_folds: int, seed: int, names: list[str] | None = None) -> str:
    """Why the nested split cannot be made from these patient labels ("" when it can)."""
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(plabels, return_counts=True)
    if len(classes) < 2:
        return f"the set has patients of one class only ({len(plabels)} patients)"
    name = (lambda c: names[c]) if names else (lambda c: c)
    few = [(name(c), int(n)) for c, n in zip(classes, counts) if n <= n_folds]
    if few:  # the outer fold that tests one of them leaves fewer than n_folds for the inner split
        listed = ", ".join(f"{c} has {n}" for c, n in few)
        return f"patients per class: {listed}; the nested split with {n_folds} folds needs more than {n_folds}"
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (rest, _) in enumerate(outer.split(plabels, plabels)):
        for c, total in zip(classes, counts):
            left = int((plabels[rest] == c).sum())
            if left < n_folds:
                return (
                    f"class {name(c)} has {total} patients, and outer fold {fold} leaves {left} of them for training "
                    f"and validation; the nested split needs at least {n_folds} there"
                )
    return ""
