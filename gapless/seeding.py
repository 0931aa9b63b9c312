"""Randomness as a pure function of integers: every random draw in gapless comes from a generator seeded with
``(seed, stream, index, ...)``.

That is what makes runs exact: a tile, its augmentations, an iBOT mask or a drop-path draw depends only on the
run's seed and the position it belongs to, never on worker layout, call order or what ran before, so a run resumed
at any iteration continues bit for bit. Streams are distinct integer tags, so independent choices about the same
index never share random numbers.
"""

from __future__ import annotations

import numpy as np


def generator(*parts: int) -> np.random.Generator:
    """A NumPy generator (PCG64) for the integers ``parts``; the same parts always give the same stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(p) for p in parts])))


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed (for torch generators) from the integers ``parts``."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)
