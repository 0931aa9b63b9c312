"""The run folder before and during training: checked writable and roomy first, and its metrics log.

:func:`check_writable` runs before training starts (once the models are built on the host, which gives a checkpoint's
size, and before anything is read or trained): an unwritable ``--out`` (no permission, a read-only file system, a
path through a file) or one without room for a single checkpoint is a one-line error naming the folder, not a
failure after hours of training.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from rich.markup import escape

from gapless.console import console
from gapless.errors import InputError
from gapless.io import PLACE_ERRORS, atomic_output, output_folder, write_text

PROBE_NAME = ".write-test"


def check_writable(run_dir: Path, checkpoint_bytes: int, keep: int) -> None:
    """Refuse a run folder that cannot take files or one checkpoint; warn when ``keep + 1`` would not fit."""
    checkpoints = run_dir / "checkpoints"
    for folder in (output_folder(run_dir), output_folder(checkpoints)):
        with atomic_output(folder / PROBE_NAME) as tmp:  # raises InputError naming the file when it cannot
            tmp.write_bytes(b"gapless")
        (folder / PROBE_NAME).unlink()
    free = shutil.disk_usage(checkpoints).free
    need = f"a checkpoint takes about {checkpoint_bytes / 2**20:.0f} MiB"
    if free < checkpoint_bytes:
        raise InputError(f"{checkpoints}: {free / 2**20:.0f} MiB free, {need}; free some space or choose another --out")
    if free < (keep + 1) * checkpoint_bytes:
        message = escape(
            f"{checkpoints}: {free / 2**20:.0f} MiB free; {need} and {keep} are kept plus the one being written: "
            "the disk may fill during the run"
        )
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


class MetricsLog:
    """metrics.jsonl in the run folder; on resume, lines after the checkpoint's iteration are dropped."""

    def __init__(self, path: Path, resume_from: int) -> None:
        self.path = path
        if path.exists():
            kept = [ln for ln in path.read_text().splitlines() if self._iteration(ln) <= resume_from]
            write_text("".join(ln + "\n" for ln in kept), path)

    @staticmethod
    def _iteration(line: str) -> float:
        try:
            return json.loads(line)["iteration"]
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill: drop it
            return math.inf

    def write(self, record: dict[str, Any]) -> None:
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            if exc.errno in PLACE_ERRORS:
                raise InputError(f"{self.path}: cannot write ({exc.strerror})") from exc
            raise
