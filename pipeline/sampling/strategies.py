"""The sampling strategies of the method, built from a :class:`SamplingConfig`.

- ``fixed``: one mpp (the single-magnification baseline).
- ``du``: discrete uniform over the standard mpps (the usual practice).
- ``cu``: continuous uniform on [low, high].
- ``maxavg``: p(x) ∝ exp(K̄(x) / λ), the maximiser of the average signal plus λ·entropy. K̄(x) is the *mean* of
  K(x, y) over targets y uniform on [low, high] (so K̄ ∈ [0, 1] and λ is scale-free). Taking K̄ as the
  unnormalised integral over [a, b] instead, as a public implementation does, equals this with λ / (b - a).
- ``minmax``: maximise min_y S(y), solved on the grid as a linear program with SciPy's HiGHS. The optimum puts
  point masses on both range ends; the interior weights become a density whose trapezoid measure on the same grid
  equals the LP weights exactly, so sampling and analysis agree.
- ``file``: a user density, two columns (mpp, weight) in a CSV or an (N, 2) ``.npy`` file, linear between points.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from gapless.errors import ConfigError
from gapless.pipeline.sampling.config import SamplingConfig
from gapless.pipeline.sampling.distributions import Distribution, GridDensity, Mixture, PointMasses
from gapless.pipeline.sampling.kernels import Kernel, kernel_matrix, make_kernel


def analysis_grid(cfg: SamplingConfig) -> np.ndarray:
    return np.linspace(cfg.low, cfg.high, cfg.grid)


def mean_kernel(kernel: Kernel, grid: np.ndarray) -> np.ndarray:
    """K̄(x) = mean over targets y in ``grid`` of K(x, y), for every x in ``grid``."""
    return kernel_matrix(kernel, grid, grid).mean(axis=0)


def maxavg(cfg: SamplingConfig) -> GridDensity:
    grid = analysis_grid(cfg)
    kbar = mean_kernel(make_kernel(cfg.kernel, cfg.kernel_sigma), grid)
    # Subtract the max before exponentiating: the shape is unchanged and small λ cannot overflow.
    return GridDensity(grid, np.exp((kbar - kbar.max()) / cfg.lam), name="maxavg")


@lru_cache(maxsize=16)
def _solve_minmax(low: float, high: float, n: int, kernel: str, sigma: float) -> tuple[np.ndarray, float]:
    from scipy.optimize import linprog

    grid = np.linspace(low, high, n)
    k = kernel_matrix(make_kernel(kernel, sigma), grid, grid)
    # Variables (p_1..p_n, t): maximise t  s.t.  t - (K p)_j <= 0,  Σ p = 1,  p >= 0.
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    a_ub = np.hstack([-k, np.ones((n, 1))])
    a_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    bounds = [(0.0, None)] * n + [(None, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"the MINMAX linear program failed: {res.message}")
    weights = np.clip(res.x[:n], 0.0, None)
    return weights / weights.sum(), float(-res.fun)


class MinMax(Mixture):
    """CU-MINMAX: end-point atoms plus an interior density, carrying the LP solution and its optimum t*."""

    def __init__(self, cfg: SamplingConfig) -> None:
        weights, self.optimum = _solve_minmax(cfg.low, cfg.high, cfg.grid, cfg.kernel, cfg.kernel_sigma)
        grid = analysis_grid(cfg)
        self.lp_grid, self.lp_weights = grid, weights
        h = grid[1] - grid[0]
        interior = np.concatenate([[0.0], weights[1:-1] / h, [0.0]])
        ends = PointMasses(grid[[0, -1]], weights[[0, -1]])
        inner_mass = weights[1:-1].sum()
        super().__init__([ends, GridDensity(grid, interior)], np.array([1.0 - inner_mass, inner_mass]), name="minmax")


def load_density_file(path: str | Path) -> GridDensity:
    """A user density: rows of (mpp, weight), CSV (header optional) or an (N, 2) ``.npy``. A file that is missing
    or holds no such density raises :class:`~gapless.errors.ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: density file not found")
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().strip().splitlines()
            rows = [r for r in text if r.strip() and not r.lstrip().startswith("#")]
            if rows and not rows[0].replace(",", " ").split()[0].replace(".", "", 1).isdigit():
                rows = rows[1:]  # a header line
            data = np.array([[float(v) for v in r.replace(",", " ").split()] for r in rows])
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read a density from it ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != 2 or data.shape[0] < 2:
        raise ConfigError(f"{path}: expected at least two rows of two columns (mpp, weight), got shape {data.shape}")
    mpp, weight = data[:, 0], data[:, 1]
    if not np.all(np.isfinite(data)):
        raise ConfigError(f"{path}: contains non-finite values")
    if np.any(mpp <= 0) or np.any(np.diff(mpp) <= 0):
        raise ConfigError(f"{path}: mpp values must be positive and strictly increasing")
    if np.any(weight < 0) or weight.sum() <= 0:
        raise ConfigError(f"{path}: weights must be non-negative and not all zero")
    return GridDensity(mpp, weight, name="file")


def build_distribution(cfg: SamplingConfig) -> Distribution:
    """The distribution of target mpp that ``cfg`` describes."""
    if cfg.strategy == "fixed":
        return PointMasses(np.array([cfg.fixed_mpp]), name="fixed")
    if cfg.strategy == "du":
        return PointMasses(np.array(cfg.du_mpps), name="du")
    if cfg.strategy == "cu":
        return GridDensity(np.array([cfg.low, cfg.high]), np.ones(2), name="cu")
    if cfg.strategy == "maxavg":
        return maxavg(cfg)
    if cfg.strategy == "minmax":
        return MinMax(cfg)
    if cfg.strategy == "file":
        return load_density_file(cfg.density_file)
    raise ValueError(f"unknown strategy '{cfg.strategy}'")
