"""Region reads per second per backend at the seven evaluation mpps, and decoded pixels per output pixel.

Run as ``python -m gapless.benchmarks.reads [--seconds S] [--cuda]``. It writes synthetic slides (SVS-like 4x
pyramid and a 2x pyramid) into a temporary directory, plans 224 px tiles at each target mpp on tissue and reads
the regions with each backend. ``--tile-check`` instead measures what the damaged-tile check costs per read on each
host reader and on the one a host read picks (``auto``): check on and off in alternating passes over the same
regions, and cold, each read on a freshly opened slide (cuCIM and OpenSlide vet the tiles a read touches once per
open slide, so a read whose tiles are new decodes them twice, as with 200,000 slides where few tiles are read twice).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gapless.pipeline.sampling.magnifications import EVAL_MPPS
from gapless.pipeline.slides.decoding import set_tile_check
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
    rate = reads / (time.perf_counter() - start)
    if reader is not None:
        reader.close()
    slide.close()
    return rate, ratio / reads


def _plans(slide, target: float, n: int) -> list:
    mask = tissue_mask_for_slide(slide)
    rng = np.random.default_rng(0)
    centre = (slide.dimensions[0] / 2, slide.dimensions[1] / 2)
    return [plan_region(slide.levels, target, 224, mask.sample_center(rng, 224 * target, 0.5) or centre)
            for _ in range(n)]  # fmt: skip


def check_cost(path: Path, backend: str, target: float, reads: int, passes: int = 6) -> dict[str, float]:
    """CPU microseconds of this process per 224 px read at ``target`` with the damaged-tile check off and on (median
    of alternating passes over the same regions; CPU time, so other processes on the machine do not count), and the
    same reads cold: each on a freshly opened slide (opening not counted), so that no tile was read or vetted
    before, as in an archive of many thousands of slides. ``backend="auto"``: the reader a host read gets."""
    slide = open_slide(path, backend=backend)
    plans = _plans(slide, target, reads)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(passes):
        for mode in ("off", "on"):
            set_tile_check(mode == "on")
            start = time.process_time()
            for p in plans:
                slide.read_region(p.location, p.level, (p.read_size, p.read_size))
            times[mode].append((time.process_time() - start) / reads * 1e6)
    result: dict[str, float] = {mode: float(np.median(t)) for mode, t in times.items()}
    result["reader"] = slide.backend_name
    slide.close()
    for mode in ("off", "on"):
        set_tile_check(mode == "on")
        spent = 0.0
        for p in plans:
            with open_slide(path, backend=backend) as fresh:
                start = time.process_time()
                fresh.read_region(p.location, p.level, (p.read_size, p.read_size))
                spent += time.process_time() - start
        result[f"cold {mode}"] = spent / reads * 1e6
    set_tile_check(True)
    return result


def _print_check_costs(path: Path, reads: int) -> None:
    print(f"damaged-tile check, CPU us per 224 px read ({reads} reads per pass, median of 6 alternating passes;")
    print("cold: one pass, each read on a freshly opened slide)")
    print(f"{'backend':17}{'mpp':>6}{'off':>8}{'on':>8}{'cost':>7}{'cost %':>8}{'cold off':>10}{'cold on':>9}"
          f"{'cold cost':>11}")  # fmt: skip
    for backend in ("cucim", "openslide", "tifffile", "auto"):
        for target in (0.25, 0.5, 1.0):
            r = check_cost(path, backend, target, reads)
            name = f"auto ({r['reader']})" if backend == "auto" else backend
            cost, cold = r["on"] - r["off"], r["cold on"] - r["cold off"]
            print(f"{name:17}{target:6g}{r['off']:8.0f}{r['on']:8.0f}{cost:7.0f}{100 * cost / r['off']:7.1f}%"
                  f"{r['cold off']:10.0f}{r['cold on']:9.0f}{cold:11.0f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per (backend, mpp) cell")
    parser.add_argument("--size-mm", type=float, default=2.0, help="side of the square synthetic slide")
    parser.add_argument("--cuda", action="store_true", help="also time GPU decoding (batched nvImageCodec, cuCIM)")
    parser.add_argument("--tile-check", action="store_true", help="measure the damaged-tile check per host reader")
    parser.add_argument("--reads", type=int, default=300, help="reads per pass of --tile-check")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        side = args.size_mm * 1000
        if args.tile_check:
            spec = SlideSpec(side, side, 0.25, "regular", 1)
            _print_check_costs(write_slide(Path(tmp) / "s4.svs", spec, fmt="svs", use_he_texture=True), args.reads)
            return
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


if __name__ == "__main__":
    main()
