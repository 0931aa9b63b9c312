"""Transfer kernels K(x, y): how much training at magnification x (mpp) teaches about magnification y.

A kernel is a function of two broadcastable arrays of mpp values. The information kernel is the paper's: a tile at
x mpp carries (min/max)² of the pixels' information of a tile at y mpp (area ratio of the two footprints).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


def information_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """K(x, y) = (min(x, y) / max(x, y))²."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return (np.minimum(x, y) / np.maximum(x, y)) ** 2


def loglaplace_kernel(sigma: float) -> Kernel:
    """K(x, y) = exp(-|log x - log y| / sigma): similarity decaying with the log-ratio of magnifications."""
    if sigma <= 0:
        raise ValueError(f"kernel_sigma must be > 0, got {sigma}")

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return np.exp(-np.abs(np.log(x) - np.log(y)) / sigma)

    return kernel


def make_kernel(name: str, sigma: float = 0.5) -> Kernel:
    """The kernel called ``name`` ("information" or "loglaplace")."""
    if name == "information":
        return information_kernel
    if name == "loglaplace":
        return loglaplace_kernel(sigma)
    raise ValueError(f"unknown kernel '{name}' (choose from information, loglaplace)")


def kernel_matrix(kernel: Kernel, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Matrix M[j, i] = K(sources[i], targets[j]): rows are targets y, columns training mpps x."""
    return kernel(np.asarray(sources)[None, :], np.asarray(targets)[:, None])
