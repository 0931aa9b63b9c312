"""Subcommands of the evaluation: ``eval-set``, ``features`` and ``evaluate``."""

from __future__ import annotations

import argparse

from gapless.pipeline.sampling.magnifications import EVAL_MPPS


def _mpps(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of mpps") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': mpps must be positive numbers")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-set",
        help="build a labelled multi-scale evaluation set (the same tissue at every mpp)",
        description="Sample tissue regions from labelled slides (or take labelled region images) and store every "
        "region at every evaluation mpp: centre crops of 224·mpp/base_mpp px, antialiased down to 224 px in steps "
        "of at most 2x. Also stores patient-disjoint, stratified folds.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SLIDES_OR_INDEX",
        help="slides, folders of slides, a slide index "
        "(.h5), or a CSV path,label,patient,mpp of region images (or a folder holding regions.csv)",
    )
    p.add_argument("--labels", help="CSV slide,label,patient (needed for slides unless the index carries labels)")
    p.add_argument("--out", required=True, help="the set file to write (.h5)")
    p.add_argument("--mpps", type=_mpps, default=list(EVAL_MPPS), help="comma-separated evaluation mpps")
    p.add_argument("--regions-per-slide", type=int, default=16)
    p.add_argument("--folds", type=int, default=5, help="number of patient-disjoint folds (>= 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tissue-threshold", type=float, default=0.5, help="min tissue fraction of a region")
    p.add_argument("--slide-mpp", type=float, help="mpp of level 0 for slides that do not record one")
    p.add_argument("--tile-px", type=int, default=224, help="tile side in pixels (the model's input size)")
    p.set_defaults(func=_eval_set)

    p = subparsers.add_parser(
        "features",
        help="embed a evaluation set with a checkpoint's teacher backbone",
        description="CLS token and mean patch token, each L2-normalised, concatenated; stored per mpp with the "
        "model's config and checkpoint step.",
    )
    p.add_argument("checkpoint", help="a gapless checkpoint")
    p.add_argument("--set", required=True, dest="set_path", help="evaluation set (.h5)")
    p.add_argument("--out", required=True, help="features file to write (.h5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=_features)

    p = subparsers.add_parser(
        "evaluate",
        help="RankMe, k-NN and linear probes per mpp, with tables, JSON and plots",
        description="Evaluate checkpoints or features files on a evaluation set: RankMe at every mpp, k-NN and "
        "logistic-regression probes trained on pooled mpps and tested at every mpp (mean ± std over folds), the "
        "gap at intermediate mpps; writes report.json and PNG plots with all inputs overlaid.",
    )
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT_OR_FEATURES")
    p.add_argument("--set", required=True, dest="set_path", help="evaluation set (.h5)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--name", nargs="+", help="one display name per input (default: file stems)")
    p.add_argument("--config", help="YAML with evaluation settings (eval.config.EvalConfig)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="setting overrides among the inputs, e.g. linear_cs=[0.01,1,100] probes=[knn]")  # fmt: skip
    p.set_defaults(func=_evaluate)


def _eval_set(args: argparse.Namespace) -> int:
    from gapless.console import console, progress
    from gapless.errors import InputError
    from gapless.eval.sets.build import build_set

    if args.regions_per_slide < 1:
        raise InputError("--regions-per-slide must be >= 1")
    with progress() as bar:
        path, stats = build_set(
            args.inputs,
            args.out,
            args.labels,
            args.mpps,
            args.regions_per_slide,
            args.folds,
            args.seed,
            tile_px=args.tile_px,
            tissue_threshold=args.tissue_threshold,
            slide_mpp=args.slide_mpp,
            progress=bar,
        )
    skipped = ", ".join(f"{n} {why}" for why, n in stats.skipped.items()) or "none"
    console.print(f"wrote {path}: {stats.regions} regions x {len(args.mpps)} mpps; skipped: {skipped}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from gapless.console import console, progress
    from gapless.eval.features import featurise_checkpoint
    from gapless.eval.sets.file import EvalSet

    evalset = EvalSet.load(args.set_path)
    with progress() as bar:
        out = featurise_checkpoint(
            args.checkpoint, evalset, args.out, batch_size=args.batch_size, device=args.device, progress=bar
        )
    console.print(f"wrote {out}: {len(evalset)} regions x {len(evalset.mpps)} mpps")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from gapless.config import load_config, split_overrides
    from gapless.console import console, progress
    from gapless.errors import InputError
    from gapless.eval.config import EvalConfig
    from gapless.eval.evaluate import evaluate

    inputs, overrides = split_overrides(args.inputs)
    if not inputs:
        raise InputError("evaluate: no checkpoint or features file given")
    cfg = load_config(EvalConfig, args.config, [*overrides, *args.overrides])
    with progress() as bar:
        report = evaluate(inputs, args.set_path, args.out, cfg, args.name, console=None, progress=bar)
    from gapless.eval.report import print_tables

    print_tables(report["runs"], console)
    console.print(f"wrote {args.out}/report.json and {len(report['plots'])} plots")
    return 0
