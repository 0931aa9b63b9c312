"""Synthetic whole-slide images: tiled, JPEG-compressed pyramidal TIFFs with correct mpp metadata.

``write_slide`` renders level 0 band by band (never the whole slide in float), encodes 256 px JPEG tiles as it
goes, and builds the coarser levels by exact box averaging. The same tiles go into every format; where the
pyramid and the mpp are kept differs by format (:mod:`gapless.pipeline.synth.formats`). ``make_dataset`` writes a
set of labelled slides (a couple per patient) and ``labels.csv``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from gapless.io import output_folder, write_text
from gapless.pipeline.synth.formats import SUFFIXES, check_format, page_options
from gapless.pipeline.synth.render import Renderer, SlideSpec, he_texture

TILE = 256
CLASSES = ("regular", "atypia", "lobular")
PRESETS = {  # name: (width_mm, height_mm, slides)
    "tiny": (1.0, 0.8, 6),
    "small": (2.0, 1.5, 12),
    "demo": (4.0, 3.0, 24),
}


@dataclass(frozen=True)
class SynthResult:
    paths: list[Path]
    labels_csv: Path
    labels: dict[str, str]  # file name -> label


def pyramid_shape(width: int, height: int, step: int, min_side: int = 64, exact: bool = True) -> tuple[int, int, int]:
    """(levels, width, height): with ``exact``, level-0 size rounded to a multiple of step**(levels-1) so that
    downsamples are exact; without it the size is kept, and each level is the one above divided by ``step`` and
    rounded down (as scanners make them: downsamples such as 4101 / 1025 = 4.00098)."""
    levels = 1
    while min(width, height) // step**levels >= min_side:
        levels += 1
    if not exact:
        return levels, width, height
    unit = step ** (levels - 1)
    return levels, max(unit, round(width / unit) * unit), max(unit, round(height / unit) * unit)


def load_he_tile() -> np.ndarray:
    """The real 240 x 240 H&E tile that the ``wsidicom-data`` package ships (RGB)."""
    from importlib.util import find_spec

    # Located, not imported: the package's __init__ imports wsidicom, which this data file does not need.
    spec = find_spec("wsidicom_data")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("wsidicom-data is not installed (pip install wsidicom-data)")
    data = (Path(next(iter(spec.submodule_search_locations))) / "data" / "test_tile.png").read_bytes()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_slide(
    path: str | Path,
    spec: SlideSpec,
    fmt: str = "tiff",
    level_step: int = 4,
    quality: int = 90,
    use_he_texture: bool = False,
    levels: int | None = None,
    with_mpp: bool = True,
    dicom_concatenation: int | None = None,
    exact_levels: bool = True,
) -> Path:
    """Render ``spec`` and write it as ``fmt`` (:data:`~gapless.pipeline.synth.formats.FORMATS`): a pyramidal
    TIFF file, or for ``dicom`` a folder of instances. ``with_mpp=False`` leaves the physical pixel size out;
    ``exact_levels=False`` keeps the level-0 size as rendered, so that downsamples are not whole numbers
    (:func:`pyramid_shape`)."""
    check_format(fmt)
    if level_step not in (2, 4):
        raise ValueError(f"level step must be 2 or 4, got {level_step}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_levels, width, height = pyramid_shape(
        round(spec.width_um / spec.base_mpp), round(spec.height_um / spec.base_mpp), level_step, exact=exact_levels
    )
    n_levels = min(n_levels, levels) if levels else n_levels
    sizes = [(width // level_step**i, height // level_step**i) for i in range(n_levels)]
    level_mpps = [spec.base_mpp * (width / w + height / h) / 2 for w, h in sizes]
    texture = he_texture(load_he_tile(), spec.base_mpp) if use_he_texture else None
    renderer = Renderer(spec, width, height, texture)
    band = TILE * max(1, min(8, (8 << 20) // (width * TILE)))  # rows per band: about 8 M pixels
    level1 = np.empty((height // level_step, width // level_step, 3), np.uint8) if n_levels > 1 else None

    def level0_tiles():
        cols = math.ceil(width / TILE)
        for y0 in range(0, height, band):
            y1 = min(y0 + band, height)
            rows = renderer.rows(y0, y1)
            if level1 is not None:
                small = (width // level_step, (y1 - y0) // level_step)
                level1[y0 // level_step : y1 // level_step] = cv2.resize(rows, small, interpolation=cv2.INTER_AREA)
            padded = np.zeros((math.ceil((y1 - y0) / TILE) * TILE, cols * TILE, 3), np.uint8)
            padded[: y1 - y0, :width] = rows
            for ty in range(0, padded.shape[0], TILE):
                for tx in range(0, padded.shape[1], TILE):
                    yield padded[ty : ty + TILE, tx : tx + TILE]

    common = dict(tile=(TILE, TILE), compression="jpeg", compressionargs={"level": quality}, photometric="rgb")
    tmp = path.with_name(path.name + (".src.tiff" if fmt == "dicom" else ".part"))
    with tifffile.TiffWriter(tmp, bigtiff=width * height > 2**31, ome=fmt == "ome-tiff") as tw:
        for index in range(n_levels):
            kw = dict(common, **page_options(fmt, index, n_levels, level_mpps[index], level_mpps, (width, height),
                                             TILE, quality, with_mpp))  # fmt: skip
            if index == 0:
                tw.write(level0_tiles(), shape=(height, width, 3), dtype=np.uint8, **kw)
            else:
                if index > 1:
                    size = (level1.shape[1] // level_step, level1.shape[0] // level_step)
                    level1 = cv2.resize(level1, size, interpolation=cv2.INTER_AREA)
                tw.write(level1, **kw)
    if fmt == "dicom":
        from gapless.pipeline.synth.dicom import tiff_to_dicom

        try:
            tiff_to_dicom(tmp, path, level_mpps, dicom_concatenation)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    tmp.replace(path)
    return path


def make_dataset(
    out: str | Path,
    slides: int = 6,
    size_mm: tuple[float, float] = (1.0, 0.8),
    base_mpp: float = 0.25,
    fmt: str = "tiff",
    seed: int = 0,
    level_step: int = 4,
    use_he_texture: bool = False,
    slides_per_patient: int = 2,
    classes: tuple[str, ...] = CLASSES,
) -> SynthResult:
    """Write ``slides`` labelled slides (classes cycle by patient) and ``labels.csv`` into ``out``."""
    out = output_folder(out)
    paths, labels, rows = [], {}, []
    suffix = SUFFIXES[check_format(fmt)]
    for i in range(slides):
        patient = i // slides_per_patient
        label = classes[patient % len(classes)]
        spec = SlideSpec(size_mm[0] * 1000, size_mm[1] * 1000, base_mpp, label, seed * 100_003 + i)
        name = f"slide_{i:03d}{suffix}"
        paths.append(write_slide(out / name, spec, fmt, level_step, use_he_texture=use_he_texture))
        labels[name] = label
        rows.append((name, label, f"patient_{patient:03d}"))
    labels_csv = out / "labels.csv"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([("slide", "label", "patient"), *rows])
    write_text(text.getvalue(), labels_csv)
    return SynthResult(paths, labels_csv, labels)


def write_ruler(
    path: str | Path, period_um: float, size_mm: tuple[float, float] = (1.0, 1.0), base_mpp: float = 0.25, **kw
) -> Path:
    """A slide of vertical stripes with a known physical period (dark half, light half), for scale checks."""
    spec = SlideSpec(size_mm[0] * 1000, size_mm[1] * 1000, base_mpp, "ruler", 0, ruler_period_um=period_um)
    return write_slide(path, spec, **kw)
