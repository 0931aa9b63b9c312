"""Where a tile's time goes, measured stage by stage in one process over real tile specs from the TileSource.

Each tile of a strategy goes through the baseline loader's own functions, one at a time, each timed:

- plan: the target mpp draw, tissue-aware location and region plan (``TileSource.plan``);
- read: the slide reader's read of the planned region (the tifffile reader for JPEG pyramids: JPEG tile decode and
  assembly) (``TileSource.read_spec``), with the slide readers' damaged-tile check switched off;
- check: what the damaged-tile check adds to the read (the same region read with the check on and off, in
  alternating order);
- resize: crop-and-resize to ``tile_px`` (:func:`gapless.pipeline.resize.resize_square`, antialiased);
- augment: DINOv2 multi-crop (``gapless.pipeline.augment.MultiCrop``), each uint8 view written into its place in
  the packed batch (``gapless.pipeline.baseline.PackedBatch``), as the baseline's workers do;
- transfer: per batch, handing the packed batch over (into shared memory on a CPU, what a DataLoader worker does so
  that a batch is sent as a handle; pinned and copied to the device on a GPU) and normalising the views on the
  device (:class:`gapless.pipeline.loader_base.ViewNormalizer`, synchronised).

OpenCV and torch use one thread, as in a loader worker, and times are CPU time of the process, so the figures are
per worker and hardly move when other programs load the machine. Alongside the times, the
region plans give the decoded pixels per output pixel: ``read_size² / tile_px²`` and the JPEG-tile-aligned area
(whole 256 px tiles, which is what the slide reader decodes), and the share of tiles read from each level.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from gapless.pipeline.config import DataConfig
from gapless.pipeline.slides.decoding import set_tile_check
from gapless.pipeline.slides.planning import level_origin
from gapless.pipeline.slides.tiff import PageLayout, tiff_layout

STAGES = ("plan", "read", "check", "resize", "augment", "transfer")


def page_layouts(path: str) -> dict[tuple[int, int], PageLayout]:
    """The tiled pages of a slide file by (width, height); empty for files that are not tiled TIFFs."""
    try:
        return {(p.width, p.height): p for p in tiff_layout(Path(path)) or []}
    except Exception:  # not readable as TIFF: the pixel figure falls back to the region itself
        return {}


def tile_aligned_pixels(spec: Any, level: Any, pages: dict[tuple[int, int], PageLayout]) -> int:
    """Pixels of the whole JPEG tiles a planned region touches (the area a tile-based decoder decodes)."""
    n = spec.plan.read_size
    page = pages.get((level.width, level.height))
    if page is None:
        return n * n
    lx, ly = level_origin(spec.plan.location, level.downsample)
    return len(page.tiles_touched(lx, ly, n, n)[2]) * page.tile_width * page.tile_height


def plan_specs(source: Any, n_tiles: int) -> tuple[list[Any], list[float]]:
    """The first ``n_tiles`` plannable specs of the source (global indices 0, 1, …) and the plan time of each."""
    specs, times = [], []
    g = 0
    while len(specs) < n_tiles and g < 4 * n_tiles + 16:
        t0 = time.process_time()
        spec = next((s for a in range(source.max_retries + 1) if (s := source.plan(g, a)) is not None), None)
        times.append(time.process_time() - t0)
        if spec is not None:
            specs.append(spec)
        g += 1
    return specs, times


def pixel_figures(source: Any, specs: list[Any]) -> dict[str, Any]:
    """Decoded pixels per output pixel (region and tile-aligned), mean target mpp and level shares."""
    layouts: dict[str, dict[tuple[int, int], PageLayout]] = {}
    region, aligned, levels = [], [], {}
    for spec in specs:
        pages = layouts.setdefault(spec.path, page_layouts(spec.path))
        level = source.slides[spec.slide].levels[spec.plan.level]
        region.append(spec.plan.pixels_per_output_pixel)
        aligned.append(tile_aligned_pixels(spec, level, pages) / spec.plan.out_px**2)
        levels[int(spec.plan.level)] = levels.get(int(spec.plan.level), 0) + 1
    n = max(1, len(specs))
    return {
        "pixels_per_output_pixel": float(np.mean(region)) if region else float("nan"),
        "tile_aligned_pixels_per_output_pixel": float(np.mean(aligned)) if aligned else float("nan"),
        "mean_target_mpp": float(np.mean([s.plan.target_mpp for s in specs])) if specs else float("nan"),
        "level_share": {str(k): v / n for k, v in sorted(levels.items())},
    }


def _transfer(packed: Any, layout: Any, normalize: Any, cuda: bool) -> None:
    """Hand a packed batch over as the baseline loader does: in shared memory on a CPU (the DataLoader then sends
    a handle, not pixels), pinned and copied on a GPU; then unpack and normalise the views on the device."""
    import torch

    from gapless.pipeline.baseline import shared_bytes

    if cuda:
        packed = packed.pin_memory()
    else:  # a worker allocates the batch in shared memory and writes the views there: the same cost
        shared = shared_bytes(packed.numel())
        shared.copy_(packed)
        packed = shared
    _, globals_, locals_ = layout.unpack(packed)
    normalize(globals_)
    normalize(locals_)
    if cuda:
        torch.cuda.synchronize()


class _StageRun:
    """The tiles of one strategy, processed one at a time so that several strategies can be interleaved."""

    def __init__(self, cfg: DataConfig, n_tiles: int, batch: int, cuda: bool) -> None:
        from gapless.devices import torch_device
        from gapless.pipeline.augment import MultiCrop
        from gapless.pipeline.augparams import ParamSampler
        from gapless.pipeline.baseline import PackedBatch
        from gapless.pipeline.loader import build_source
        from gapless.pipeline.loader_base import ViewNormalizer

        self.cfg, self.batch, self.cuda = cfg, batch, cuda
        self.source, _ = build_source(cfg)
        self.multicrop = MultiCrop(cfg.augment)
        self.params = ParamSampler(cfg.augment, cfg.tile_px)
        self.normalize = ViewNormalizer(cfg.augment.mean, cfg.augment.std, torch_device("cuda" if cuda else "cpu"))
        # Opening a slide and loading its tissue mask (lazily, once per slide) are start-up, not per-tile costs:
        # a first, untimed planning loads the masks of the slides the tiles come from, then those slides (only
        # those: an index may hold 200,000) are opened before the timed planning.
        warm, _ = plan_specs(self.source, n_tiles)
        for entry in {self.source.slides[spec.slide].path: self.source.slides[spec.slide] for spec in warm}.values():
            self.source.cache.get(entry.path, mpp=entry.mpp)
        self.specs, plan_times = plan_specs(self.source, n_tiles)
        self.times: dict[str, list[float]] = {s: [] for s in STAGES}
        self.times["plan"] = plan_times
        self.tile_ms: list[float] = []  # read + resize + augment of each tile, for paired comparisons
        self.layout = PackedBatch(cfg.augment, batch)
        self.packed, self.filled = self._new_batch(), 0
        self.failed = 0

    def _new_batch(self) -> tuple[Any, list[np.ndarray]]:
        """A packed batch (as the baseline makes) and the destination of every view of it, sample by sample."""
        import torch

        packed = torch.empty(self.layout.nbytes, dtype=torch.uint8)
        _, globals_, locals_ = (t.numpy() for t in self.layout.unpack(packed))
        B, aug = self.batch, self.cfg.augment
        views = [
            [globals_[c * B + k] for c in range(aug.global_crops)]
            + [locals_[c * B + k] for c in range(aug.local_crops)]
            for k in range(B)
        ]
        return packed, views

    def step(self, k: int) -> None:
        from gapless.pipeline.resize import resize_square

        if k >= len(self.specs):
            return
        clock = time.process_time
        try:
            reads = {}
            for checked in (False, True) if k % 2 else (True, False):  # alternate which read comes first
                set_tile_check(checked)
                t0 = clock()
                region = self.source.read_spec(self.specs[k])
                reads[checked] = clock() - t0
        except Exception:  # counted, as the loaders count failed reads
            self.failed += 1
            self.tile_ms.append(float("nan"))
            return
        finally:
            set_tile_check(True)
        t1 = clock()
        base = resize_square(region, self.cfg.tile_px)
        t2 = clock()
        self.multicrop.apply(base, self.params(self.source.seed, self.specs[k].index), self.packed[1][self.filled])
        t3 = clock()
        check = reads[True] - reads[False]
        for stage, dt in (("read", reads[False]), ("check", check), ("resize", t2 - t1), ("augment", t3 - t2)):
            self.times[stage].append(dt)
        self.tile_ms.append(1e3 * (reads[True] + t3 - t1))
        self.filled += 1
        if self.filled == self.batch:
            t0 = clock()
            _transfer(self.packed[0], self.layout, self.normalize, self.cuda)
            self.times["transfer"].extend([(clock() - t0) / self.batch] * self.batch)
            self.packed, self.filled = self._new_batch(), 0

    def result(self) -> dict[str, Any]:
        times = self.times
        mean_ms = {s: 1e3 * float(np.mean(v)) if v else 0.0 for s, v in times.items()}
        total = sum(mean_ms.values())
        return {
            "strategy": self.cfg.sampling.strategy,
            "tiles": len(self.specs),
            "failed_reads": self.failed,
            "transfer": "collate + pin + host->device + normalise"
            if self.cuda
            else "collate in shared memory + normalise",
            "clock": "CPU time of the process",
            "ms_per_tile": mean_ms,
            "median_ms_per_tile": {s: 1e3 * float(statistics.median(v)) if v else 0.0 for s, v in times.items()},
            "share": {s: (v / total if total else 0.0) for s, v in mean_ms.items()},
            "total_ms_per_tile": total,
            "tiles_per_s_per_worker": 1e3 / total if total else float("nan"),
            "tile_ms": self.tile_ms,
            **pixel_figures(self.source, self.specs),
        }


def time_stages_interleaved(cfgs: dict[str, DataConfig], n_tiles: int, batch: int) -> dict[str, dict[str, Any]]:
    """Per-stage times of several configs (e.g. one per strategy), interleaved tile by tile: tile k of every
    config is timed before tile k + 1 of any, so a busy machine slows them all alike and ratios stay fair."""
    import cv2
    import torch

    cuda = torch.cuda.is_available()
    threads = (cv2.getNumThreads(), torch.get_num_threads())
    cv2.setNumThreads(1)  # one thread, as in a loader worker
    torch.set_num_threads(1)
    try:
        runs = {name: _StageRun(cfg, n_tiles, batch, cuda) for name, cfg in cfgs.items()}
        for k in range(n_tiles):
            for run in runs.values():
                run.step(k)
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])
    return {name: run.result() for name, run in runs.items()}


def paired_ratio(
    tile_ms: list[float], reference_ms: list[float], fixed_ms: float = 0.0, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Throughput ratio reference-time / time of two interleaved tile series (pairs with a failed read dropped),
    ``fixed_ms`` (per-tile costs common to both, e.g. transfer) added to each mean; 5-95 % bootstrap interval."""
    a, b = np.asarray(tile_ms, float), np.asarray(reference_ms, float)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if not len(a):
        return {"ratio": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    boot = (b[idx].mean(1) + fixed_ms) / (a[idx].mean(1) + fixed_ms)
    return {"ratio": float((b.mean() + fixed_ms) / (a.mean() + fixed_ms)), "low": float(np.percentile(boot, 5)),
            "high": float(np.percentile(boot, 95))}  # fmt: skip
