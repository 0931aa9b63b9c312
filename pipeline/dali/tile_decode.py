"""The DALI-decoder read path (``data.gpu_decode=dali``): a batch's JPEG tiles decoded by DALI in one call and its
regions assembled from them in one operation, feeding the training or evaluation graph.

A tile-decode pipeline runs beside the graph's pipeline: its parallel external source
(:class:`gapless.pipeline.dali.tile_batches.TileBatchCallback`, ``workers`` processes, batches queued ahead) plans
the samples and reads and vets their tile streams; ``fn.decoders.image`` decodes every stream of the batch
(``device="mixed"``: nvJPEG and the hardware JPEG decoder where the GPU has one; ``"cpu"``: libjpeg-turbo, the CPU
twin), and ``fn.multi_paste`` cuts and places every tile of every region in one operation. The graph's pipeline
takes the B regions through a batch external source (:class:`DaliTileReader`), so the crop-and-resize and
multi-crop graph is the one every other read path feeds. Nothing runs per tile in the pipeline thread: per
iteration it runs the decode pipeline and hands its B regions on.

The two pipelines have different batch sizes (T tiles, B regions), which one DALI pipeline cannot mix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.dali.tile_batches import TileBatchCallback
from gapless.pipeline.slides.tiled_decode import array_module
from gapless.pipeline.source import Shard, TileSource

TILES_PER_REGION = 16  # the decode pipeline's batch size, per region: a batch needing more reads the rest on the host


@pipeline_def(enable_conditionals=False)
def tile_decode_pipeline(callback: TileBatchCallback, decoder: str, parallel: bool, prefetch: int):
    """Tile streams -> decoded tiles -> regions (and the metadata columns passed through)."""
    kwargs = {"prefetch_queue_depth": max(1, prefetch)} if parallel else {}
    encoded, in_ids, in_anchors, shapes, out_anchors, size, *rest = fn.external_source(
        source=callback, batch=True, batch_info=True, parallel=parallel, num_outputs=callback.num_outputs, **kwargs
    )
    tiles = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
    regions = fn.multi_paste(tiles, in_ids=in_ids, in_anchors=in_anchors, shapes=shapes, out_anchors=out_anchors,
                             output_size=size)  # fmt: skip
    return (regions, *rest)


class DaliTileReader:
    """``reader(iteration) -> (regions, mpp, level, retries, skipped)``, each a list of ``batch_size`` arrays (CuPy
    with ``device="cuda"``, NumPy with ``"cpu"``), for a batch external source; ``reader.params(iteration)``: the same
    samples' augmentation parameters (host arrays) when ``augment`` is given.

    Iteration ``j`` is batch ``shard.start + j`` of the shard, the samples every other read path makes.
    """

    def __init__(self, source: TileSource, batch_size: int, shard: Shard, workers: int = 2, prefetch: int = 2,
                 device: str = "cuda", augment: AugmentConfig | None = None, verify: bool | None = None,
                 tiles_per_region: int = TILES_PER_REGION) -> None:  # fmt: skip
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device: '{device}' is not one of cuda, cpu")
        self.source, self.batch_size, self.shard, self.device = source, int(batch_size), shard, device
        capacity = self.batch_size * max(1, int(tiles_per_region))
        self.callback = TileBatchCallback(source, shard, self.batch_size, capacity, augment, verify)
        device_id = None
        if device == "cuda":
            import torch

            device_id = torch.cuda.current_device()
        kwargs = {"py_num_workers": workers, "py_start_method": "spawn"} if workers > 0 else {}
        # A parallel batch source gives each batch to one worker: as many batches ahead as workers keep all busy.
        ahead = max(1, prefetch, workers)
        self.pipe = tile_decode_pipeline(
            self.callback, "mixed" if device == "cuda" else "cpu", workers > 0, ahead, batch_size=capacity,
            num_threads=max(1, workers), device_id=device_id, prefetch_queue_depth=max(1, prefetch), **kwargs,
        )  # fmt: skip
        self.pipe.build()
        self._done = -1  # the last iteration the decode pipeline ran
        self._cache: dict[int, dict[str, Any]] = {}

    def sample_indices(self, iteration: int) -> list[int]:
        return self.callback.sample_indices(iteration)

    def __call__(self, iteration: int) -> tuple[list[Any], ...]:
        out = self._outputs(int(iteration), "regions")
        return (out["regions"], *out["meta"])

    def params(self, iteration: int) -> list[np.ndarray]:
        return self._outputs(int(iteration), "params")["params"]

    def _outputs(self, iteration: int, part: str) -> dict[str, Any]:
        """Iteration ``iteration``'s columns, running the decode pipeline once per iteration whichever of the two
        external sources asks first; an entry is dropped once both parts were taken."""
        if iteration not in self._cache:
            if iteration != self._done + 1:
                raise RuntimeError(f"decode pipeline at iteration {self._done}, asked for {iteration}")
            self._cache[iteration] = self._run()
            self._done = iteration
        entry = self._cache[iteration]
        entry["taken"].add(part)
        if entry["taken"] >= entry["parts"]:
            del self._cache[iteration]
        return entry

    def _run(self) -> dict[str, Any]:
        regions, *rest = self.pipe.run()
        b = self.batch_size
        xp = array_module(self.device)
        meta = [xp.asarray(np.asarray(column.as_array())[:b]) for column in rest[:4]]  # one upload per column
        entry: dict[str, Any] = {
            "regions": [self._own(regions[j]) for j in range(b)],
            "meta": [[column[j] for j in range(b)] for column in meta],
            "taken": set(),
            "parts": {"regions", "params"} if self.callback.augment is not None else {"regions"},
        }
        if self.callback.augment is not None:
            params = np.asarray(rest[4].as_array())
            entry["params"] = [params[j] for j in range(b)]
        return entry

    def _own(self, tensor: Any) -> Any:
        """A copy of one output sample that outlives the decode pipeline's buffers."""
        if self.device == "cpu":
            return np.array(tensor)
        import ctypes

        import cupy

        region = cupy.empty(tuple(tensor.shape()), cupy.uint8)
        stream = ctypes.c_void_p(cupy.cuda.get_current_stream().ptr)
        tensor.copy_to_external(ctypes.c_void_p(region.data.ptr), cuda_stream=stream, non_blocking=False)
        return region

    def close(self) -> None:
        """Stop the decode pipeline (its source workers end with it) and close this process's tile files."""
        pipe, self.pipe = self.pipe, None
        del pipe
        self._cache.clear()
        self.callback.close()
