"""Damaged tiles are errors, never pixels: strict JPEG decoding, and the switch of the checks.

A JPEG tile whose entropy-coded data is damaged (markers intact, bytes changed in the middle) still decodes: libjpeg
reports "Corrupt JPEG data" as a warning and fills the rest of the tile with whatever it reconstructs. Every host
read path turns that into a :class:`~gapless.errors.SlideError`, so the tile source retries elsewhere and counts it:

- tiles gapless decodes itself (tifffile and wsidicom readers) go through :func:`decode_jpeg`, libjpeg-turbo with
  warnings raised as errors;
- cuCIM and OpenSlide do not report all such damage (cuCIM prints libjpeg's warning and returns the pixels;
  OpenSlide stops before the end of a tile's data), so the JPEG tiles a read of theirs touches are decoded first
  with :func:`vet_jpeg`, each once per open slide (:class:`gapless.pipeline.slides.tiled.TileVetter`);
- the batched GPU paths vet the tiles of a plan the same way before decoding them
  (:class:`gapless.pipeline.batch_read.PlanVetter`).

``GAPLESS_TILE_CHECK=0`` in the environment (or :func:`set_tile_check`, which sets it for processes started
afterwards) switches the checks off, to measure what they cost; OpenSlide's own check cannot be switched off.
"""

from __future__ import annotations

import os

import numpy as np

ENV_SWITCH = "GAPLESS_TILE_CHECK"


def tile_check_enabled() -> bool:
    """Whether reads check for damaged tiles (default on; ``GAPLESS_TILE_CHECK=0`` turns it off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def set_tile_check(enabled: bool) -> None:
    """Switch the check on or off in this process and in every process it starts from now on."""
    os.environ[ENV_SWITCH] = "1" if enabled else "0"


# An Adobe APP14 segment with transform 0: "the three components are R, G, B, not YCbCr" for libjpeg.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_JFIF = b"\xff\xe0"  # an APP0 (JFIF) segment right after the start of image: the data is YCbCr whatever else


def complete_stream(data: bytes, tables: bytes | None, rgb: bool = False) -> bytes:
    """A tile's complete JPEG stream: an abbreviated tile gets the shared tables (the TIFF JPEGTables tag, as SVS
    files use) spliced in after its start-of-image marker.

    ``rgb``: the page's PhotometricInterpretation is RGB, so its components are R, G, B as stored (libtiff, cuCIM,
    OpenSlide and tifffile decode them so). A stream that does not say so itself (Aperio's RGB tiles have neither an
    Adobe marker nor R, G, B component ids) would be taken for YCbCr by libjpeg: it gets an Adobe marker that says
    so, unless it starts with a JFIF marker (JFIF data is YCbCr; the TIFF readers agree)."""
    if not data.startswith(b"\xff\xd8"):
        return data
    if tables and len(tables) > 4:
        data = tables[:-2] + data[2:]
    if rgb and data[2:4] != _JFIF:
        data = data[:2] + _ADOBE_RGB + data[2:]
    return data


def decode_jpeg(stream: bytes, strict: bool = True) -> np.ndarray:
    """RGB pixels of a JPEG stream; with ``strict``, data the decoder reports as corrupt raises ValueError."""
    import simplejpeg

    return simplejpeg.decode_jpeg(stream, colorspace="RGB", strict=strict)


def vet_jpeg(stream: bytes) -> None:
    """Raise ValueError if the decoder reports damage in a JPEG stream: a strict decode at 1/8 scale, which reads
    all of the entropy-coded data at a fraction of a full decode's cost."""
    import simplejpeg

    simplejpeg.decode_jpeg(stream, min_height=1, min_width=1, strict=True)
