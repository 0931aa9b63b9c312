"""``gapless index merge``: one index from the indexes of its shards (``gapless index --shard I/N``).

The shards must have been built with the same settings (``--mpp``, ``--mask-mpp``), no slide may be in two of them,
and every part 0..N-1 of a sharded set must be present (``allow_missing`` joins the parts there are, and says which
are missing). Labels, patients and tissue masks are carried over as they are; masks are streamed from the shard
files into the merged one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.slides.index import SlideIndex
from gapless.pipeline.slides.index_file import write_index
from gapless.pipeline.slides.indexer import check_output, parse_shard
from gapless.pipeline.slides.previous import index_entries


@dataclass(frozen=True)
class MergeSummary:
    slides: int
    note: str  # what the user should know (missing shards merged anyway), or ""


def _check_settings(indexes: list[SlideIndex]) -> dict[str, Any]:
    first = {k: v for k, v in indexes[0].settings.items() if k != "shard"}
    for index in indexes[1:]:
        other = {k: v for k, v in index.settings.items() if k != "shard"}
        if other != first:
            differ = ", ".join(f"{k} {first.get(k)} vs {other.get(k)}" for k in sorted({*first, *other})
                               if first.get(k) != other.get(k))  # fmt: skip
            raise InputError(
                f"{index.path}: built with other settings than {indexes[0].path} ({differ}); re-index the shards "
                "with the same --mpp and --mask-mpp"
            )
    return first


def _check_shards(indexes: list[SlideIndex], allow_missing: bool) -> str:
    parts = [(index.path, index.settings.get("shard")) for index in indexes]
    sharded = [(path, parse_shard(shard)) for path, shard in parts if shard]
    if not sharded:
        return ""
    counts = {n for _, (_, n) in sharded}
    if len(counts) > 1 or len(sharded) != len(parts):
        raise InputError(f"{sharded[0][0]}: the indexes are not parts of one split (shards: "
                         f"{', '.join(s or 'none' for _, s in parts)})")  # fmt: skip
    n = counts.pop()
    seen: dict[int, Path] = {}
    for path, (i, _) in sharded:
        if i in seen:
            raise InputError(f"{path}: shard {i}/{n} given twice (also {seen[i]})")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing and not allow_missing:
        raise InputError(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing: index them with "
                         "`gapless index ... --shard I/N`, or merge what there is with --allow-missing")  # fmt: skip
    return f" (shards {', '.join(f'{i}/{n}' for i in missing)} missing)" if missing else ""


def merge_indexes(paths: Sequence[str | Path], out: str | Path, allow_missing: bool = False) -> MergeSummary:
    """Merge the shard indexes ``paths`` into ``out`` (see the module docstring for what is checked)."""
    out = Path(out)
    check_output(out)
    if any(Path(p).resolve() == out.resolve() for p in paths):
        raise InputError(f"{out}: is one of the indexes to merge; write the merged index elsewhere")
    indexes = [SlideIndex.load(p) for p in paths]
    try:
        settings = _check_settings(indexes)
        note = _check_shards(indexes, allow_missing)
        entries: dict[str, dict[str, Any]] = {}
        source: dict[str, SlideIndex] = {}
        for index in indexes:
            for path, entry in index_entries(index).items():
                if path in entries:
                    raise InputError(f"{path}: in both {source[path].path} and {index.path}; a slide belongs in one "
                                     "shard only (were the shards built with different inputs?)")  # fmt: skip
                entries[path], source[path] = entry, index
        ordered = [entries[p] for p in sorted(entries)]

        def mask_of(entry: dict[str, Any]) -> np.ndarray:
            return source[entry["path"]].packed_mask(entry["mask_ref"][1])

        write_index(out, ordered, {**settings, "shard": None}, mask_of)
    finally:
        for index in indexes:
            index.close()
    return MergeSummary(len(ordered), note)
