"""Batched region reads from JPEG-tiled TIFF/SVS: the tiles of many regions decoded in one nvImageCodec call.

Reading region by region (cuCIM's ``read_region``) pays a decoder call per region. Here a whole batch of regions,
from any number of slides and levels, becomes one list of JPEG tile streams (each tile once, however many regions
share it), decoded in one call, on the GPU (nvJPEG, hardware engines where the GPU has them) or with nvImageCodec's
CPU backend, its CPU twin. The regions are then cut from the decoded tiles with array slicing (CuPy on the GPU,
NumPy on the host).

A region whose level is not JPEG-tiled (JPEG 2000, LZW, OpenSlide formats) is not handled here: the caller reads
it with the slide's own backend. A tile that is missing, not JPEG, or that the decoder rejects fails its region
with :class:`~gapless.errors.SlideError` (the other regions of the batch are unaffected). Damaged data that a
decoder would turn into noise is caught before: the plans of these reads are vetted
(:meth:`gapless.pipeline.slides.tile_files.TileFiles.vet`, in the planner processes of
:mod:`gapless.pipeline.batch_read`); ``read(..., vet=True)`` vets here instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.tiff import PageLayout
from gapless.pipeline.slides.tile_files import RegionRequest, TileFiles, tile_pastes

__all__ = ["GPU_BACKENDS", "RegionRequest", "TiledJpegReader", "array_module"]

# nvImageCodec backends for GPU decoding: auto lets it choose per image (hardware engine, CUDA, hybrid); the others
# force one, for measurements (benchmarks/gpu_decode.py). The CUDA-only backend has rejected JPEG tiles it was given.
GPU_BACKENDS = {"auto": None, "cuda": "GPU_ONLY", "hardware": "HW_GPU_ONLY", "hybrid": "HYBRID_CPU_GPU"}


def array_module(device: str) -> Any:
    """NumPy for "cpu", CuPy for "cuda" (imported only then: CUDA stays optional)."""
    if device == "cpu":
        return np
    import cupy

    return cupy


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
        self.device = device
        if device == "cuda":
            kind = GPU_BACKENDS[backend]
            backends = None if kind is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))]
            self._decoder = nvimgcodec.Decoder(device_id=0, backends=backends)
        else:
            cpu = [nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)]
            self._decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, backends=cpu)
        self._codestream = nvimgcodec.CodeStream
        self.files = TileFiles(max_open)
        self.tiles_decoded = 0  # running count, for statistics

    def handles(self, request: RegionRequest) -> bool:
        """Whether this reader reads ``request`` (its level is a JPEG-tiled TIFF page)."""
        return self.files.jpeg_page(request) is not None

    def read(self, requests: list[RegionRequest], vet: bool = False) -> list[Any]:
        """Each request's region (h, w, 3) uint8, or the SlideError that failed it; ``vet``: check each tile's
        data first (:meth:`TileFiles.vet`)."""
        results: list[Any] = [None] * len(requests)
        streams: list[bytes] = []
        slot: dict[tuple[str, int, int], int] = {}  # (path, level, tile) -> position in ``streams``
        plans: list[tuple[int, PageLayout, np.ndarray, np.ndarray, np.ndarray] | None] = []
        for i, request in enumerate(requests):
            try:
                page = self.files.page(request)
                if page is None or not page.jpeg:
                    raise SlideError(f"{request.path}: level {request.level} is not a JPEG-tiled TIFF page")
                tx, ty, tiles = self.files.touched(request, page)
                for tile in tiles:
                    key = (request.path, request.level, int(tile))
                    if key not in slot:
                        stream = self.files.stream(request, page, int(tile), vet)  # raises before the key is kept
                        slot[key] = len(streams)
                        streams.append(stream)
                positions = np.array([slot[(request.path, request.level, int(t))] for t in tiles])
                plans.append((i, page, tx, ty, positions))
            except (OSError, ValueError, SlideError) as exc:
                results[i] = exc if isinstance(exc, SlideError) else SlideError(f"{request.path}: {exc}")
                plans.append(None)
        decoded = self._decode(streams) if streams else []
        self.tiles_decoded += len(streams)
        for plan in plans:
            if plan is not None:
                i, page, tx, ty, positions = plan
                results[i] = self._assemble(requests[i], page, tx, ty, [decoded[p] for p in positions])
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

    def _assemble(self, request: RegionRequest, page: PageLayout, tx: np.ndarray, ty: np.ndarray, tiles: list[Any]
                  ) -> Any:  # fmt: skip
        """Cut the region out of its decoded tiles (row-major over ``ty`` x ``tx``)."""
        lx, ly = request.level_origin
        if any(t is None for t in tiles):
            return SlideError(f"{request.path}: a JPEG tile of level {request.level} near level pixel ({lx}, {ly}) "
                              "cannot be decoded (corrupt data)")  # fmt: skip
        tw, th = page.tile_width, page.tile_height
        for tile in tiles:
            if tile.shape[0] < th or tile.shape[1] < tw or tile.shape[2] < 3:
                return SlideError(f"{request.path}: tile of level {request.level} decoded to {tile.shape}, "
                                  f"expected {th}x{tw}x3")  # fmt: skip
        xp = array_module(self.device)
        region = xp.empty((request.size[1], request.size[0], 3), dtype=xp.uint8)
        for tile, (sy, sx, h, w, dy, dx) in zip(tiles, tile_pastes(page, request, tx, ty).tolist()):
            region[dy : dy + h, dx : dx + w] = tile[sy : sy + h, sx : sx + w, :3]
        return region

    def close(self) -> None:
        self.files.close()

    def __reduce__(self) -> Any:
        raise TypeError("TiledJpegReader holds a decoder and open files: make one per process")
