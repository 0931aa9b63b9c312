"""Region reads per second per backend at the seven evaluation mpps, and decoded pixels per output pixel.

Run as ``python -m gapless.benchmarks.reads [--slides N] [--seconds S] [--cuda]``. It writes synthetic slides
(SVS-like 4x pyramid and a 2x pyramid) into a temporary directory, plans 224 px tiles at each target mpp on tissue
and reads the regions with each backend. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gapless.pipeline.sampling.magnifications import EVAL_MPPS
from gapless.pipeline.slides.planning import plan_region
from gapless.pipeline.slides.slide import open_slide
from gapless.pipeline.slides.tiled_decode import RegionRequest, TiledJpegReader
from gapless.pipeline.slides.tissue import tissue_mask_for_slide
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide

BATCH = 32  # regions per call of the batched reader


def bench(path: Path, backend: str, target: float, seconds: float, device: str = "cpu") -> tuple[float, float]:
    """(reads per second, decoded region pixels per output pixel) for 224 px tiles at ``target`` mpp.

    ``backend="batched"`` reads ``BATCH`` regions per call with :class:`TiledJpegReader` (one decode call)."""
    slide = open_slide(path, backend="auto" if backend == "batched" else backend)
    mask = tissue_mask_for_slide(slide)
    rng = np.random.default_rng(0)
    reader = TiledJpegReader(device) if backend == "batched" else None
    reads, ratio, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        plans = []
        for _ in range(BATCH if reader else 1):
            centre = mask.sample_center(rng, 224 * target, 0.5) or (slide.dimensions[0] / 2, slide.dimensions[1] / 2)
            plans.append(plan_region(slide.levels, target, 224, centre))
        if reader is None:
            plan = plans[0]
            slide.read_region(plan.location, plan.level, (plan.read_size, plan.read_size), device=device)
        else:
            levels = [slide.levels[p.level] for p in plans]
            reader.read([RegionRequest(str(path), p.location, p.level, (p.read_size, p.read_size), lv.downsample,
                                       (lv.width, lv.height)) for p, lv in zip(plans, levels)])  # fmt: skip
        reads += len(plans)
        ratio += sum(p.pixels_per_output_pixel for p in plans)
    return reads / (time.perf_counter() - start), ratio / reads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per (backend, mpp) cell")
    parser.add_argument("--size-mm", type=float, default=2.0, help="side of the square synthetic slide")
    parser.add_argument("--cuda", action="store_true", help="also time GPU decoding (batched nvImageCodec, cuCIM)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        side = args.size_mm * 1000
        slides = {
            "4x": write_slide(Path(tmp) / "s4.tiff", SlideSpec(side, side, 0.25, "regular", 1), level_step=4),
            "2x": write_slide(Path(tmp) / "s2.tiff", SlideSpec(side, side, 0.25, "regular", 1), level_step=2),
        }
        runs = [("cucim", "cpu"), ("openslide", "cpu"), ("batched", "cpu")]
        runs += [("batched", "cuda"), ("cucim", "cuda")] if args.cuda else []
        print(f"224 px tiles, {args.size_mm:g} mm slide at 0.25 mpp, {args.seconds:g} s per cell")
        print(f"{'pyramid':8}{'backend':16}" + "".join(f"{t:>9g}" for t in EVAL_MPPS) + "     mean")
        for pyramid, path in slides.items():
            ratios = []
            for backend, device in runs:
                rates = []
                for target in EVAL_MPPS:
                    rate, ratio = bench(path, backend, target, args.seconds, device)
                    rates.append(rate)
                    ratios.append(ratio) if (backend, device) == runs[0] else None
                name = f"{backend}/{device}"
                print(f"{pyramid:8}{name:16}" + "".join(f"{r:9.0f}" for r in rates) + f"{np.mean(rates):9.0f}")
            print(f"{pyramid:8}{'px/out px':16}" + "".join(f"{r:9.2f}" for r in ratios) + f"{np.mean(ratios):9.2f}")
        _bench_index_load(Path(tmp))


def _bench_index_load(tmp: Path, n: int = 1000) -> None:
    """Time SlideIndex.load on an index of ``n`` slides (copies of one entry, masks of 250 x 250 px)."""
    from gapless.pipeline.slides.index import SlideIndex, write_index

    mask = np.packbits(np.ones((250, 250), bool))
    entry = dict(status="ok", reason="", size=1, mtime=1.0, mpp=0.25, tissue_fraction=1.0, mask_mpp=8.0,
                 mask_shape=(250, 250), mask=mask, levels=[(8000, 8000, 1.0, 0.25), (2000, 2000, 4.0, 1.0)])  # fmt: skip
    entries = [dict(entry, path=f"/slides/s{i}.svs", label="a", patient=f"p{i // 2}") for i in range(n)]
    write_index(tmp / "big.h5", entries, 8.0)
    start = time.perf_counter()
    index = SlideIndex.load(tmp / "big.h5")
    print(f"SlideIndex.load: {len(index.records)} slides in {1000 * (time.perf_counter() - start):.0f} ms")


if __name__ == "__main__":
    main()
