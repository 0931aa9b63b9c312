"""One slide interface over four readers: cuCIM (CPU or GPU decode), OpenSlide, tifffile and wsidicom.

Which readers are tried, in which order, and where the mpp comes from depends on the format
(:mod:`gapless.pipeline.slides.formats`); a reader that fails gives way to the next, and a slide no reader opens is
an error listing every reader's reason. A :class:`Slide` exposes its pyramid as :class:`Level` records (size,
downsample and mpp per level) and reads regions with ``read_region(location, level, size)``: ``location`` in level-0
pixels (x, y), ``size`` (w, h) in pixels of the requested level, as cuCIM and OpenSlide both define it. Every
failure caused by the file raises :class:`~gapless.errors.SlideError` naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError, SlideError
from gapless.pipeline.slides.formats import SlideFormat, detect_format, slide_target
from gapless.pipeline.slides.planning import level0_location, level_origin

BACKENDS = ("auto", "cucim", "openslide", "tifffile", "wsidicom")
DEVICES = ("cpu", "cuda")


class RegionOutsideError(ValueError):
    """A read that leaves its level: planning keeps every region inside, so this is a bug, not bad data."""


class SingleLevelWarning(UserWarning):
    """A slide without a pyramid: readable, but every magnification decodes level-0 pixels (slow)."""


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels, downsample from level 0, and physical pixel size."""

    index: int
    width: int
    height: int
    downsample: float
    mpp: float


class Slide:
    """An open whole-slide image; not picklable (the handle is native): open one per process."""

    def __init__(self, path: Path, backend: Any, base_mpp: float, format_name: str = "") -> None:
        self.path = path
        self.format = format_name
        self.backend_name = backend.name
        self._backend = backend
        self.levels = [
            Level(i, w, h, float(ds), base_mpp * float(ds))
            for i, ((w, h), ds) in enumerate(zip(backend.dimensions, backend.downsamples))
        ]
        self.mpp = base_mpp

    def __repr__(self) -> str:
        dims = ", ".join(f"{lv.width}x{lv.height}@{lv.mpp:.3g}" for lv in self.levels)
        return f"Slide({self.path.name!r}, {self.backend_name}, levels=[{dims}])"

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.levels[0].width, self.levels[0].height

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int], device: str = "cpu") -> Any:
        """Pixels (h, w, 3) uint8 of ``size`` pixels of ``level``, from the level pixel that level-0 ``location``
        lies in (:func:`~gapless.pipeline.slides.planning.level_origin`).

        ``device="cuda"`` returns a CuPy array: cuCIM decodes on the GPU, the other readers decode on the host and
        the region is uploaded. A region that leaves the level raises :class:`RegionOutsideError` (planning keeps
        regions inside, so it is a bug worth hearing about); a failure the file causes raises :class:`SlideError`
        naming it.
        """
        if not 0 <= level < len(self.levels):
            raise ValueError(f"{self.path}: level {level} does not exist (the slide has {len(self.levels)})")
        x, y = int(location[0]), int(location[1])
        if x < 0 or y < 0:
            raise RegionOutsideError(f"{self.path}: region at level-0 ({x}, {y}) lies outside the slide")
        return self.read_pixels(level_origin((x, y), self.levels[level].downsample), level, size, device)

    def read_pixels(self, origin: tuple[int, int], level: int, size: tuple[int, int], device: str = "cpu") -> Any:
        """:meth:`read_region` from level pixel ``origin`` (x, y) of ``level``: the region is then the same
        whichever reader opened the slide (readers differ in the last bits of a level's downsample: cuCIM keeps it
        in single precision), so a caller that knows the level pixel it planned (the tile source, from its index's
        levels) passes it here."""
        if not 0 <= level < len(self.levels):
            raise ValueError(f"{self.path}: level {level} does not exist (the slide has {len(self.levels)})")
        lv = self.levels[level]
        lx, ly = int(origin[0]), int(origin[1])
        w, h = int(size[0]), int(size[1])
        x, y = level0_location((lx, ly), lv.downsample)
        if w <= 0 or h <= 0 or lx < 0 or ly < 0 or lx + w > lv.width or ly + h > lv.height:
            raise RegionOutsideError(
                f"{self.path}: region {w}x{h} at level pixel ({lx}, {ly}) (level-0 ({x}, {y})) lies outside level "
                f"{level} ({lv.width}x{lv.height})"
            )
        # The reader gets the level-0 location of that level pixel (planning's own for regions it planned): cuCIM
        # divides by the downsample with no tolerance, and from any other location could start a pixel earlier.
        try:
            return self._backend.read(self.path, (x, y), level, (w, h), device)
        except SlideError:
            raise
        except InputError as exc:
            raise SlideError(str(exc)) from exc
        except Exception as exc:  # native errors: name the file and the region
            raise SlideError(f"{self.path}: cannot read {w}x{h} at level {level}, level-0 ({x}, {y}): {exc}") from exc

    def read_level(self, level: int) -> np.ndarray:
        """A whole level on the host (for thumbnails and tissue masks: use a coarse level)."""
        lv = self.levels[level]
        return self.read_region((0, 0), level, (lv.width, lv.height))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(f"Slide({self.path}) holds a native handle and cannot be pickled: pass the path instead")


def _reader(name: str, path: Path, fmt: SlideFormat) -> Any:
    if name == "cucim":
        from gapless.pipeline.slides.backends import CucimBackend

        return CucimBackend(path, fmt.layout)
    if name == "openslide":
        from gapless.pipeline.slides.backends import OpenSlideBackend

        return OpenSlideBackend(path, fmt.layout)
    if name == "tifffile":
        from gapless.pipeline.slides.tiled import TifffileBackend

        return TifffileBackend(path, fmt.jpeg_levels)
    from gapless.pipeline.slides.dicom import WsidicomBackend

    return WsidicomBackend(path)


def _probe(path: Path, handle: Any, fmt: SlideFormat) -> str | None:
    """Why an opened reader cannot serve the slide (it misses pyramid levels, or cannot decode its pixels: cuCIM
    opens TIFFs whose compression it cannot decode), or None when it can."""
    if fmt.levels and len(handle.dimensions) != fmt.levels:
        return f"sees {len(handle.dimensions)} of the file's {fmt.levels} pyramid levels"
    level = len(handle.dimensions) - 1
    width, height = handle.dimensions[level]
    try:
        handle.read(path, (0, 0), level, (min(16, width), min(16, height)), "cpu")
    except Exception as exc:
        return f"cannot decode its pixels ({str(exc).removeprefix(f'{path}: ')})"
    return None


def _open_reader(path: Path, fmt: SlideFormat, backend: str, device: str) -> Any:
    """The first reader of the format's order for ``device`` (or the one asked for) that opens the whole pyramid
    and decodes it."""
    errors = []
    for name in fmt.readers_for(device) if backend == "auto" else (backend,):
        try:
            handle = _reader(name, path, fmt)
        except Exception as exc:
            errors.append(f"{name}: {str(exc).removeprefix(f'{path}: ') or type(exc).__name__}")
            continue
        problem = _probe(path, handle, fmt)
        if problem is None:
            return handle
        errors.append(f"{name}: {problem}")
        handle.close()
    raise SlideError(f"{path}: not a readable whole-slide image ({fmt.name}; {'; '.join(errors)})")


def open_slide(path: str | Path, mpp: float | None = None, backend: str = "auto", device: str = "cpu") -> Slide:
    """Open a slide file or DICOM folder. ``mpp`` overrides the file's metadata; ``backend`` is auto (the format's
    readers in order, :mod:`gapless.pipeline.slides.formats`) or one of cucim, openslide, tifffile, wsidicom;
    ``device`` says where the slide's regions will be decoded ("cpu", or "cuda" to keep cuCIM's GPU decode first):
    auto picks its order by it. Raises :class:`SlideError` / :class:`~gapless.errors.MppError` naming the file."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise ValueError(f"device: '{device}' is not one of {', '.join(DEVICES)}")
    path = slide_target(Path(path))
    if not path.exists():
        raise SlideError(f"{path}: no such slide file")
    if path.is_file() and path.stat().st_size == 0:
        raise SlideError(f"{path}: the file is empty")
    fmt = detect_format(path)
    handle = _open_reader(path, fmt, backend, device)
    try:
        if not handle.dimensions or min(min(d) for d in handle.dimensions) <= 0:
            raise SlideError(f"{path}: the image has no pixels")
        base_mpp = fmt.resolve_mpp(path, mpp, handle.properties())
    except Exception:
        handle.close()
        raise
    slide = Slide(path, handle, base_mpp, fmt.name)
    if len(slide.levels) == 1 and max(slide.dimensions) > 4096:
        warnings.warn(
            f"{path}: single-level image (no pyramid); every magnification decodes level-0 pixels",
            SingleLevelWarning,
            stacklevel=2,
        )
    return slide
