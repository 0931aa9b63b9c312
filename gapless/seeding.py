"""Randomness as a pure function of integers: every random draw in gapless comes from a generator seeded with
``(seed, stream, index, ...)``.

That is what makes runs exact: a tile, its augmentations, an iBOT mask or a drop-path draw depends only on the
run's seed and the position it belongs to, never on worker layout, call order or what ran before, so a run resumed
at any iteration continues bit for bit. Streams are distinct integer tags, so independent choices about the same
index never share random numbers.

The integers are turned into generator state by hashing: the BLAKE2b digest of their decimal spelling seeds a PCG64
bit generator directly (:class:`DigestSeed`). Loaders build several generators per tile, and this costs a few
microseconds where NumPy's ``SeedSequence`` mixing costs several times that; BLAKE2b is a cryptographic hash, so
the states of neighbouring indices are as unrelated as independent seeds.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.random.bit_generator import ISeedSequence

_MAX_DIGEST = 64  # bytes per BLAKE2b call


class DigestSeed(ISeedSequence):
    """A NumPy seed sequence whose words are the BLAKE2b digest of integers ``parts`` (any size, any sign).

    The parts are spelt in decimal and joined with commas, so (1, 23) and (12, 3) differ; the same parts always give
    the same words.
    """

    __slots__ = ("key",)

    def __init__(self, parts: tuple[int, ...]) -> None:
        self.key = ",".join([str(int(p)) for p in parts]).encode()

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
            raise ValueError(f"seed words must be uint32 or uint64, not {dtype}")
        size = int(n_words) * dtype.itemsize
        if size <= _MAX_DIGEST:
            return np.frombuffer(hashlib.blake2b(self.key, digest_size=max(1, size)).digest(), dtype)[:n_words]
        blocks = [hashlib.blake2b(self.key, salt=k.to_bytes(16, "little")).digest() for k in range(-(-size // 64))]
        return np.frombuffer(b"".join(blocks), dtype)[:n_words]


def generator(*parts: int) -> np.random.Generator:
    """A NumPy generator (PCG64) for the integers ``parts``; the same parts always give the same stream."""
    return np.random.Generator(np.random.PCG64(DigestSeed(parts)))


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed (for torch generators) from the integers ``parts``."""
    return int(DigestSeed(parts).generate_state(1, np.uint64)[0] >> 1)
