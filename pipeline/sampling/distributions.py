"""Distributions of target mpp and exact, vectorised sampling from them.

Three shapes cover every strategy:

- :class:`PointMasses`: atoms at given mpps (DU, a fixed mpp).
- :class:`GridDensity`: a density given at grid points and linear in between. Sampling inverts its CDF exactly:
  inside a cell the CDF is quadratic, so a uniform draw maps to a point anywhere in the cell, never only to grid
  points.
- :class:`Mixture`: a weighted sum of the two (CU-MINMAX has atoms at the range ends plus a density in between).

Every distribution also exposes :meth:`Distribution.measure`: the discrete measure (points, weights) that the signal
analysis integrates against. For a grid density it is the trapezoid rule on its own grid, so analysis and sampling
describe the same thing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Distribution(ABC):
    """A probability distribution over target mpp."""

    name: str = ""

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws (float64 mpp), deterministic given ``rng``'s state."""

    @abstractmethod
    def measure(self, refine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(points, weights) with weights summing to 1: the discrete measure used for analysis.

        ``refine``: extra points at which a continuous density is evaluated too (a uniform density on two grid
        points would otherwise be integrated as two atoms).
        """

    @abstractmethod
    def cdf(self, x: np.ndarray) -> np.ndarray:
        """P(X <= x)."""


class PointMasses(Distribution):
    """Atoms at ``points`` with probabilities ``weights`` (normalised here)."""

    def __init__(self, points: np.ndarray, weights: np.ndarray | None = None, name: str = "") -> None:
        points = np.asarray(points, dtype=np.float64).ravel()
        if points.size == 0:
            raise ValueError("a point-mass distribution needs at least one point")
        weights = np.ones_like(points) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if weights.shape != points.shape or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("point-mass weights must be non-negative, one per point, and not all zero")
        order = np.argsort(points)
        self.points, self.weights = points[order], weights[order] / weights.sum()
        self.name = name

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.points[np.searchsorted(np.cumsum(self.weights), rng.random(n) * (1 - 1e-12), side="right")]

    def measure(self, refine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.points.copy(), self.weights.copy()

    def cdf(self, x: np.ndarray) -> np.ndarray:
        cum = np.concatenate([[0.0], np.cumsum(self.weights)])
        return cum[np.searchsorted(self.points, np.asarray(x, dtype=np.float64), side="right")]


class GridDensity(Distribution):
    """A density with values ``density`` at increasing ``grid`` points, linear in between, zero outside."""

    def __init__(self, grid: np.ndarray, density: np.ndarray, name: str = "") -> None:
        grid = np.asarray(grid, dtype=np.float64).ravel()
        density = np.asarray(density, dtype=np.float64).ravel()
        if grid.size < 2 or grid.shape != density.shape:
            raise ValueError("a grid density needs at least two grid points and one value per point")
        if np.any(np.diff(grid) <= 0):
            raise ValueError("grid points must be strictly increasing")
        if np.any(density < 0) or not np.all(np.isfinite(density)):
            raise ValueError("density values must be finite and non-negative")
        widths = np.diff(grid)
        cell_mass = 0.5 * (density[:-1] + density[1:]) * widths
        total = cell_mass.sum()
        if total <= 0:
            raise ValueError("density integrates to zero")
        self.grid, self.density = grid, density / total
        self._cum = np.concatenate([[0.0], np.cumsum(cell_mass / total)])
        self.name = name

    def pdf(self, x: np.ndarray) -> np.ndarray:
        return np.interp(x, self.grid, self.density, left=0.0, right=0.0)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=np.float64), self.grid[0], self.grid[-1])
        cell = np.clip(np.searchsorted(self.grid, x, side="right") - 1, 0, self.grid.size - 2)
        u = x - self.grid[cell]
        p0 = self.density[cell]
        slope = (self.density[cell + 1] - p0) / (self.grid[cell + 1] - self.grid[cell])
        return self._cum[cell] + p0 * u + 0.5 * slope * u * u

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        r = rng.random(n)
        cell = np.clip(np.searchsorted(self._cum, r, side="right") - 1, 0, self.grid.size - 2)
        mass = r - self._cum[cell]  # probability still to cover inside the cell
        p0 = self.density[cell]
        width = self.grid[cell + 1] - self.grid[cell]
        slope = (self.density[cell + 1] - p0) / width
        # Solve p0·u + slope·u²/2 = mass for u; this form is stable when slope -> 0.
        disc = np.maximum(p0 * p0 + 2.0 * slope * mass, 0.0)
        denom = p0 + np.sqrt(disc)
        u = np.where(denom > 0, 2.0 * mass / np.where(denom > 0, denom, 1.0), 0.0)
        return self.grid[cell] + np.clip(u, 0.0, width)

    def measure(self, refine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        points = self.grid
        if refine is not None:
            inside = refine[(refine > self.grid[0]) & (refine < self.grid[-1])]
            points = np.union1d(self.grid, inside)
        # The trapezoid rule on a grid holding every knot integrates the piecewise-linear density exactly.
        widths = np.diff(points)
        trapezoid = np.zeros_like(points)
        trapezoid[:-1] += 0.5 * widths
        trapezoid[1:] += 0.5 * widths
        return points, self.pdf(points) * trapezoid


class Mixture(Distribution):
    """Σ_k w_k · component_k."""

    def __init__(self, components: list[Distribution], weights: np.ndarray, name: str = "") -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if len(components) != weights.size or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("a mixture needs one non-negative weight per component")
        self.components, self.weights, self.name = components, weights / weights.sum(), name

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        which = np.searchsorted(np.cumsum(self.weights), rng.random(n) * (1 - 1e-12), side="right")
        out = np.empty(n, dtype=np.float64)
        for k, component in enumerate(self.components):
            idx = np.flatnonzero(which == k)
            if idx.size:
                out[idx] = component.sample(idx.size, rng)
        return out

    def measure(self, refine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        parts = [c.measure(refine) for c in self.components]
        points = np.concatenate([p for p, _ in parts])
        weights = np.concatenate([w * wk for (_, w), wk in zip(parts, self.weights)])
        return points, weights

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return sum(wk * c.cdf(x) for c, wk in zip(self.components, self.weights))
