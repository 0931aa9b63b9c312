"""Measure the reduced-DCT-scale read (:mod:`benchmarks.prototype_fastread`) against the cuCIM path, same tile specs.

Two measurements, both on this machine, both per strategy:

1. read + crop-resize, tile by tile in one process over the same TileSource specs: cuCIM ``read_region`` (what the
   loaders do today), the prototype's own tile decoder at full scale (control: same pixels, other decoder), and the
   prototype with DCT scaling up to 1/8. Also the decoded pixels per output pixel and the PSNR of the 224 px tile
   against the cuCIM tile (how much the smaller IDCT changes the pixels).
2. the real loaders (DataLoader baseline and DALI) built over a ``FastReadTileSource`` instead of the cuCIM
   ``TileSource``: tiles/s and CPU ms per tile (process + workers), DU and CU, with the verdict arithmetic.

    python -m benchmarks.prototype_compare [--index INDEX | --level-step 2] [--tiles 200] [--loaders baseline dali]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.config import BenchConfig, SlideSetConfig
from benchmarks.prototype_fastread import FastReadTileSource, virtual_region
from gapless.console import console, table, write_json
from pipeline.config import DataConfig

READS = ("cucim", "dct-scaled", "dct-scaled+linear")  # the read paths the loaders are measured with
PATHS = ("cucim", "cucim+2step-resize", "own-decoder", "dct-scaled", "dct-scaled+linear")


def two_step_resize(region: np.ndarray, size: int) -> np.ndarray:
    """Halve with INTER_AREA (OpenCV's fast integer path) while the region is at least twice the output, then
    bilinear for the remaining factor below 2: the resize fix alone, without touching the decoder."""
    import cv2

    while region.shape[0] >= 2 * size:
        region = cv2.resize(region, (region.shape[1] // 2, region.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if region.shape[0] == size:
        return region
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


class _ReadRun:
    """One strategy's specs read through every path, one spec at a time (so strategies can be interleaved)."""

    def __init__(self, cfg: DataConfig, n_tiles: int) -> None:
        from benchmarks.stages import plan_specs
        from pipeline.loader import build_source

        self.cfg = cfg
        source, _ = build_source(cfg)
        self.source = source
        self.paths = {"cucim": source, "cucim+2step-resize": source,
                      "own-decoder": FastReadTileSource.from_source(source, max_scale=1),
                      "dct-scaled": FastReadTileSource.from_source(source, max_scale=8),
                      "dct-scaled+linear": FastReadTileSource.from_source(source, max_scale=8,
                                                                          linear_finish=True)}  # fmt: skip
        self.specs, _ = plan_specs(source, n_tiles)
        for src in self.paths.values():  # open handles and readers first, and warm the page cache
            for spec in self.specs[:8]:
                src.read_spec(spec)
        self.times: dict[str, dict[str, list[float]]] = {p: {"read": [], "resize": []} for p in PATHS}
        self.quality: dict[str, list[float]] = {"cucim+2step-resize": [], "dct-scaled": [], "dct-scaled+linear": []}
        self.pixels: list[float] = []

    def step(self, k: int) -> None:
        from pipeline.resize import resize_square

        if k >= len(self.specs):
            return
        spec, bases = self.specs[k], {}
        names = list(self.paths)
        # Rotate the order per tile: the first path to touch a region pays for cold caches, so no path is always first.
        for name in names[k % len(names) :] + names[: k % len(names)]:
            src = self.paths[name]
            t0 = time.perf_counter()
            region = src.read_spec(spec)
            t1 = time.perf_counter()
            resize = two_step_resize if name == "cucim+2step-resize" else resize_square
            bases[name] = resize(region, self.cfg.tile_px)
            self.times[name]["read"].append(t1 - t0)
            self.times[name]["resize"].append(time.perf_counter() - t1)
        for name, values in self.quality.items():
            values.append(psnr(bases["cucim"], bases[name]))
        size = virtual_region(self.source.slides[spec.slide], spec.plan)[4]
        self.pixels.append((size / spec.plan.out_px) ** 2)

    def result(self) -> dict[str, Any]:
        ms = {p: {k: 1e3 * float(np.mean(v)) for k, v in t.items()} for p, t in self.times.items()}
        for p in PATHS:
            ms[p]["total"] = ms[p]["read"] + ms[p]["resize"]
        return {
            "tiles": len(self.specs),
            "ms_per_tile": ms,
            "pixels_per_output_pixel": {
                "cucim": float(np.mean([s.plan.pixels_per_output_pixel for s in self.specs])),
                "dct-scaled": float(np.mean(self.pixels)),
            },
            # PSNR of the 224 px tile against cuCIM + INTER_AREA (inf where both decode the same pixels)
            "psnr_db_median": {k: float(np.median(v)) for k, v in self.quality.items()},
            "psnr_db_min": {k: float(np.min(v)) for k, v in self.quality.items()},
        }


def compare_reads(cfgs: dict[str, DataConfig], n_tiles: int) -> dict[str, dict[str, Any]]:
    """ms per tile of read and resize for each read path and config (strategy), decoded pixels and PSNR; tile k
    of every strategy and path is timed before tile k + 1 of any, so all comparisons are paired in time."""
    import cv2

    cv2.setNumThreads(1)
    runs = {name: _ReadRun(cfg, n_tiles) for name, cfg in cfgs.items()}
    for k in range(n_tiles):
        for run in runs.values():
            run.step(k)
    return {name: run.result() for name, run in runs.items()}


def decode_scale_costs(path: str, level_dims: list[tuple[int, int]], tiles: int = 64, repeats: int = 5) -> dict:
    """ms to decode one JPEG tile of level 0 at each DCT scale (the ``tiles`` largest, i.e. tissue, tiles): how
    far reduced-scale decoding can go, since the entropy-coded data is parsed in full at every scale."""
    from benchmarks.prototype_fastread import SCALES, ScaledTileReader

    reader = ScaledTileReader(path, level_dims)
    try:
        counts = np.asarray(reader.pages[0].counts)
        chosen = np.argsort(counts)[-tiles:]
        cols = reader.pages[0].columns
        out = {}
        for k in SCALES:
            t0 = time.perf_counter()
            for _ in range(repeats):
                for i in chosen:
                    reader.decode_tile(0, int(i) % cols, int(i) // cols, k)
            out[f"1/{k}"] = 1e3 * (time.perf_counter() - t0) / (repeats * len(chosen))
        return {"ms_per_tile": out, "mean_kib": float(counts[chosen].mean() / 1024)}
    finally:
        reader.close()


def measure_loaders(
    data: DataConfig, bench: BenchConfig, loaders: list[str], strategies: list[str]
) -> list[dict[str, Any]]:
    """Throughput of each loader over the cuCIM source and the fast source, per strategy."""
    from benchmarks.throughput import loader_config, measure_loader
    from pipeline.loader import build_source, resolve_devices

    rows = []
    for loader in loaders:
        for strategy in strategies:
            for read in READS:
                cfg = loader_config(data, loader, strategy, bench.workers)

                def build(cfg: DataConfig = cfg, read: str = read) -> Any:
                    source, _ = build_source(cfg)
                    if read != "cucim":
                        source = FastReadTileSource.from_source(source, linear_finish=read.endswith("+linear"))
                    if cfg.loader == "baseline":
                        from pipeline.baseline import BaselineLoader

                        return BaselineLoader(cfg, source)
                    from pipeline.dali.loader import DaliLoader

                    device, read_device = resolve_devices(dataclasses.replace(cfg, read_device="cpu"))
                    return DaliLoader(cfg, source, device=device, read_device=read_device)

                warmup = bench.warmup(cfg.workers, cfg.prefetch)
                r = measure_loader(cfg, warmup, bench.batches_per_repeat, bench.repeats, build=build).as_dict()
                r["read"] = read
                rows.append(r)
                cpu = statistics.median(r["cpu_ms_per_tile"]) if r["cpu_ms_per_tile"] else float("nan")
                console.print(f"{loader:8s} {strategy:6s} {read:10s} {r['median']:7.1f} tiles/s "
                              f"[{r['min']:.1f}, {r['max']:.1f}]  cpu {cpu:.1f} ms/tile {r['error']}")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.slideset import prepare
    from benchmarks.verdict import strategy_costs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default="")
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--loaders", nargs="*", default=[], help="also run these loaders over each read path")
    parser.add_argument("--level-step", type=int, default=4, help="pyramid step of the synthetic slides (4 or 2)")
    parser.add_argument("--strategies", nargs="+", default=["du", "cu"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    bench = BenchConfig(workers=args.workers, batch_size=16, repeats=args.repeats, batches_per_repeat=args.batches)
    slides = prepare(SlideSetConfig(level_step=args.level_step), args.index)
    data = DataConfig(index=str(slides.index), batch_size=bench.batch_size, workers=bench.workers,
                      iterations_per_epoch=1_000_000)  # fmt: skip
    from pipeline.loader import load_slides

    entry = load_slides(slides.index)[0][0]
    decode = decode_scale_costs(entry.path, [(lv.width, lv.height) for lv in entry.levels])
    console.print(f"decode one {decode['mean_kib']:.0f} KiB tissue JPEG tile, ms by DCT scale: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in decode["ms_per_tile"].items()))  # fmt: skip
    cfgs = {s: dataclasses.replace(data, sampling=dataclasses.replace(data.sampling, strategy=s))
            for s in args.strategies}  # fmt: skip
    reads = compare_reads(cfgs, args.tiles)
    rows = [[s, p, r["ms_per_tile"][p]["read"], r["ms_per_tile"][p]["resize"], r["ms_per_tile"][p]["total"]]
            for s, r in reads.items() for p in PATHS]  # fmt: skip
    console.print(
        table("read + resize, ms per tile (one thread)", ["strategy", "path", "read", "resize", "total"], rows)
    )
    for s, r in reads.items():
        console.print(f"{s}: px/out px cucim {r['pixels_per_output_pixel']['cucim']:.2f} -> dct-scaled "
                      f"{r['pixels_per_output_pixel']['dct-scaled']:.2f}; PSNR vs cucim (median, min): "
                      + ", ".join(f"{k} {r['psnr_db_median'][k]:.1f}/{r['psnr_db_min'][k]:.1f} dB"
                                  for k in r["psnr_db_median"]))  # fmt: skip
    loaders = measure_loaders(data, bench, args.loaders, args.strategies) if args.loaders else []
    verdicts = []
    for read in READS:
        sel = [r for r in loaders if r["read"] == read]
        for metric in ("throughput", "cpu"):
            for c in strategy_costs(sel, metric=metric):
                verdicts.append({"read": read, **c.as_dict()})
                console.print(f"[bold]{read}:[/] {c.sentence({'cu': 'CU', 'du': 'DU'})}")
    result = {"decode_scale": decode, "reads": reads, "loaders": loaders, "verdicts": verdicts}
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
