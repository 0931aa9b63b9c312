"""The console's recovery after an interrupted render: what was buffered is written, then a new line; with a rich
whose internals it relies on are gone, it does nothing (and raises nothing)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gapless import console as console_module


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    con = Console(file=out, width=80, force_terminal=False)
    monkeypatch.setattr(console_module, "console", con)
    return con, out


def test_buffered_output_is_flushed_on_a_line_of_its_own(captured: tuple[Console, io.StringIO]) -> None:
    con, out = captured
    con.__enter__()  # as a live progress bar holds it: output buffered until the block ends
    con.print("half a bar", end="")
    assert out.getvalue() == ""
    console_module.end_interrupted_output()  # the block was left by an exception, never by __exit__
    assert out.getvalue() == "half a bar\n"
    console_module.end_interrupted_output()  # nothing buffered: nothing written
    assert out.getvalue() == "half a bar\n"


def test_without_richs_internals_it_does_nothing(captured: tuple[Console, io.StringIO], monkeypatch) -> None:
    con, out = captured
    con.__enter__()
    con.print("half a bar", end="")
    monkeypatch.delattr(Console, "_check_buffer")
    console_module.end_interrupted_output()
    assert out.getvalue() == ""
