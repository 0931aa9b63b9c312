"""Damaged tiles are errors, never pixels: strict JPEG decoding, and the decoder reports of native readers.

A JPEG tile whose entropy-coded data is damaged (markers intact, bytes changed in the middle) still decodes: libjpeg
reports "Corrupt JPEG data" as a warning and fills the rest of the tile with whatever it reconstructs. Every host
read path turns that report into a :class:`~gapless.errors.SlideError`, so the tile source retries elsewhere and
counts it:

- tiles gapless decodes itself (tifffile and wsidicom readers) go through :func:`decode_jpeg`, libjpeg-turbo with
  warnings raised as errors;
- OpenSlide raises on such data by itself;
- cuCIM prints the decoder's report on the process's stdout and returns the damaged pixels. :class:`DecoderReport`
  captures file descriptors 1 and 2 around a read (a few system calls, no second decode) and raises when the
  decoder spoke; anything else printed meanwhile is passed on to stderr.

``GAPLESS_TILE_CHECK=0`` in the environment (or :func:`set_tile_check`, which sets it for processes started
afterwards) switches the checks off, to measure what they cost; OpenSlide's own check cannot be switched off.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np

from gapless.errors import SlideError

ENV_SWITCH = "GAPLESS_TILE_CHECK"
_DECODER_WORDS = (b"jpeg", b"corrupt", b"error", b"decompress")


def tile_check_enabled() -> bool:
    """Whether reads check for damaged tiles (default on; ``GAPLESS_TILE_CHECK=0`` turns it off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def set_tile_check(enabled: bool) -> None:
    """Switch the check on or off in this process and in every process it starts from now on."""
    os.environ[ENV_SWITCH] = "1" if enabled else "0"


def complete_stream(data: bytes, tables: bytes | None) -> bytes:
    """A tile's complete JPEG stream: an abbreviated tile gets the shared tables (the TIFF JPEGTables tag, as SVS
    files use) spliced in after its start-of-image marker."""
    if tables and len(tables) > 4 and data.startswith(b"\xff\xd8"):
        return tables[:-2] + data[2:]
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


class DecoderReport:
    """``with DecoderReport(path, where): native_read()`` raises :class:`SlideError` when the read printed a
    decoder message.

    One process-wide lock serialises the capture (file descriptors are per process). Output that is not a decoder's
    is passed on to stderr.
    """

    _lock = threading.Lock()
    _sink: int | None = None
    _libc: Any = None

    def __init__(self, path: Any, where: str) -> None:
        self.path, self.where = path, where
        self._saved: list[int] = []

    @classmethod
    def _setup(cls) -> int:
        if cls._sink is None:
            cls._sink = os.memfd_create("gapless-decoder-report")
            cls._libc = ctypes.CDLL(None)
        return cls._sink

    def __enter__(self) -> DecoderReport:
        self._lock.acquire()
        try:
            sink = self._setup()
            self._libc.fflush(None)
            self._saved = [os.dup(1), os.dup(2)]
            os.dup2(sink, 1)
            os.dup2(sink, 2)
        except BaseException:
            self._restore()
            self._lock.release()
            raise
        return self

    def _restore(self) -> None:
        if self._libc is not None:
            self._libc.fflush(None)
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._restore()
            sink = self._sink
            written = os.lseek(sink, 0, os.SEEK_CUR)
            text = os.pread(sink, written, 0) if written else b""
            if written:
                os.ftruncate(sink, 0)
                os.lseek(sink, 0, os.SEEK_SET)
        finally:
            self._lock.release()
        if not text:
            return
        lowered = text.lower()
        if any(word in lowered for word in _DECODER_WORDS):
            if exc_type is None:
                message = " ".join(text.decode(errors="replace").split())
                raise SlideError(f"{self.path}: damaged image data in {self.where} (the decoder reports: {message})")
            return
        os.write(2, text)
