"""The console script: every subcommand is listed and answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gapless.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "gapless.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in _subcommands():
        assert name in out
    assert "sampling" in out


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: gapless" in capsys.readouterr().out


def test_help_does_not_import_heavy_libraries():
    code = "import sys, gapless.cli as c; c.build_parser(); print(sorted(m for m in ('torch', 'nvidia.dali', 'cucim') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_overrides_may_stand_on_both_sides_of_options(monkeypatch):
    import gapless.cli as cli

    captured = {}
    original = cli.build_parser

    def parser_with_recording_pretrain():
        parser = original()
        sub = next(a for a in parser._actions if a.dest == "command")
        sub.choices["pretrain"].set_defaults(func=lambda args: captured.update(overrides=args.overrides))
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_recording_pretrain)
    cli.main(["pretrain", "--config", "c.yaml", "a=1", "--out", "/r", "b.c=2"])
    assert captured["overrides"] == ["a=1", "b.c=2"]
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--config", "c.yaml", "--out", "/r", "--bogus"])
