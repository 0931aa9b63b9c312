"""Resource use of this process and its descendants (DataLoader workers and DALI source workers are children)."""

from __future__ import annotations

from typing import Any


def _tree() -> list[Any]:
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def tree_rss_bytes() -> int:
    """RSS of this process and all its descendants, bytes."""
    import psutil

    total = 0
    for proc in _tree():
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # a child that just exited
            continue
    return total


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants."""
    import psutil

    total = 0.0
    for proc in _tree():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total
