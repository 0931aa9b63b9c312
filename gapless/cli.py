"""The ``gapless`` console script.

Each package contributes its subcommands through a ``register(subparsers)`` function in its ``cli`` module. Heavy
imports (torch, DALI, cuCIM) happen inside the command handlers, so ``gapless --help`` stays fast and works on any
machine.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gapless import __version__
from gapless.config import ConfigError

# Modules that contribute subcommands, in the order `gapless --help` lists them.
COMMAND_MODULES = (
    "pipeline.sampling.cli",
    "pipeline.slides.cli",
    "pipeline.cli",
    "train.cli",
    "eval.cli",
    "benchmarks.cli",
    "gapless.demo",
    "gapless.reproduce",
)


class UserError(Exception):
    """An error caused by the user's input (a file, a flag); printed as one clear line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapless",
        description="Continuous-magnification sampling, WSI data pipeline and DINOv2 pretraining for pathology.",
    )
    parser.add_argument("--version", action="version", version=f"gapless {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a subsystem not built yet contributes nothing
                continue
            raise
        module.register(subparsers)
    return parser


def _is_override(arg: str) -> bool:
    return not arg.startswith("-") and "=" in arg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes one run of positional `key=value` overrides; later runs (after another option) land here.
    if extra and isinstance(getattr(args, "overrides", None), list) and all(_is_override(a) for a in extra):
        args.overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except (UserError, ConfigError, FileNotFoundError) as exc:
        from gapless.console import console

        console.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
