"""GPU read path: cuCIM decodes regions on the GPU (nvJPEG) and hands CuPy arrays to DALI without a host copy.

A batch callable for a non-parallel ``device="gpu"`` external source. It imports CuPy only when called, so this
module imports (and the GPU path can be selected and tested for shape) on machines without CUDA.
"""

from __future__ import annotations

from typing import Any

from pipeline.source import TileSource, tile_outputs


class GpuBatchReader:
    """``reader(iteration) -> (regions, mpp, level, retries, skipped)``, each a list of ``batch_size`` CuPy arrays.

    Iteration ``j`` of the DALI stream holds samples ``offset + j·B + b`` of this rank (``b < B``), the same
    samples the CPU per-sample callback produces, so the two read paths make the same tiles.
    """

    def __init__(self, source: TileSource, batch_size: int, rank: int, world_size: int, offset: int) -> None:
        self.source, self.batch_size = source, int(batch_size)
        self.rank, self.world_size, self.offset = rank, world_size, int(offset)

    def sample_indices(self, iteration: int) -> list[int]:
        first = self.offset + int(iteration) * self.batch_size
        return [TileSource.global_index(first + b, self.rank, self.world_size) for b in range(self.batch_size)]

    def __call__(self, iteration: int) -> tuple[list[Any], ...]:
        import cupy

        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        for g in self.sample_indices(iteration):
            for column, value in zip(columns, tile_outputs(self.source.read(g, device="cuda"), xp=cupy)):
                column.append(value)
        return columns
