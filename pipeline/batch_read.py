"""Batched reads for the GPU path: a batch's regions decoded together, its planning done ahead in other processes.

:func:`read_many` makes exactly the tiles ``[source.read(g) for g in gs]`` makes (same attempts, same regions), but
reads each round of attempts with one :class:`~gapless.pipeline.slides.tiled_decode.TiledJpegReader` call, so a batch
costs one decode call instead of one per region. Planning a tile (its mpp, slide and tissue location) is Python and
NumPy work of a fraction of a millisecond per tile: for batches of hundreds it would hold the DALI pipeline thread
longer than the GPU decode does, so :class:`PlanPrefetcher` plans the next batches in worker processes while the
current one decodes. Plans are pure functions of ``(seed, g, attempt)``, so where they were made changes nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from gapless.pipeline.source import Tile, TileSource, TileSpec

log = logging.getLogger(__name__)

# A sample's first plan: the TileSpec of its first attempt that found tissue, or None when every attempt failed.
Plans = dict[int, TileSpec | None]


def first_plans(source: TileSource, gs: list[int], attempts: dict[int, int] | None = None) -> Plans:
    """For each sample, the plan of its first attempt (from ``attempts[g]``, default 0) that finds a location."""
    plans: Plans = {}
    for g in dict.fromkeys(gs):
        spec, attempt = None, (attempts or {}).get(g, 0)
        while spec is None and attempt <= source.max_retries:
            spec, attempt = source.plan(g, attempt), attempt + 1
        plans[g] = spec
    return plans


def read_many(source: TileSource, gs: list[int], reader: Any, device: str = "cuda", plans: Plans | None = None
              ) -> list[Tile]:  # fmt: skip
    """The tiles of samples ``gs``, identical to ``[source.read(g) for g in gs]``, each round of attempts read
    by one ``reader.read`` call; regions the reader does not handle go through the slide's own backend.
    ``plans``: the first round's plans when already made (:class:`PlanPrefetcher`)."""
    from gapless.pipeline.slides.tiled_decode import RegionRequest

    plans = first_plans(source, gs) if plans is None else plans
    tiles: dict[int, Tile] = {}
    while plans:
        specs = {g: spec for g, spec in plans.items() if spec is not None}
        tiles.update({g: source.skipped_tile(g, device) for g, spec in plans.items() if spec is None})
        requests = {}
        for g, spec in specs.items():
            level = source.slides[spec.slide].levels[spec.plan.level]
            request = RegionRequest(spec.path, spec.plan.location, spec.plan.level,
                                    (spec.plan.read_size, spec.plan.read_size), level.downsample,
                                    (level.width, level.height))  # fmt: skip
            if reader.handles(request):
                requests[g] = request
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
                log.debug("sample %d attempt %d: %s", g, spec.attempt, region)
                retry[g] = spec.attempt + 1
            else:
                tiles[g] = Tile(region, spec, source.target_mpp(g), retries=spec.attempt, skipped=False)
        plans = first_plans(source, list(retry), retry) if retry else {}
    return [tiles[g] for g in gs]


class _PlannerProcess:
    """What a planner process plans with: set once per process by the pool's initializer, so that the source
    (its slide list can be large) crosses the process boundary once, not with every batch."""

    source: TileSource | None = None

    @classmethod
    def start(cls, source: TileSource) -> None:
        cls.source = source

    @classmethod
    def plan(cls, gs: list[int]) -> Plans:
        assert cls.source is not None, "planner process started without a source"
        return first_plans(cls.source, gs)


class PlanPrefetcher:
    """``prefetcher.plans(key, gs)``: the first plans of ``gs``, made ahead by ``workers`` processes.

    ``ahead(key, gs)`` queues a batch (``key``: its iteration); ``plans`` returns its plans, waiting for them if
    queued, planning in this process if not. With ``workers == 0`` everything is planned in this process.
    """

    def __init__(self, source: TileSource, workers: int) -> None:
        self.source = source
        self._pending: dict[int, Future[Plans]] = {}
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            context = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA and DALI threads
            self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_PlannerProcess.start,
                                             initargs=(source,))  # fmt: skip
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
        return first_plans(self.source, gs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._pending.clear()
