"""The gap at the intermediate magnifications: how far a curve dips between the standard mpps, and whether it does.

The *gap* of a series (balanced accuracy, RankMe, ...) at an intermediate mpp (0.375, 0.75, 1.5) is the mean of its
values at the two neighbouring mpps minus its value there: positive means a dip below the line through the
neighbours, the sawtooth that discrete-magnification training leaves. Computed per fold, the pairing removes how
hard each fold is; :func:`dip_test` turns the per-fold gaps into a mean, a standard error and a verdict: a series
*dips* when its mean gap is above ``min_gap`` and above two standard errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gapless.pipeline.sampling.magnifications import INTERMEDIATE_MPPS, mpp_key

MIN_GAP = 0.01  # one balanced-accuracy point: smaller dips are not called dips, whatever the folds say


def gaps(values: dict[str, Any], intermediate: tuple[float, ...] = INTERMEDIATE_MPPS) -> dict[str, Any]:
    """Drop at each intermediate mpp below the mean of its neighbours among the mpps present.

    ``values`` maps mpp keys to numbers, or to arrays (one value per fold, say): drops are computed elementwise.
    """
    mpps = sorted(values, key=float)
    out = {}
    for m in intermediate:
        key = mpp_key(m)
        if key not in values:
            continue
        i = mpps.index(key)
        if 0 < i < len(mpps) - 1:
            out[key] = (values[mpps[i - 1]] + values[mpps[i + 1]]) / 2 - values[key]
    return out


def mean_se(x: Any) -> tuple[float, float]:
    """Mean and standard error of the mean (infinite for a single value)."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.inf


def significant(mean: float, se: float, min_gap: float = MIN_GAP) -> bool:
    """Above ``min_gap`` and above two standard errors."""
    return bool(mean > min_gap and mean > 2 * se)


def dip_test(per_mpp_folds: dict[str, list[float]], min_gap: float = MIN_GAP) -> dict[str, Any]:
    """Gap of one series from per-fold values per mpp: per fold, mean, standard error, per mpp, and a verdict."""
    drops = gaps({m: np.asarray(v, dtype=np.float64) for m, v in per_mpp_folds.items()})
    if not drops:
        mpps = sorted(per_mpp_folds, key=float)
        names = ", ".join(mpp_key(m) for m in INTERMEDIATE_MPPS)
        raise ValueError(f"no intermediate mpp ({names}) between two others in {mpps}")
    per_fold = np.mean(list(drops.values()), axis=0)
    gap, se = mean_se(per_fold)
    return {
        "gap": gap,
        "se": se,
        "folds": per_fold.tolist(),
        "per_mpp": {m: float(d.mean()) for m, d in drops.items()},
        "dips": significant(gap, se, min_gap),
    }
