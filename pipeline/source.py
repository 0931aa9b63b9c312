"""The tile source: which tile the pipeline makes for each sample, and reading it.

Sample ``i`` of rank ``r`` (of ``W``) is the global sample ``g = i·W + r``; every random choice about it is drawn
from generators seeded with ``(seed, stream, g[, attempt])`` (:mod:`gapless.seeding`). So a tile is a pure
function of ``(seed, rank, i)``: deterministic, disjoint across ranks (ranks own disjoint residues of ``g``),
independent of worker count and call order, and resumable from any iteration without replaying the ones before.

- The target mpp comes from the sampling distribution with a generator that depends on ``g`` only: retries keep
  the mpp, so the mpp histogram is exactly the sampler's even when reads fail.
- The slide is drawn uniformly over the readable slides of the index (each slide weighs the same, however large;
  the paper samples slides this way), and the location with the slide's tissue mask so that the footprint *at the
  sampled mpp* (``tile_px · mpp`` microns square) is at least ``tissue_threshold`` tissue.
- With ``tiles_per_slide = K > 1``, the first attempts of K consecutive samples of a rank (``i // K`` equal) share
  one slide, drawn uniformly from ``(seed, group)``: each sample's slide is still uniform over the slides and its
  mpp its own independent draw, but a worker opens the slide and loads its tissue mask once for K tiles, which is
  what keeps an index of many thousands of slides (nearly every draw a slide not yet open) fast. Retries draw their
  slide per attempt, as with K = 1, the default (every sample's slide independent).
- A failed attempt (no tissue found, unreadable region, vanished file) is retried with ``attempt + 1``: another
  slide and location, derived deterministically. After ``max_retries`` the sample is delivered as a flat tile of
  the normalisation mean (zero after normalising) and counted as skipped, so the batch keeps its size: never fatal,
  never a hang. Counts travel with every sample, so they come back from worker processes with the data.

:class:`TileSource` is picklable and holds no open handles when pickled: the slide-handle cache is created lazily
in each process (DALI workers are started with ``spawn``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gapless.errors import RegionTooLargeError
from gapless.pipeline.augparams import ParamSampler
from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.resize import resize_square
from gapless.pipeline.slides import Level, RegionPlan, SlideCache, SlideIndex, TissueMask, plan_region
from gapless.pipeline.slides.planning import level_origin
from gapless.pipeline.slides.slide import RegionOutsideError
from gapless.seeding import generator
from gapless.workers import ParentBound

log = logging.getLogger(__name__)

# Stream tags keep the generators for the mpp, the (slide, location) attempts and a group's slide independent.
_STREAM_MPP = 0x6D7070
_STREAM_ATTEMPT = 0x6C6F63
_STREAM_GROUP = 0x677270


@dataclass(frozen=True)
class Shard:
    """The part of the sample stream one loader makes: rank ``rank`` of ``world_size``, from iteration ``start``.

    Sample ``i`` of the rank is the global sample ``g = i·world_size + rank`` (ranks own disjoint residues), and
    batch ``b`` (an absolute iteration, counted from the run's start, not from ``start``) holds the rank's samples
    ``b·B .. b·B + B - 1``.
    """

    rank: int = 0
    world_size: int = 1
    start: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        if self.start < 0:
            raise ValueError(f"start iteration must be >= 0, got {self.start}")

    def global_index(self, i: int) -> int:
        """Sample ``i`` of this rank -> its global sample index."""
        return int(i) * self.world_size + self.rank

    def batch(self, iteration: int, batch_size: int) -> list[int]:
        """Global indices of the samples of batch ``iteration``."""
        first = int(iteration) * batch_size
        return [self.global_index(first + b) for b in range(batch_size)]


@dataclass(frozen=True)
class SlideEntry:
    """What the source needs of one slide of the index."""

    path: str
    levels: tuple[Level, ...]
    mpp: float
    tissue: TissueMask | None = None  # the mask itself, or None: row ``row`` of the source's slide index
    row: int = -1


@dataclass(frozen=True)
class TileSpec:
    """Everything that defines one tile: which sample, which slide, and the region plan."""

    index: int  # global sample index g
    attempt: int
    slide: int  # position in the source's slide list
    path: str
    plan: RegionPlan


@dataclass
class Tile:
    """A read region with its provenance; ``region`` is uint8 HWC, read_size² (host numpy or CuPy)."""

    region: Any
    spec: TileSpec | None  # None when the sample was skipped
    target_mpp: float
    retries: int
    skipped: bool

    @property
    def level(self) -> int:
        return -1 if self.spec is None else self.spec.plan.level


class TileSource(ParentBound):
    """Maps a global sample index to a tile and reads it (see the module docstring for the contract).

    Loader workers (DALI's source workers, DataLoader workers, planner processes) receive the source pickled; one
    that unpickles it ends when the process that sent it dies (:class:`gapless.workers.ParentBound`).
    """

    def __init__(
        self,
        slides: Sequence[SlideEntry],
        distribution: Any,
        seed: int,
        tile_px: int = 224,
        tissue_threshold: float = 0.5,
        max_retries: int = 8,
        handle_cache: int = 32,
        mask_tries: int = 32,
        fill: tuple[float, float, float] = (0.485, 0.456, 0.406),
        index: SlideIndex | None = None,
        tiles_per_slide: int = 1,
        world_size: int = 1,
    ) -> None:
        if not len(slides):
            raise ValueError("the tile source needs at least one readable slide")
        if tiles_per_slide < 1 or world_size < 1:
            raise ValueError(f"tiles_per_slide and world_size must be >= 1, got {tiles_per_slide}, {world_size}")
        # A list of entries, or a sequence that makes them on demand from the index (pipeline.slide_table).
        self.slides = list(slides) if isinstance(slides, (list, tuple)) else slides
        self.tiles_per_slide, self.world_size = int(tiles_per_slide), int(world_size)
        self.distribution = distribution
        self.seed = int(seed)
        self.tile_px = int(tile_px)
        self.tissue_threshold = float(tissue_threshold)
        self.max_retries = int(max_retries)
        self.handle_cache = int(handle_cache)
        self.mask_tries = int(mask_tries)
        self.fill = np.round(np.asarray(fill) * 255).astype(np.uint8)
        # Index-backed masks load lazily through the index's bounded LRU: no process holds every mask of the index.
        self.index = index
        if index is None and any(e.tissue is None for e in self.slides):
            raise ValueError("slides without a tissue mask need the slide index they come from")
        self._cache: SlideCache | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache"] = None  # handles are per process; the worker opens its own
        return state

    @property
    def cache(self) -> SlideCache:
        if self._cache is None:
            self._cache = SlideCache(self.handle_cache)
        return self._cache

    def close(self) -> None:
        """Close this process's slide handles (the source stays usable: they reopen on demand)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _rng(self, stream: int, g: int, attempt: int = 0) -> np.random.Generator:
        return generator(self.seed, stream, g, attempt)

    def target_mpp(self, g: int) -> float:
        """The target mpp of global sample ``g``: depends on (seed, g) only, never on retries."""
        return float(self.distribution.sample(1, self._rng(_STREAM_MPP, g))[0])

    def plan(self, g: int, attempt: int = 0, mpp: float | None = None) -> TileSpec | None:
        """Slide and region for attempt ``attempt`` of sample ``g``; None when no tissue location was found.

        ``mpp``: the sample's target mpp when the caller has it already (it is ``target_mpp(g)`` either way).
        """
        rng = self._rng(_STREAM_ATTEMPT, g, attempt)
        if attempt == 0 and self.tiles_per_slide > 1:  # the slide of the sample's group
            slide_idx = int(self._rng(_STREAM_GROUP, self.slide_group(g)).integers(len(self.slides)))
        else:
            slide_idx = int(rng.integers(len(self.slides)))
        entry = self.slides[slide_idx]
        mpp = self.target_mpp(g) if mpp is None else mpp
        side_um = self.tile_px * mpp
        center = self.tissue(entry).sample_center(rng, side_um, self.tissue_threshold, self.mask_tries, entry.mpp)
        if center is None:
            return None
        try:
            plan = plan_region(list(entry.levels), mpp, self.tile_px, center)
        except RegionTooLargeError:  # the slide is smaller than this tile's footprint: draw another
            return None
        return TileSpec(index=g, attempt=attempt, slide=slide_idx, path=entry.path, plan=plan)

    def slide_group(self, g: int) -> int:
        """The group of sample ``g``: ``tiles_per_slide`` consecutive samples of one rank share it (module doc)."""
        rank, i = g % self.world_size, g // self.world_size
        return (i // self.tiles_per_slide) * self.world_size + rank

    def tissue(self, entry: SlideEntry) -> TissueMask:
        return entry.tissue if entry.tissue is not None else self.index.tissue_mask(entry.row)

    def read_spec(self, spec: TileSpec, device: str = "cpu") -> Any:
        """Read the planned region (raises on failure), decoded on ``device``: the slide is opened with the reader
        for it (:meth:`SlideCache.get`), and read from the level pixel the plan was made at (the index's levels),
        so the tile is the same whichever reader opened the slide."""
        entry = self.slides[spec.slide]
        slide = self.cache.get(entry.path, mpp=entry.mpp, device=device)
        size = (spec.plan.read_size, spec.plan.read_size)
        origin = level_origin(spec.plan.location, entry.levels[spec.plan.level].downsample)
        region = slide.read_pixels(origin, spec.plan.level, size, device=device)
        if tuple(region.shape) != (size[1], size[0], 3):
            raise OSError(f"{entry.path}: region of shape {tuple(region.shape)}, expected {size[1]}x{size[0]}x3")
        return region

    def read(self, g: int, device: str = "cpu") -> Tile:
        """Read sample ``g``, retrying failed attempts at other deterministic locations."""
        mpp = self.target_mpp(g)
        for attempt in range(self.max_retries + 1):
            spec = self.plan(g, attempt, mpp)
            if spec is None:
                continue
            try:
                region = self.read_spec(spec, device)
            except Exception as exc:  # any backend failure (I/O, decode, vanished file) -> another location
                self.attempt_failed(g, attempt, exc)
                continue
            return Tile(region, spec, mpp, retries=attempt, skipped=False)
        return self.skipped_tile(g, device)

    @staticmethod
    def attempt_failed(g: int, attempt: int, exc: BaseException) -> None:
        """Log a failed attempt of sample ``g`` before the next one: bad data is expected (DEBUG), a region
        planned outside its level is a planning bug, never silent (WARNING). Every read path logs through here."""
        bug = isinstance(exc, RegionOutsideError)
        log.log(logging.WARNING if bug else logging.DEBUG, "sample %d attempt %d: %s", g, attempt, exc)

    def skipped_tile(self, g: int, device: str = "cpu") -> Tile:
        """The flat tile delivered for a sample whose every attempt failed."""
        region = np.broadcast_to(self.fill, (self.tile_px, self.tile_px, 3)).copy()
        if device == "cuda":
            import cupy

            region = cupy.asarray(region)
        return Tile(region, None, self.target_mpp(g), retries=self.max_retries + 1, skipped=True)


class SampleCallback:
    """Per-sample callback for DALI's parallel external source (``batch=False``): stateless and picklable.

    Sample ``idx_in_epoch`` of the DALI stream is sample ``shard.start · batch_size + idx_in_epoch`` of the shard's
    rank. The loader never ends a DALI epoch (it counts its own iterations), so ``idx_in_epoch`` runs on for the
    life of the pipeline. Outputs: region (uint8 HWC; with ``resize_px``, the base tile it makes, resized by
    :func:`gapless.pipeline.resize.resize_square`), target mpp (float32), level (int32), retries (int32), skipped
    (int32), each metadata a 1-element array; with ``augment``, also the sample's augmentation parameters (float32
    [n_crops, N_PARAMS], :func:`gapless.pipeline.augparams.sample_params`), drawn here so that they travel with the
    sample from whichever worker made it.
    """

    def __init__(
        self,
        source: TileSource,
        shard: Shard,
        batch_size: int,
        augment: AugmentConfig | None = None,
        resize_px: int = 0,
    ) -> None:
        self.source, self.shard, self.offset = source, shard, shard.start * int(batch_size)
        self.augment = augment
        self.params = None if augment is None else ParamSampler(augment, source.tile_px)
        self.resize_px = int(resize_px)  # > 0: deliver the region resized to its resize_px² base tile

    @property
    def num_outputs(self) -> int:
        return 5 if self.augment is None else 6

    def __call__(self, sample_info: Any) -> tuple[np.ndarray, ...]:
        g = self.shard.global_index(self.offset + int(sample_info.idx_in_epoch))
        tile = self.source.read(g)
        if self.resize_px:
            tile.region = resize_square(tile.region, self.resize_px)
        outputs = tile_outputs(tile)
        if self.params is None:
            return outputs
        return (*outputs, self.params(self.source.seed, g))


def tile_outputs(tile: Tile) -> tuple[np.ndarray, ...]:
    """The five per-sample host outputs of a tile (the GPU reader builds the same columns on the device)."""
    return (
        np.ascontiguousarray(tile.region),
        np.asarray([tile.target_mpp], dtype=np.float32),
        np.asarray([tile.level], dtype=np.int32),
        np.asarray([tile.retries], dtype=np.int32),
        np.asarray([int(tile.skipped)], dtype=np.int32),
    )
