"""``gapless index``: the slide index; ``gapless index merge``: one index from the indexes of its shards."""

from __future__ import annotations

import argparse
import os

_MERGE_HELP = "gapless index merge SHARD.h5... --out index.h5 [--allow-missing]: join shard indexes"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="index slides: geometry, mpps, tissue masks, labels (`index merge`: join shard indexes)",
        description="Index slides into one HDF5 file. Unreadable slides are reported and skipped; re-running "
        "reads only slides that changed (file or settings) and resumes an interrupted run. Slides of the previous "
        f"index not among the inputs are kept (--prune drops them). {_MERGE_HELP}.",
    )
    p.add_argument("inputs", nargs="+", metavar="SLIDES_OR_DIRS", help="slide files, folders, DICOM slide folders")
    p.add_argument("--out", required=True, help="index file (.h5); an existing file must be a gapless index")
    p.add_argument("--labels", help="labels.csv with columns slide,label[,patient][,mpp]; without it labels are kept")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--mpp", type=float, help="mpp of every slide (overrides the files' metadata)")
    p.add_argument("--mask-mpp", type=float, default=8.0, help="tissue mask resolution (um per pixel)")
    p.add_argument("--shard", metavar="I/N", help="index only part I of N (0-based; see `gapless index merge`)")
    p.add_argument("--prune", action="store_true", help="drop slides of the previous index not among the inputs")
    p.add_argument("--allow-missing", action="store_true", help="merge: join the shards present even if some lack")
    p.set_defaults(func=_index)


def _index(args: argparse.Namespace) -> int:
    from gapless.errors import InputError

    if args.inputs[0] == "merge":
        return _merge(args)
    if args.allow_missing:
        raise InputError("--allow-missing belongs to `gapless index merge`")
    if args.workers < 1 or not args.mask_mpp > 0:
        raise InputError("index: need --workers >= 1 and a positive --mask-mpp")
    from gapless.console import console, progress
    from gapless.pipeline.slides.indexer import build_index, parse_shard
    from gapless.pipeline.slides.report import print_index_summary

    shard = parse_shard(args.shard) if args.shard else None
    with progress() as bar:
        task = bar.add_task("indexing", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = build_index(args.inputs, args.out, args.labels, args.workers, args.mpp, args.mask_mpp, update,
                              shard, args.prune)  # fmt: skip
    print_index_summary(console, summary, args.out)
    if summary.total and not summary.usable:
        raise InputError(f"{args.out}: none of the {summary.total} slides is usable (the reasons are listed above)")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from gapless.console import console
    from gapless.errors import InputError
    from gapless.pipeline.slides.merge import merge_indexes

    shards = args.inputs[1:]
    if args.labels or args.mpp is not None or args.shard or args.prune:
        raise InputError(f"index merge: takes shard indexes, --out and --allow-missing only ({_MERGE_HELP})")
    if not shards:
        raise InputError(f"index merge: no shard indexes given ({_MERGE_HELP})")
    summary = merge_indexes(shards, args.out, allow_missing=args.allow_missing)
    console.print(f"{summary.slides} slides from {len(shards)} indexes -> {args.out}{summary.note}")
    return 0
