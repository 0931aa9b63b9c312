"""Batched region reads from JPEG-tiled TIFF/SVS: the tiles of many regions decoded in one nvImageCodec call.

Reading region by region (cuCIM's ``read_region``) pays a decoder call per region. Here a whole batch of regions,
from any number of slides and levels, becomes one list of JPEG tile streams (each tile once, however many regions share it), decoded in one call, on the GPU (nvJPEG,
hardware engines where the GPU has them) or with nvImageCodec's CPU backend, its CPU twin. The regions are then
cut from the decoded tiles with array slicing (CuPy on the GPU, NumPy on the host).

A region whose level is not JPEG-tiled (JPEG 2000, LZW, OpenSlide formats) is not handled here: the caller reads
it with the slide's own backend. A tile that is missing, not JPEG, or that the decoder rejects fails its region
with :class:`~gapless.errors.SlideError` (the other regions of the batch are unaffected).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.backends import PageLayout, tiff_layout

# nvImageCodec backends for GPU decoding: auto lets it choose per image (hardware engine, CUDA, hybrid); the others
# force one, for measurements (benchmarks/gpu_decode.py). The CUDA-only backend has rejected JPEG tiles it was given.
GPU_BACKENDS = {"auto": None, "cuda": "GPU_ONLY", "hardware": "HW_GPU_ONLY", "hybrid": "HYBRID_CPU_GPU"}


@dataclass(frozen=True)
class RegionRequest:
    """One region: ``size`` (w, h) pixels of pyramid level ``level`` at level-0 ``location`` (x, y)."""

    path: str
    location: tuple[int, int]
    level: int
    size: tuple[int, int]
    downsample: float
    level_size: tuple[int, int]  # (width, height) of the level: it finds the TIFF page


def array_module(device: str) -> Any:
    """NumPy for "cpu", CuPy for "cuda" (imported only then: CUDA stays optional)."""
    if device == "cpu":
        return np
    import cupy

    return cupy


def jpeg_stream(page: PageLayout, data: bytes) -> bytes:
    """A tile's complete JPEG stream: abbreviated tiles get the page's shared tables spliced in (SOI..tables, then
    the tile's own segments after its SOI), as a TIFF reader does with the JPEGTables tag."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start-of-image marker")
    if page.jpeg_tables and len(page.jpeg_tables) > 4:
        return page.jpeg_tables[:-2] + data[2:]
    return data


class TiledJpegReader:
    """``reader.read([RegionRequest, ...]) -> [region | SlideError, ...]``: many regions, one decode call.

    ``device="cuda"`` decodes on the GPU and returns CuPy arrays; ``"cpu"`` uses the CPU backend and returns NumPy
    arrays. Page layouts and file descriptors are cached per path (``max_open`` files stay open). Not picklable:
    make one per process.
    """

    def __init__(self, device: str = "cuda", max_open: int = 64, backend: str = "auto") -> None:
        from nvidia import nvimgcodec

        if device not in ("cuda", "cpu"):
            raise ValueError(f"device: '{device}' is not one of cuda, cpu")
        if backend not in GPU_BACKENDS:
            raise ValueError(f"backend: '{backend}' is not one of {', '.join(GPU_BACKENDS)}")
        self.device, self.max_open = device, int(max_open)
        if device == "cuda":
            kind = GPU_BACKENDS[backend]
            backends = None if kind is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))]
            self._decoder = nvimgcodec.Decoder(device_id=0, backends=backends)
        else:
            cpu = [nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)]
            self._decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, backends=cpu)
        self._codestream = nvimgcodec.CodeStream
        self._files: dict[str, tuple[int, dict[tuple[int, int], PageLayout]]] = {}
        self.tiles_decoded = 0  # running count, for statistics

    def handles(self, request: RegionRequest) -> bool:
        """Whether this reader reads ``request`` (its level is a JPEG-tiled TIFF page)."""
        try:
            page = self._page(request)
        except (OSError, SlideError):
            return False
        return page is not None and page.jpeg

    def read(self, requests: list[RegionRequest]) -> list[Any]:
        """Each request's region (h, w, 3) uint8, or the SlideError that failed it."""
        results: list[Any] = [None] * len(requests)
        streams: list[bytes] = []
        slot: dict[tuple[str, int, int], int] = {}  # (path, level, tile) -> position in ``streams``
        plans: list[tuple[int, PageLayout, int, int, np.ndarray, np.ndarray, np.ndarray] | None] = []
        for i, request in enumerate(requests):
            try:
                fd, page = self._fd(request.path), self._page(request)
                if page is None or not page.jpeg:
                    raise SlideError(f"{request.path}: level {request.level} is not a JPEG-tiled TIFF page")
                lx, ly = int(request.location[0] / request.downsample), int(request.location[1] / request.downsample)
                tx, ty, tiles = page.tiles_touched(lx, ly, *request.size)
                for tile in tiles:
                    key = (request.path, request.level, int(tile))
                    if key not in slot:
                        stream = self._tile_stream(fd, page, int(tile), request)  # raises before the key is kept
                        slot[key] = len(streams)
                        streams.append(stream)
                positions = np.array([slot[(request.path, request.level, int(t))] for t in tiles])
                plans.append((i, page, lx, ly, tx, ty, positions))
            except (OSError, ValueError, SlideError) as exc:
                results[i] = exc if isinstance(exc, SlideError) else SlideError(f"{request.path}: {exc}")
                plans.append(None)
        decoded = self._decode(streams) if streams else []
        self.tiles_decoded += len(streams)
        for plan in plans:
            if plan is not None:
                i, page, lx, ly, tx, ty, positions = plan
                results[i] = self._assemble(requests[i], page, lx, ly, tx, ty, [decoded[p] for p in positions])
        if self.device == "cuda":
            import cupy

            cupy.cuda.get_current_stream().synchronize()  # regions complete before another stream reads them
        return results

    def _decode(self, streams: list[bytes]) -> list[Any]:
        images = self._decoder.decode([self._codestream(s) for s in streams])
        if self.device == "cuda":
            import cupy

            return [None if im is None else cupy.asarray(im) for im in images]
        return [None if im is None else np.asarray(im.cpu()) for im in images]

    def _assemble(self, request: RegionRequest, page: PageLayout, lx: int, ly: int, tx: np.ndarray,
                  ty: np.ndarray, tiles: list[Any]) -> Any:  # fmt: skip
        """Cut the region out of its decoded tiles (row-major over ``ty`` x ``tx``)."""
        if any(t is None for t in tiles):
            return SlideError(f"{request.path}: a JPEG tile of level {request.level} near level pixel ({lx}, {ly}) "
                              "cannot be decoded (corrupt data)")  # fmt: skip
        xp = array_module(self.device)
        w, h = request.size
        region = xp.empty((h, w, 3), dtype=xp.uint8)
        tw, th = page.tile_width, page.tile_height
        k = 0
        for row in ty:
            for col in tx:
                # Intersection of tile (col, row) with the region, in level pixels.
                x0, y0 = max(lx, int(col) * tw), max(ly, int(row) * th)
                x1, y1 = min(lx + w, (int(col) + 1) * tw), min(ly + h, (int(row) + 1) * th)
                tile = tiles[k]
                k += 1
                if tile.shape[0] < th or tile.shape[1] < tw or tile.shape[2] < 3:
                    return SlideError(f"{request.path}: tile of level {request.level} decoded to {tile.shape}, "
                                      f"expected {th}x{tw}x3")  # fmt: skip
                src = tile[y0 - int(row) * th : y1 - int(row) * th, x0 - int(col) * tw : x1 - int(col) * tw, :3]
                region[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = src
        return region

    def _tile_stream(self, fd: int, page: PageLayout, tile: int, request: RegionRequest) -> bytes:
        if tile >= len(page.offsets) or page.counts[tile] <= 0:
            raise SlideError(f"{request.path}: tile {tile} of level {request.level} has no data (missing)")
        data = os.pread(fd, int(page.counts[tile]), int(page.offsets[tile]))
        if len(data) != int(page.counts[tile]):
            raise SlideError(f"{request.path}: tile {tile} of level {request.level} is cut short (truncated file)")
        try:
            return jpeg_stream(page, data)
        except ValueError as exc:
            raise SlideError(f"{request.path}: tile {tile} of level {request.level}: {exc} (corrupt)") from exc

    def _fd(self, path: str) -> int:
        return self._open(path)[0]

    def _page(self, request: RegionRequest) -> PageLayout | None:
        return self._open(request.path)[1].get(tuple(request.level_size))

    def _open(self, path: str) -> tuple[int, dict[tuple[int, int], PageLayout]]:
        entry = self._files.get(path)
        if entry is None:
            pages = {(p.width, p.height): p for p in (tiff_layout(Path(path)) or [])}
            entry = (os.open(path, os.O_RDONLY), pages)
            self._files[path] = entry
            while len(self._files) > self.max_open:
                os.close(self._files.pop(next(iter(self._files)))[0])
        return entry

    def close(self) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()

    def __reduce__(self) -> Any:
        raise TypeError("TiledJpegReader holds a decoder and open files: make one per process")
