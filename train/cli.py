"""``gapless pretrain`` and ``gapless export``.

Under torchrun every process runs the same command; without torchrun the run is one process:

    gapless pretrain --config configs/pretrain_vits16.yaml --out runs/vits16 data.sampling.strategy=maxavg
    torchrun --nproc_per_node 8 --no-python gapless pretrain --config ... --out runs/vits16
    gapless export runs/vits16/checkpoints/ckpt_00125000.pt --out vits16_teacher.pt
    gapless export runs/vits16/checkpoints/ckpt_00125000.pt --format timm --out vits16_timm/
    gapless pretrain --config demo_gpu --explain --world-size 8   # how the recipe differs from DINOv2's

A run stopped by SIGTERM saves a checkpoint and exits with status 1 and a message saying so; rerunning the same
command continues it.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="DINOv2 pretraining (resumes from the run directory's last checkpoint)",
        description="Train a ViT with DINOv2 (DINO + iBOT + KoLeo). Launch with torchrun for several GPUs or "
        "nodes; key=value overrides change any config field (e.g. data.sampling.strategy=du).",
    )
    p.add_argument(
        "--config",
        required=True,
        help="YAML config file, or a shipped config by name (pretrain_vits16); with --explain also a demo or "
        "reproduce config (its pretrain section)",
    )
    p.add_argument("--out", help="run directory: checkpoints, metrics.jsonl, config.yaml (required to train)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.base_lr=2e-3")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue a run directory with checkpoints")
    p.add_argument("--max-steps", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    p.add_argument(
        "--explain",
        action="store_true",
        help="list how this config differs from DINOv2's recipe (scale, settings, implementation) and exit",
    )
    p.add_argument(
        "--world-size",
        type=int,
        default=None,
        help="with --explain: the number of training processes (default: $WORLD_SIZE, or 1)",
    )
    p.set_defaults(func=run_pretrain)

    e = subparsers.add_parser(
        "export",
        help="export the teacher backbone of a checkpoint for evaluation",
        description="Write the teacher ViT backbone, its config and iteration to a small file that gapless reads "
        "(--format gapless), or as config.json + model.safetensors that timm.create_model(architecture, "
        "**model_args) + load_state_dict load with no missing or unexpected keys (--format timm; also "
        "timm.create_model('local-dir:OUT', pretrained=True)).",
    )
    e.add_argument("checkpoint", help="a checkpoint written by gapless pretrain")
    e.add_argument("--out", required=True, help="output file (gapless, e.g. backbone.pt) or folder (timm)")
    e.add_argument("--format", choices=("gapless", "timm"), default="gapless", help="gapless file or timm folder")
    e.set_defaults(func=run_export)


def run_pretrain(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from gapless.config import load_config
    from gapless.errors import InputError
    from gapless.train.config import PretrainConfig

    if args.explain:
        from gapless.console import console
        from gapless.train.recipe import load_pretrain_config, print_explanation

        cfg = load_pretrain_config(args.config, args.overrides)

        world_size = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
        if world_size < 1:
            raise InputError(f"--world-size must be >= 1, got {world_size}")
        print_explanation(cfg, world_size, console)
        return 0
    if not args.out:
        raise InputError("--out: the run directory is required to train (only --explain runs without one)")
    # --out is a path as given, never parsed as a value (a folder named 2024 is not a number).
    cfg = dataclasses.replace(load_config(PretrainConfig, args.config, args.overrides), out=args.out)
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # refuse a held folder before the slow imports
        from gapless.train.run_lock import RunLock

        RunLock(args.out).refuse_if_held()
    from gapless.train.loop import train

    train(cfg, args.out, resume=not args.no_resume, max_steps=args.max_steps)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from gapless.console import console
    from gapless.train.checkpoint import export_backbone, load_teacher_backbone
    from gapless.train.export import export_timm

    if args.format == "timm":
        import json

        import timm
        from safetensors.torch import load_file

        out = export_timm(args.checkpoint, args.out)
        config = json.loads((out / "config.json").read_text())
        model = timm.create_model(config["architecture"], num_classes=0, **config["model_args"])
        model.load_state_dict(load_file(str(out / "model.safetensors")))  # strict: proves the export loads
        console.print(f"exported teacher backbone as timm {config['architecture']} to {out}/")
        return 0
    path = export_backbone(args.checkpoint, args.out)
    _, config, iteration = load_teacher_backbone(path)  # proves the export loads
    console.print(f"exported teacher backbone ({config['model']['arch']}, iteration {iteration}) to {path}")
    return 0
