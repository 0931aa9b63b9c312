"""The ``gapless`` console script.

Each package contributes its subcommands through a ``register(subparsers)`` function in its ``cli`` module. Heavy
imports (torch, DALI, cuCIM) happen inside the command handlers, so ``gapless --help`` stays fast and works on any
machine. Commands that take a configuration take ``key=value`` overrides as positional words, anywhere after the
subcommand. Errors gapless raises on purpose (:mod:`gapless.errors`) are printed as one line: exit status 2 for
bad input, 1 for a run that stopped for a stated reason.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gapless import __version__
from gapless.config import is_override
from gapless.errors import GaplessError, InputError

# Modules that contribute subcommands, in the order `gapless --help` lists them.
COMMAND_MODULES = (
    "gapless.pipeline.sampling.cli",
    "gapless.pipeline.synth.cli",
    "gapless.pipeline.slides.cli",
    "gapless.pipeline.cli",
    "gapless.train.cli",
    "gapless.eval.cli",
    "gapless.benchmarks.cli",
    "gapless.apps.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapless",
        description="Continuous-magnification sampling, WSI data pipeline and DINOv2 pretraining for pathology.",
    )
    parser.add_argument("--version", action="version", version=f"gapless {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes one run of positional `key=value` overrides; later runs (after another option) land here.
    if extra and isinstance(getattr(args, "overrides", None), list) and all(is_override(a) for a in extra):
        args.overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except (GaplessError, FileNotFoundError) as exc:
        from rich.markup import escape

        from gapless.console import console, end_interrupted_output

        end_interrupted_output()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2 if isinstance(exc, (InputError, FileNotFoundError)) else 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
