"""Batched reads for the GPU paths: a batch's regions decoded together, its planning done ahead in other processes.

:func:`read_many` makes the tiles ``[source.read(g) for g in gs]`` makes (same attempts, same regions), but reads
each round of attempts with one ``reader.read`` call (:class:`~gapless.pipeline.slides.tiled_decode.TiledJpegReader`,
:class:`~gapless.pipeline.slides.cuslide2.Cuslide2Reader`), so a batch costs one decode call instead of one per
region; without a batch reader (``gpu_decode=cucim``) it reads region by region through the slides' backend, with
the same planning and vetting. Planning a tile (its mpp, slide and tissue location) is Python and NumPy work of a
fraction of a millisecond per tile: for batches of hundreds it would hold the DALI pipeline thread longer than the
GPU decode does, so :class:`PlanPrefetcher` plans the next batches in worker processes while the current one
decodes. Plans are pure
functions of ``(seed, g, attempt)``, so where they were made changes nothing.

GPU decoders turn damaged JPEG data into noise without failing, so a plan is kept only when the tiles it reads pass
:class:`PlanVetter` (each tile decoded strictly once per process, in the planner processes): an attempt touching a
damaged tile fails like an unreadable region does, and the sample moves on to its next attempt, counted as a retry.
"""

from __future__ import annotations

import logging
import multiprocessing
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from gapless.errors import SlideError
from gapless.pipeline.source import Tile, TileSource, TileSpec

log = logging.getLogger(__name__)

# A sample's first plan: the TileSpec of its first attempt that found tissue, or None when every attempt failed.
Plans = dict[int, TileSpec | None]
# Checks a plan's data before it is read: raises SlideError to fail the attempt.
Vet = Callable[[TileSource, TileSpec], None]


def region_request(source: TileSource, spec: TileSpec) -> Any:
    """The :class:`~gapless.pipeline.slides.tile_files.RegionRequest` of a plan."""
    from gapless.pipeline.slides.tile_files import RegionRequest

    level = source.slides[spec.slide].levels[spec.plan.level]
    size = (spec.plan.read_size, spec.plan.read_size)
    return RegionRequest(spec.path, spec.plan.location, spec.plan.level, size, level.downsample,
                         (level.width, level.height))  # fmt: skip


class PlanVetter:
    """``vetter(source, spec)``: raises SlideError when a JPEG tile the plan will read has damaged data, so that a
    plan is checked before a decoder that would not notice sees its tiles.

    Picklable; each process opens its own files and remembers which tiles passed
    (:class:`~gapless.pipeline.slides.tile_files.TileFiles`).
    """

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = int(max_open)
        self._files: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"max_open": self.max_open, "_files": None}

    @property
    def files(self) -> Any:
        if self._files is None:
            from gapless.pipeline.slides.tile_files import TileFiles

            self._files = TileFiles(self.max_open)
        return self._files

    def __call__(self, source: TileSource, spec: TileSpec) -> None:
        try:
            self.files.vet(region_request(source, spec))
        except OSError as exc:
            raise SlideError(f"{spec.path}: {exc}") from exc

    def close(self) -> None:
        """Close this process's files (they reopen on demand)."""
        if self._files is not None:
            self._files.close()


def first_plans(source: TileSource, gs: list[int], attempts: dict[int, int] | None = None, vet: Vet | None = None
                ) -> Plans:  # fmt: skip
    """For each sample, the plan of its first attempt (from ``attempts[g]``, default 0) that finds a location
    (and whose data passes ``vet``)."""
    plans: Plans = {}
    for g in dict.fromkeys(gs):
        spec, attempt, mpp = None, (attempts or {}).get(g, 0), source.target_mpp(g)
        while spec is None and attempt <= source.max_retries:
            spec, attempt = source.plan(g, attempt, mpp), attempt + 1
            if spec is not None and vet is not None:
                try:
                    vet(source, spec)
                except SlideError as exc:
                    source.attempt_failed(g, spec.attempt, exc)
                    spec = None
        plans[g] = spec
    return plans


def read_many(source: TileSource, gs: list[int], reader: Any | None, device: str = "cuda", plans: Plans | None = None,
              vet: Vet | None = None) -> list[Tile]:  # fmt: skip
    """The tiles of samples ``gs``, identical to ``[source.read(g) for g in gs]``, each round of attempts read
    by one ``reader.read`` call; regions the reader does not handle (all of them with ``reader=None``) go through
    the slide's own backend. ``plans``: the first round's plans when already made (:class:`PlanPrefetcher`, with
    the same ``vet``)."""
    plans = first_plans(source, gs, vet=vet) if plans is None else plans
    tiles: dict[int, Tile] = {}
    while plans:
        specs = {g: spec for g, spec in plans.items() if spec is not None}
        tiles.update({g: source.skipped_tile(g, device) for g, spec in plans.items() if spec is None})
        regions: dict[int, Any] = {}
        if reader is not None:
            requests = {g: region_request(source, spec) for g, spec in specs.items()}
            requests = {g: request for g, request in requests.items() if reader.handles(request)}
            regions = dict(zip(requests, reader.read(list(requests.values()))))
        retry: dict[int, int] = {}
        for g, spec in specs.items():
            if g in regions:
                region = regions[g]
            else:
                try:
                    region = source.read_spec(spec, device)
                except Exception as exc:  # as in TileSource.read: any backend failure -> the next attempt
                    region = exc
            if isinstance(region, Exception):
                source.attempt_failed(g, spec.attempt, region)
                retry[g] = spec.attempt + 1
            else:
                tiles[g] = Tile(region, spec, source.target_mpp(g), retries=spec.attempt, skipped=False)
        plans = first_plans(source, list(retry), retry, vet) if retry else {}
    return [tiles[g] for g in gs]


class _PlannerProcess:
    """What a planner process plans with: set once per process by the pool's initializer, so that the source
    (its slide list can be large) crosses the process boundary once, not with every batch."""

    source: TileSource | None = None
    vet: Vet | None = None

    @classmethod
    def start(cls, source: TileSource, vet: Vet | None) -> None:
        cls.source, cls.vet = source, vet

    @classmethod
    def plan(cls, gs: list[int]) -> Plans:
        assert cls.source is not None, "planner process started without a source"
        return first_plans(cls.source, gs, vet=cls.vet)


class PlanPrefetcher:
    """``prefetcher.plans(key, gs)``: the first plans of ``gs``, made ahead by ``workers`` processes.

    ``ahead(key, gs)`` queues a batch (``key``: its iteration); ``plans`` returns its plans, waiting for them if
    queued, planning in this process if not. With ``workers == 0`` everything is planned in this process. Plans
    are vetted with ``vet`` where they are made.
    """

    def __init__(self, source: TileSource, workers: int, vet: Vet | None = None) -> None:
        self.source, self.vet = source, vet
        self._pending: dict[int, Future[Plans]] = {}
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            context = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA and DALI threads
            self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_PlannerProcess.start,
                                             initargs=(source, vet))  # fmt: skip
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)

    def ahead(self, key: int, gs: list[int]) -> None:
        if self._pool is not None and key not in self._pending:
            self._pending[key] = self._pool.submit(_PlannerProcess.plan, gs)

    def plans(self, key: int, gs: list[int]) -> Plans:
        future = self._pending.pop(key, None)
        if future is not None:
            try:
                return future.result()
            except Exception as exc:  # a planner process died: plan here rather than stop the run
                log.warning("planner process failed (%s); planning in the pipeline thread", exc)
        return first_plans(self.source, gs, vet=self.vet)

    def close(self) -> None:
        """Stop the planner processes: queued batches are dropped, and the processes have ended on return."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
