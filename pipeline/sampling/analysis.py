"""Accumulated training signal S(y) = ∫ p(x) K(x, y) dx of a distribution, and its summary figures."""

from __future__ import annotations

from typing import Any

import numpy as np

from gapless.pipeline.sampling.distributions import Distribution, GridDensity, Mixture, PointMasses
from gapless.pipeline.sampling.kernels import Kernel, kernel_matrix
from gapless.pipeline.sampling.magnifications import EVAL_MPPS, mpp_key

END_FRACTION = 0.05  # "mass at the ends": probability within the outer 5 % of the range on each side


def signal(dist: Distribution, targets: np.ndarray, kernel: Kernel) -> np.ndarray:
    """S(y) for every y in ``targets``, integrating against the distribution's measure."""
    lp = getattr(dist, "lp_weights", None)
    if lp is not None:  # MINMAX: the LP's own weights, so S is exactly what the LP optimised
        points, weights = dist.lp_grid, lp
    else:
        points, weights = dist.measure(refine=np.asarray(targets, dtype=np.float64))
    return kernel_matrix(kernel, points, np.asarray(targets)) @ weights


def density_on_grid(dist: Distribution, grid: np.ndarray) -> dict[str, Any]:
    """Continuous part as values on ``grid`` (integrating to its mass) and atoms as ``points``/``weights``."""
    out: dict[str, Any] = {"density": np.zeros_like(grid), "points": [], "weights": []}
    parts = dist.components if isinstance(dist, Mixture) else [dist]
    scales = dist.weights if isinstance(dist, Mixture) else [1.0]
    for part, scale in zip(parts, scales):
        if isinstance(part, PointMasses):
            out["points"] += part.points.tolist()
            out["weights"] += (part.weights * scale).tolist()
        elif isinstance(part, GridDensity):
            out["density"] = out["density"] + scale * part.pdf(grid)
    return out


def summarize(dist: Distribution, kernel: Kernel, low: float, high: float, n: int) -> dict[str, Any]:
    """Everything `gapless sampling` reports for one distribution."""
    grid = np.linspace(low, high, n)
    s = signal(dist, grid, kernel)
    edge = END_FRACTION * (high - low)
    cdf = dist.cdf
    mass_low = float(cdf(np.array([low + edge]))[0])
    mass_high = float(1.0 - cdf(np.array([high - edge - 1e-12]))[0])
    result: dict[str, Any] = {
        "grid": grid,
        "signal": s,
        "signal_min": float(s.min()),
        "signal_argmin": float(grid[np.argmin(s)]),
        "signal_mean": float(s.mean()),
        "signal_max": float(s.max()),
        "mass_low_end": mass_low,
        "mass_high_end": mass_high,
        "signal_at_eval": {mpp_key(m): float(np.interp(m, grid, s)) for m in EVAL_MPPS if low <= m <= high},
    }
    result.update(density_on_grid(dist, grid))
    if getattr(dist, "optimum", None) is not None:  # MINMAX: the LP's optimum and its end-point atoms
        result["lp_optimum"] = dist.optimum
        result["end_point_masses"] = [float(dist.lp_weights[0]), float(dist.lp_weights[-1])]
    if dist.name == "maxavg":  # where K̄ peaks and how mild the tilt is: p(low) / max p
        result["density_peak_mpp"] = float(dist.grid[np.argmax(dist.density)])
        result["density_low_over_max"] = float(dist.density[0] / dist.density.max())
    return result
