"""What ``gapless index`` tells the user: what was read and why, what was kept, what is wrong with the labels."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from gapless.console import table

_SHOW = 5  # names listed per line; the rest are counted


def _names(paths: list[str]) -> str:
    shown = ", ".join(escape(p) for p in paths[:_SHOW])
    return shown + (f" (+{len(paths) - _SHOW} more)" if len(paths) > _SHOW else "")


def print_index_summary(console: Any, summary: Any, out: str) -> None:
    """Print an :class:`~gapless.pipeline.slides.indexer.IndexSummary` for people, one fact per line."""
    s = summary
    console.print(f"{s.total} slides: {s.usable} usable, {len(s.failed)} skipped -> {out}")
    if not s.total:
        console.print("[yellow]no slides found in the inputs (slide files by suffix, DICOM folders of .dcm files)[/]")
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(s.reasons.items()))
    resumed = f", {s.resumed} of them from an interrupted run" if s.resumed else ""
    console.print(f"read {s.indexed}{f' ({why})' if why else ''}; {s.reused} unchanged{resumed}")
    lists = (
        ("", s.kept, "slide(s) of the previous index kept, not among the inputs (--prune drops them)"),
        ("", s.pruned, "slide(s) not among the inputs dropped (--prune)"),
        ("yellow", s.unlabelled, "slide(s) without a labels row (labels kept as they were)"),
        ("yellow", s.unmatched_rows, "labels row(s) name no slide found"),
    )
    for style, names, what in lists:
        if names:
            text = f"{len(names)} {what}:"
            console.print(f"[{style}]{text}[/] {_names(names)}" if style else f"{text} {_names(names)}")
    if s.labels_changed:
        console.print(f"labels: {s.labels_changed} slide(s) changed label or patient")
    if s.previous_problem:
        console.print(f"[yellow]{escape(s.previous_problem)}[/]")
    if s.failed:
        console.print(table("skipped slides", ("slide", "status", "reason"), s.failed))
