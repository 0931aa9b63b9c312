"""Which JPEG decoder to use for batched region reads: nvImageCodec's backends, cuCIM's cuslide2 plugin and DALI's
own decoder, and what the check of each tile's data costs.

Run as ``python -m gapless.benchmarks.gpu_decode [--batch N] [--repeats R] [--he-texture]``. It writes one
synthetic 4x-pyramid slide (``--he-texture``: its stroma textured with real H&E pixels), plans ``--batch`` 224 px
tiles at the seven evaluation mpps, and times for each decoder the first call (start-up) and the median of
``--repeats`` calls: whole region reads (:class:`TiledJpegReader`: file reads, decode, assembly;
:class:`Cuslide2Reader`, in a fresh process since cuCIM picks its plugin once per process) and the decode alone.
DALI's ``decoders.image(device="mixed")`` decodes the same tile streams as a reference for what nvJPEG does on this
GPU. The last line is the CPU time of the strict check of each tile (:meth:`TileFiles.vet`). Prints figures;
asserts nothing. Without CUDA only the CPU rows run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gapless.pipeline.sampling.magnifications import EVAL_MPPS
from gapless.pipeline.slides.planning import plan_region
from gapless.pipeline.slides.slide import open_slide
from gapless.pipeline.slides.tile_files import TileFiles
from gapless.pipeline.slides.tiled_decode import GPU_BACKENDS, RegionRequest, TiledJpegReader
from gapless.pipeline.slides.tissue import tissue_mask_for_slide
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide


def plan_requests(path: Path, n: int, seed: int = 0) -> list[RegionRequest]:
    slide = open_slide(path)
    mask = tissue_mask_for_slide(slide)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        target = EVAL_MPPS[k % len(EVAL_MPPS)]
        centre = mask.sample_center(rng, 224 * target, 0.5) or (slide.dimensions[0] / 2, slide.dimensions[1] / 2)
        p = plan_region(slide.levels, target, 224, centre)
        lv = slide.levels[p.level]
        out.append(RegionRequest(str(path), p.location, p.level, (p.read_size, p.read_size), lv.downsample,
                                 (lv.width, lv.height)))  # fmt: skip
    return out


def timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, float]:
    """(seconds of the first call, median seconds of the next ``repeats``)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def dali_decode(streams: list[bytes]) -> Callable[[], Any]:
    """A DALI pipeline decoding ``streams`` as one batch with nvJPEG (``device="mixed"``); returns its run()."""
    from nvidia.dali import fn, pipeline_def

    arrays = [np.frombuffer(s, np.uint8) for s in streams]

    @pipeline_def(batch_size=len(arrays), num_threads=4, device_id=0, prefetch_queue_depth=1)
    def pipe():  # type: ignore[no-untyped-def]
        return fn.decoders.image(fn.external_source(source=lambda: arrays, batch=True), device="mixed")

    p = pipe()
    p.build()
    return p.run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="regions per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first")
    parser.add_argument("--he-texture", action="store_true", help="texture the slide with real H&E pixels")
    args = parser.parse_args(argv)
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        has_cuda, sync = True, lambda: cupy.cuda.runtime.deviceSynchronize()
    except Exception:
        has_cuda, sync = False, lambda: None
    with tempfile.TemporaryDirectory() as tmp:
        spec = SlideSpec(2000.0, 2000.0, 0.25, "regular", 1)
        path = write_slide(Path(tmp) / "s4.tiff", spec, level_step=4, use_he_texture=args.he_texture)
        requests = plan_requests(path, args.batch)
        print(f"{args.batch} regions of 224 px tiles at {', '.join(map(str, EVAL_MPPS))} mpp; ms per call")
        print(f"{'decoder':24}{'first':>10}{'median':>10}{'regions/s':>12}{'decode ms':>11}{'tiles':>7}")
        rows = [("cpu", "auto")] + ([("cuda", b) for b in GPU_BACKENDS] if has_cuda else [])
        streams: list[bytes] = []
        for device, backend in rows:
            name = f"nvimgcodec {device}/{backend}"
            try:
                reader = TiledJpegReader(device, backend=backend)
                first, med = timed(lambda r=reader: r.read(requests), args.repeats, sync)
                n_tiles = reader.tiles_decoded // (args.repeats + 1)
                failed = sum(isinstance(region, Exception) for region in reader.read(requests))
                streams = streams or _streams(reader, requests)
                _, dec = timed(lambda r=reader, s=streams: r._decode(s), args.repeats, sync)
                # A decoder that rejects the tiles is fast for nothing: its figures are not comparable.
                note = f"  {failed} of {len(requests)} regions failed to decode" if failed else ""
                print(f"{name:24}{1e3 * first:10.1f}{1e3 * med:10.1f}{args.batch / med:12.0f}{1e3 * dec:11.1f}"
                      f"{n_tiles:7d}{note}")  # fmt: skip
                reader.close()
            except Exception as exc:  # one decoder failing must not hide the others
                print(f"{name:24} failed: {type(exc).__name__}: {exc}")
        if has_cuda and streams:
            try:
                first, med = timed(dali_decode(streams), args.repeats, sync)
                print(f"{'dali decoders.image mixed':24}{1e3 * first:10.1f}{1e3 * med:10.1f}{'':>12}{1e3 * med:11.1f}"
                      f"{len(streams):7d}")  # fmt: skip
            except Exception as exc:
                print(f"dali decoders.image failed: {type(exc).__name__}: {exc}")
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as fresh:
            for device in ["cpu"] + (["cuda"] if has_cuda else []):
                print(fresh.submit(cuslide2_row, requests, device, args.repeats).result())
        files = TileFiles()
        start = time.process_time()
        for request in requests:
            files.vet(request)
        cpu = time.process_time() - start
        print(f"tile check: {1e3 * cpu / max(1, files.tiles_vetted):.3f} CPU-ms per tile, {files.tiles_vetted} tiles "
              f"({1e3 * cpu / len(requests):.2f} per region)")  # fmt: skip
        files.close()


def cuslide2_row(requests: list[RegionRequest], device: str, repeats: int) -> str:
    """One table row for cuslide2 batched reads (run in a fresh process)."""
    name = f"cuslide2 {device}"
    try:
        from gapless.pipeline.slides.cuslide2 import Cuslide2Reader

        reader = Cuslide2Reader(device)
        sync = _sync(device)
        first, med = timed(lambda: reader.read(requests), repeats, sync)
        failed = sum(isinstance(region, Exception) for region in reader.read(requests))
        note = f"  {failed} of {len(requests)} regions failed" if failed else ""
        calls = reader.calls // (repeats + 2)
        return f"{name:24}{1e3 * first:10.1f}{1e3 * med:10.1f}{len(requests) / med:12.0f}{'':>11}{'':>7}  " \
               f"{calls} calls per batch{note}"  # fmt: skip
    except Exception as exc:
        return f"{name:24} failed: {type(exc).__name__}: {exc}"


def _sync(device: str) -> Callable[[], None]:
    if device == "cpu":
        return lambda: None
    import cupy

    return lambda: cupy.cuda.runtime.deviceSynchronize()


def _streams(reader: TiledJpegReader, requests: list[RegionRequest]) -> list[bytes]:
    """The distinct tile streams the requests decode (what one batched decode call receives)."""
    seen, out = set(), []
    for r in requests:
        page = reader.files.page(r)
        for t in reader.files.touched(r, page)[2]:
            if (r.level, int(t)) not in seen:
                seen.add((r.level, int(t)))
                out.append(reader.files.stream(r, page, int(t)))  # tables already spliced in
    return out


if __name__ == "__main__":
    main()
