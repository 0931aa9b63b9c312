"""Tiles as the pipeline makes them: the evaluation mode of the DALI graph, and ``gapless tiles`` contact sheets.

:class:`EvalTiles` runs the DALI evaluation pipeline (crop-and-resize only, no augmentation) over a tile source, so
what a contact sheet shows is exactly what training crops start from. :func:`slide_tiles` draws ``n`` tiles of one
slide at a fixed target mpp (locations on tissue, deterministic in the seed) and returns them with their level,
location and read size; :func:`contact_sheet` lays them out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gapless.pipeline.config import DataConfig
from gapless.pipeline.source import Shard, SlideEntry, TileSource


class EvalTiles:
    """Un-augmented tiles of samples ``start·B, start·B + 1, …`` of a source, through the DALI eval pipeline.

    ``normalized=False`` yields uint8 [B, tile_px, tile_px, 3] (for pictures), ``True`` float32 [B, 3, H, W]
    normalised like training crops (for feature extraction). Each batch comes with the metadata of its samples.
    ``host_resize`` as :func:`gapless.pipeline.dali.loader.build_dali_pipeline` (default: on the host for a CPU graph).
    """

    def __init__(
        self,
        cfg: DataConfig,
        source: TileSource,
        shard: Shard | None = None,
        device: str = "cpu",
        read_device: str = "cpu",
        normalized: bool = False,
        host_resize: bool | None = None,
    ) -> None:
        from gapless.pipeline.dali.loader import build_dali_pipeline

        self.cfg, self.source, self.shard = cfg, source, shard or Shard()
        self.pipe, self.reads = build_dali_pipeline(cfg, source, self.shard, device, read_device, evaluation=True,
                                                    normalized=normalized, host_resize=host_resize)  # fmt: skip
        self.pipe.build()
        self.iteration = 0

    def next_batch(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(tiles, meta) of the next batch; meta: index (global sample), mpp, level, retries, skipped."""
        from nvidia.dali.backend import TensorListGPU

        outputs = self.pipe.run()
        host = [out.as_cpu() if isinstance(out, TensorListGPU) else out for out in outputs]
        tiles = np.array(host[0].as_tensor())  # a copy: DALI reuses its buffers
        meta = {
            name: np.array(out.as_tensor()).reshape(-1)
            for name, out in zip(("mpp", "level", "retries", "skipped"), host[1:])
        }
        meta["index"] = np.array(self.shard.batch(self.shard.start + self.iteration, self.cfg.batch_size))
        self.iteration += 1
        return tiles, meta

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        while True:
            yield self.next_batch()

    def close(self) -> None:
        self.pipe = None
        self.reads.close()

    def __enter__(self) -> EvalTiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def slide_source(
    path: str | Path,
    mpp: float,
    seed: int,
    tile_px: int = 224,
    tissue_threshold: float = 0.5,
    slide_mpp: float | None = None,
) -> TileSource:
    """A tile source over one slide at one fixed target mpp (tissue mask computed from the slide)."""
    from gapless.pipeline.sampling import PointMasses
    from gapless.pipeline.slides import open_slide, tissue_mask_for_slide

    with open_slide(path, mpp=slide_mpp) as slide:
        tissue = tissue_mask_for_slide(slide)
        entry = SlideEntry(str(path), tuple(slide.levels), float(slide.mpp), tissue)
    return TileSource([entry], PointMasses([mpp]), seed=seed, tile_px=tile_px, tissue_threshold=tissue_threshold)


def slide_tiles(
    path: str | Path, mpp: float, n: int, seed: int = 0, batch_size: int = 8, **options: Any
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``n`` tiles (uint8 [n, tile_px, tile_px, 3]) of one slide at target ``mpp``, and what each was read from.

    ``options``: ``tile_px``, ``tissue_threshold`` and ``slide_mpp`` of :func:`slide_source`.
    """
    source = slide_source(path, mpp, seed, **options)
    batch_size = max(1, min(batch_size, n))
    cfg = dataclasses.replace(DataConfig(), tile_px=source.tile_px, batch_size=batch_size, workers=0, seed=seed)
    tiles, records = [], []
    with EvalTiles(cfg, source) as maker:
        for _ in range(math.ceil(n / batch_size)):
            batch, meta = maker.next_batch()
            tiles.append(batch)
            for b in range(batch.shape[0]):
                records.append(_describe(source, meta, b))
    return np.concatenate(tiles)[:n], records[:n]


def _describe(source: TileSource, meta: dict[str, np.ndarray], b: int) -> dict[str, Any]:
    g, retries = int(meta["index"][b]), int(meta["retries"][b])
    record: dict[str, Any] = {"index": g, "target_mpp": float(meta["mpp"][b]), "skipped": bool(meta["skipped"][b])}
    spec = None if record["skipped"] else source.plan(g, retries)  # the attempt that succeeded
    if spec is not None:
        plan = spec.plan
        record.update(
            level=plan.level,
            level_mpp=plan.level_mpp,
            location=list(plan.location),
            read_size=plan.read_size,
            pixels_per_output_pixel=round(plan.pixels_per_output_pixel, 3),
            retries=retries,
        )
    return record


def contact_sheet(tiles: np.ndarray, captions: list[str] | None = None, columns: int = 0, gap: int = 4) -> np.ndarray:
    """Tiles (uint8 [n, h, w, 3]) on a white grid, with an optional caption in the corner of each."""
    import cv2

    n, h, w = tiles.shape[:3]
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    sheet = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y : y + h, x : x + w] = tiles[k]
        if captions:
            cv2.putText(sheet, captions[k], (x + 4, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(
                sheet, captions[k], (x + 4, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA
            )
    return sheet
