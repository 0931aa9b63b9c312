"""Files in and out: every file gapless writes goes to a temporary name beside it and is renamed when complete.

A reader therefore never sees half a file, a crash leaves the previous version in place, and a failed write
removes its temporary file. A write that fails for want of space or permission is an :class:`InputError` naming
the path (one line, not a traceback). Tensor files (checkpoints, weights) are read by :func:`load_tensors`, whose
failures are one line too.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gapless.errors import InputError

# errno values that mean "this place cannot take the file", as opposed to a bug in the writer.
PLACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def output_folder(path: str | Path) -> Path:
    """``path`` as a folder outputs can be written into (created if missing); an existing file there, or a place
    that cannot hold a folder, is an :class:`InputError` naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; give a folder for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the output folder ({exc.strerror or exc})") from exc
    return path


def output_file(path: str | Path) -> Path:
    """``path`` as a file name outputs can be written to (its folder created if missing): call it before long work
    so that a bad ``--out`` is named at once; a folder there is an :class:`InputError`."""
    path = Path(path)
    output_folder(path.parent)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    return path


def replaceable_file(
    path: str | Path, inputs: Iterable[tuple[str, str | Path | None]], kind: str, is_kind: Callable[[Path], bool]
) -> Path:
    """``path`` as a file a command may write its ``kind`` of output to (see :func:`output_file`), refused with an
    :class:`InputError` when it is one of the command's ``inputs`` (pairs of what it is and its path; the same file by
    any name) or an existing file that ``is_kind`` does not accept: a command replaces only an output of its kind."""
    path = output_file(path)
    if not path.exists():
        return path
    for what, item in inputs:
        if item is not None and Path(item).exists() and os.path.samefile(path, item):
            raise InputError(f"{path}: is {what}, which this command reads; give another file name for {kind}")
    if not is_kind(path):
        raise InputError(f"{path}: exists and is not {kind}; give a new file name (or {kind} to replace)")
    return path


def temporary_path(path: Path) -> Path:
    """The name ``path`` is written under before it is renamed: beside it, so the rename is atomic."""
    return path.with_name(path.name + ".tmp")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write(tmp)``: ``tmp`` becomes ``p`` when the block ends without error.

    On any error the temporary file is removed; out of space, no permission or a read-only place become an
    :class:`InputError` naming ``path`` and the system's reason (not a library's own text, such as HDF5's).
    """
    path = output_file(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in PLACE_ERRORS:
            raise InputError(f"{path}: cannot write ({os.strerror(exc.errno)})") from exc
        raise


def load_tensors(path: str | Path, failure: str, map_location: Any = "cpu") -> Any:
    """What a tensor file holds: ``torch.load`` with ``weights_only=True`` (tensors and plain data, never code), or
    for ``.safetensors`` its tensors. A file that does not load so (truncated, another format, objects
    ``weights_only`` refuses) is an :class:`InputError` ``"PATH: <failure> (<the reason>)"``."""
    import torch

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=str(map_location))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # each library fails its own way: one line naming the file for all of them
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{path}: {failure} ({reason})") from exc


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON (numpy values converted), write-then-rename."""
    text = json.dumps(data, indent=2, default=_jsonable)
    return write_text(text, path)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG, write-then-rename."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path``, write-then-rename."""
    return write_bytes(text.encode(), path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path``, write-then-rename."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path
