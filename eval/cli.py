"""Subcommands of the evaluation: ``eval-set``, ``features`` and ``evaluate``."""

from __future__ import annotations

import argparse

from gapless.pipeline.sampling.magnifications import EVAL_MPPS

RESAMPLING_CHOICES = ("paper", "area")  # gapless.eval.sets.tiles.RESAMPLINGS, named here so --help stays light


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
        "region at every evaluation mpp: centre crops of 224·mpp/base_mpp px, shrunk to 224 px in steps of at most "
        "2x (the paper's Gaussian-then-bicubic filter, or area averaging). Also stores patient-disjoint, "
        "stratified folds.",
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
    p.add_argument("--resampling", choices=RESAMPLING_CHOICES, default="paper",
                   help="how crops are shrunk: paper (Gaussian sigma = factor/2.5, then bicubic) or area")  # fmt: skip
    p.set_defaults(func=_eval_set)

    p = subparsers.add_parser(
        "features",
        help="embed an evaluation set with any model (gapless, timm, released folder, DINOv2, hf-hub)",
        description="CLS token and mean patch token (prefix tokens excluded) of the final normed tokens, each "
        f"L2-normalised, concatenated; stored per mpp with the raw CLS token and the model's description. {MODELS}",
    )
    p.add_argument("model", metavar="MODEL", help="the model (see above)")
    _model_options(p, many=False)
    p.add_argument("--set", required=True, dest="set_path", help="evaluation set (.h5)")
    p.add_argument("--out", required=True, help="features file to write (.h5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("overrides", nargs="*", metavar="model.KEY=VALUE", help="timm keyword arguments")
    p.set_defaults(func=_features)

    p = subparsers.add_parser(
        "evaluate",
        help="RankMe, k-NN and linear probes per mpp for many models, with tables, JSON and overlaid plots",
        description="Evaluate models or features files on an evaluation set: RankMe at every mpp (two variants), "
        "k-NN and logistic-regression probes trained on pooled mpps and tested at every mpp under the paper's "
        "protocol (protocol=gapless for the set's folds with a refit), mean ± std over folds, the gap at the "
        "intermediate mpps; writes report.json and PNG plots with every model overlaid. Features are cached in "
        f"OUT/features/, so adding a model computes only its own. {MODELS}",
    )
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_FEATURES")
    _model_options(p, many=True)
    p.add_argument("--set", required=True, dest="set_path", help="evaluation set (.h5)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--name", nargs="+", help="one display name per input (default: file stems)")
    p.add_argument("--config", help="YAML with evaluation settings (eval.config.EvalConfig)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings, e.g. protocol=gapless linear_cs=[0.01,1,100]; model.KEY=VALUE: timm arguments "
                        "of the timm: and hf-hub: models")  # fmt: skip
    p.set_defaults(func=_evaluate)


MODELS = (
    "MODEL is a gapless checkpoint or exported backbone, timm:ARCH with --weights FILE (.safetensors/.pth/.bin, "
    "bare or nested state dict), a folder with config.json and NAME.safetensors (or that NAME.safetensors), a "
    "facebookresearch/dinov2 teacher_checkpoint.pth, or hf-hub:ORG/NAME (needs the network)."
)


def _model_options(p: argparse.ArgumentParser, many: bool) -> None:
    p.add_argument(
        "--weights",
        action="append" if many else "store",
        help="weights of a timm:ARCH model" + (" (once per timm: model, in order)" if many else ""),
    )
    p.add_argument("--model-args", help="YAML/JSON file of timm keyword arguments (model.KEY=VALUE words win)")
    p.add_argument("--mean", type=_triple, help="normalisation mean, e.g. 0.485,0.456,0.406 (default: the model's)")
    p.add_argument("--std", type=_triple, help="normalisation std (with --mean)")


def _triple(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not three comma-separated numbers") from exc
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not three comma-separated numbers")
    return values


def model_options(args: argparse.Namespace, words: list[str]) -> tuple[dict, tuple | None]:
    """(timm keyword arguments from --model-args and ``model.KEY=VALUE`` words, (mean, std) or None)."""
    from pathlib import Path

    import yaml

    from gapless.config import load_yaml_text, parse_override
    from gapless.errors import InputError

    kwargs: dict = {}
    if args.model_args:
        try:
            kwargs = load_yaml_text(Path(args.model_args).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(f"{args.model_args}: cannot read model arguments ({exc})") from exc
        if not isinstance(kwargs, dict):
            raise InputError(f"{args.model_args}: model arguments must be a mapping of keys to values")
    for word in words:
        key, value = parse_override(word)
        if len(key) != 2 or key[0] != "model":
            raise InputError(f"{word}: model arguments are written model.KEY=VALUE")
        kwargs[key[1]] = value
    if (args.mean is None) != (args.std is None):
        raise InputError("--mean and --std go together")
    return kwargs, ((args.mean, args.std) if args.mean else None)


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
            resampling=args.resampling,
        )
    skipped = ", ".join(f"{n} {why}" for why, n in stats.skipped.items()) or "none"
    console.print(f"wrote {path}: {stats.regions} regions x {len(args.mpps)} mpps; skipped: {skipped}")
    _warn_if_too_small_for_the_paper(path, console)
    return 0


def _warn_if_too_small_for_the_paper(path, console) -> None:
    """A set the paper's nested split cannot divide still serves protocol=gapless: say so now, not at evaluate."""
    from gapless.eval.config import EvalConfig
    from gapless.eval.folds import patient_labels, shortfall
    from gapless.eval.sets.file import EvalSet

    evalset, cfg = EvalSet.load(path), EvalConfig()
    short = shortfall(patient_labels(evalset.labels, evalset.patients)[1], cfg.nested_folds, cfg.split_seed,
                      evalset.classes)  # fmt: skip
    if short:
        console.print(f"[yellow]warning:[/] too few patients for the paper's nested split ({short}); evaluate "
                      "with protocol=gapless or nested_folds=N, or add patients")  # fmt: skip


def _features(args: argparse.Namespace) -> int:
    from gapless.console import console, progress
    from gapless.eval.features import featurise, is_features_file, stored_model
    from gapless.eval.sets.file import EvalSet
    from gapless.io import replaceable_file

    kwargs, mean_std = model_options(args, args.overrides)
    evalset = EvalSet.load(args.set_path)
    read = [("the model", args.model), ("the --weights file", args.weights),
            ("the --model-args file", args.model_args), ("the --set file", args.set_path)]  # fmt: skip
    replaceable_file(args.out, read, "a features file", is_features_file)
    with progress() as bar:
        out = featurise(args.model, evalset, args.out, args.weights, kwargs, mean_std,
                        batch_size=args.batch_size, device=args.device, progress=bar)  # fmt: skip
    model = stored_model(out)
    console.print(
        f"wrote {out}: {len(evalset)} regions x {len(evalset.mpps)} mpps ({model['kind']} model, "
        f"{model['prefix_tokens']} prefix tokens, patch {model['patch_size']}, normalisation from "
        f"{model['normalisation_source']})"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from gapless.config import load_config, split_overrides
    from gapless.console import console, progress
    from gapless.errors import InputError
    from gapless.eval.config import EvalConfig
    from gapless.eval.evaluate import evaluate
    from gapless.io import output_folder

    inputs, overrides = split_overrides(args.inputs)
    if not inputs:
        raise InputError("evaluate: no model or features file given")
    words = [*overrides, *args.overrides]
    model_words = [w for w in words if w.startswith("model.")]
    kwargs, mean_std = model_options(args, model_words)
    cfg = load_config(EvalConfig, args.config, [w for w in words if not w.startswith("model.")])
    output_folder(args.out)
    with progress() as bar:
        report = evaluate(inputs, args.set_path, args.out, cfg, args.name, console=None, progress=bar,
                          weights=args.weights, model_kwargs=kwargs, mean_std=mean_std)  # fmt: skip
    from gapless.eval.report import print_tables

    print_tables(report["runs"], console)
    console.print(f"wrote {args.out}/report.json and {len(report['plots'])} plots")
    return 0
