"""Region reads with cuCIM's nvImageCodec plugin (``cucim.kit.cuslide2``): batched ROI decoding of TIFF/SVS on the
GPU, or with its CPU backend (the CPU twin the tests check).

cuCIM picks its TIFF plugin once per process, when it opens its first image: ``cuslide2`` only if the environment
variable ``ENABLE_CUSLIDE2=1`` is set then and ``libnvimgcodec.so.0`` can be loaded. :func:`enable_cuslide2` does
both (it loads the library from the ``nvidia-nvimgcodec-cu12`` wheel by path, since the dynamic loader's search path
is fixed when a process starts) and must run before anything in the process opens a slide with cuCIM; processes
started afterwards inherit the variable. :func:`cuslide2_loaded` tells which plugin the process really loaded.

One call reads many regions of one slide and level, all of one size: :class:`Cuslide2Reader` groups a batch by
(slide, level, size bucket), reads each group's regions at the bucket size (moved inside the level where needed)
and cuts the requested regions out. cuCIM's reads are not safe to run from several threads at once, so groups are
read one after another. A batched call does not say which of its regions failed to decode, so the tiles are vetted
before (:class:`gapless.pipeline.batch_read.PlanVetter`); a group of one region is read with a single-region call,
which raises.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from gapless.errors import RunError, SlideError
from gapless.pipeline.slides.planning import level0_location
from gapless.pipeline.slides.tiff import is_tiff
from gapless.pipeline.slides.tile_files import RegionRequest

PLUGIN = "cucim.kit.cuslide2"


def enable_cuslide2() -> None:
    """Select cuCIM's cuslide2 plugin for this process (and the processes it starts from now on)."""
    from nvidia import nvimgcodec

    os.environ["ENABLE_CUSLIDE2"] = "1"
    ctypes.CDLL(str(Path(nvimgcodec.__file__).parent / "libnvimgcodec.so.0"), mode=ctypes.RTLD_GLOBAL)


def cuslide2_loaded() -> bool | None:
    """True or False once cuCIM has loaded a TIFF plugin in this process (cuslide2 or the default), else None."""
    with open("/proc/self/maps") as maps:
        plugins = {line.rsplit("/", 1)[-1].split("@")[0] for line in maps if "cucim.kit.cuslide" in line}
    return (PLUGIN in plugins) if plugins else None


def bucket_size(size: int, bucket_px: int) -> int:
    """``size`` rounded up to a multiple of ``bucket_px`` (the read size shared by a group)."""
    return max(bucket_px, math.ceil(size / bucket_px) * bucket_px)


class Cuslide2Reader:
    """``reader.read([RegionRequest, ...]) -> [region | SlideError, ...]`` through cuslide2 batched reads.

    ``device="cuda"`` decodes on the GPU and returns CuPy arrays, ``"cpu"`` returns NumPy arrays. ``bucket_px``:
    read sizes are rounded up to a multiple of it so that regions of nearby sizes share a call (1: exact sizes).
    Up to ``max_open`` slides stay open. Not picklable: make one per process.
    """

    def __init__(self, device: str = "cuda", bucket_px: int = 64, max_open: int = 64, num_workers: int = 4) -> None:
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device: '{device}' is not one of cuda, cpu")
        enable_cuslide2()
        self.device, self.bucket_px = device, max(1, int(bucket_px))
        self.max_open, self.num_workers = int(max_open), max(1, int(num_workers))
        self._images: OrderedDict[str, Any] = OrderedDict()
        self._levels: OrderedDict[str, tuple[tuple[int, int], ...]] = OrderedDict()  # per slide: level sizes
        self.calls = 0  # running count of read calls, for statistics

    def handles(self, request: RegionRequest) -> bool:
        """Whether this reader reads ``request``: a TIFF-based slide (SVS, generic and Philips TIFF) whose level
        cuslide2 sees with the request's size; other slides go to the slide's own backend."""
        if request.path not in self._levels:
            levels: tuple[tuple[int, int], ...] = ()
            try:
                if is_tiff(Path(request.path)):
                    dims = self._image(request.path).resolutions["level_dimensions"]
                    levels = tuple((int(w), int(h)) for w, h in dims)
            except (OSError, RuntimeError, ValueError):
                pass
            self._levels[request.path] = levels
            while len(self._levels) > 16 * self.max_open:  # bounded, however many slides the index holds
                self._levels.popitem(last=False)
        levels = self._levels[request.path]
        return request.level < len(levels) and levels[request.level] == tuple(request.level_size)

    def read(self, requests: list[RegionRequest]) -> list[Any]:
        """Each request's region (h, w, 3) uint8, or the SlideError that failed it."""
        results: list[Any] = [None] * len(requests)
        groups: dict[tuple[str, int, int, int], list[tuple[int, tuple[int, int], tuple[int, int]]]] = {}
        for i, request in enumerate(requests):
            (lw, lh), (w, h) = request.level_size, request.size
            side = bucket_size(max(w, h), self.bucket_px)
            bw, bh = min(side, lw), min(side, lh)  # a level smaller than the bucket is read whole
            lx, ly = request.level_origin
            bx, by = min(lx, lw - bw), min(ly, lh - bh)  # the bucket-sized read stays inside the level
            origin = level0_location((bx, by), request.downsample)
            groups.setdefault((request.path, request.level, bw, bh), []).append((i, origin, (lx - bx, ly - by)))
        for (path, level, bw, bh), members in groups.items():
            try:
                batch = self._read_group(path, level, (bw, bh), [origin for _, origin, _ in members])
            except (OSError, RuntimeError, ValueError) as exc:
                for i, _, _ in members:
                    results[i] = SlideError(f"{path}: cuslide2 cannot read level {level} at {requests[i].location} "
                                            f"({exc})")  # fmt: skip
                continue
            for k, (i, _, (dx, dy)) in enumerate(members):
                w, h = requests[i].size
                results[i] = batch[k][dy : dy + h, dx : dx + w, :3]
        if self.device == "cuda":
            import cupy

            cupy.cuda.get_current_stream().synchronize()
        return results

    def _read_group(self, path: str, level: int, size: tuple[int, int], origins: list[tuple[int, int]]) -> Any:
        """The regions at ``origins`` as one (n, h, w, c) array (CuPy with ``device="cuda"``)."""
        image = self._image(path)
        self.calls += 1
        if len(origins) == 1:  # the single-region call raises on a decode failure
            region = image.read_region(origins[0], size, level, device=self.device)
            return self._array(region)[None]
        regions = image.read_region(origins, size, level, device=self.device, batch_size=len(origins),
                                    num_workers=min(self.num_workers, len(origins)))  # fmt: skip
        return self._array(next(iter(regions)))

    def _array(self, region: Any) -> Any:
        if self.device == "cuda":
            import cupy

            return cupy.asarray(region)
        import numpy as np

        return np.asarray(region)

    def _image(self, path: str) -> Any:
        image = self._images.get(path)
        if image is None:
            from cucim import CuImage

            image = CuImage(path)
            if cuslide2_loaded() is False:
                raise RunError("gpu_decode=cuslide2: cuCIM had already loaded its default TIFF plugin in this "
                               "process; start it with ENABLE_CUSLIDE2=1 and nvidia/nvimgcodec (of the "
                               "nvidia-nvimgcodec-cu12 wheel) on LD_LIBRARY_PATH")  # fmt: skip
            self._images[path] = image
            while len(self._images) > self.max_open:
                self._images.popitem(last=False)[1].close()
        else:
            self._images.move_to_end(path)
        return image

    def close(self) -> None:
        for image in self._images.values():
            image.close()
        self._images.clear()

    def __reduce__(self) -> Any:
        raise TypeError("Cuslide2Reader holds open slides: make one per process")
