"""Watching the data a run trains on: the loader's skipped tiles and failed reads over a sliding window.

A skipped tile is delivered as flat fill after every retry failed, so a run whose slides go bad under it trains on
blank tiles without failing. :class:`LoaderWatch` turns the loader's cumulative counters (``reads``, ``retries``,
``skipped_tiles``, summed over ranks) into two shares over the last ``window`` iterations:

- skipped: skipped tiles / tiles delivered;
- failed reads: failed read attempts (``retries``) / all read attempts (``retries + reads``).

Each share has a warning and a stop threshold (:class:`HealthConfig`). No verdict is given on fewer than
``min_tiles`` tiles, so a handful of bad reads at the start of a run decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HealthConfig:
    """Thresholds on the shares of bad data the loader reports; a stop saves a checkpoint first."""

    window: int = 50  # iterations the shares are measured over (checked at every log step)
    min_tiles: int = 256  # no verdict on fewer tiles than this
    warn_skipped: float = 0.01  # share of tiles delivered as flat fill
    stop_skipped: float = 0.05
    warn_failed_reads: float = 0.3  # share of read attempts that failed (and were retried elsewhere)
    stop_failed_reads: float = 0.8

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_tiles < 1:
            raise ValueError("health.window and health.min_tiles must be >= 1")
        for kind in ("skipped", "failed_reads"):
            warn, stop = getattr(self, f"warn_{kind}"), getattr(self, f"stop_{kind}")
            if not 0.0 <= warn <= stop <= 1.0:
                raise ValueError(f"health.warn_{kind}, health.stop_{kind}: need 0 <= warn <= stop <= 1")


@dataclass
class Verdict:
    level: str  # ok | warn | stop
    skipped: float  # shares over the window (0 when the window holds no tiles)
    failed_reads: float
    tiles: int  # tiles delivered in the window
    first_iteration: int  # the window is (first_iteration, iteration]
    message: str = ""


class LoaderWatch:
    """Cumulative loader counters in, a :class:`Verdict` on the last ``window`` iterations out."""

    def __init__(self, cfg: HealthConfig, start_iteration: int) -> None:
        self.cfg = cfg
        self.snapshots: list[tuple[int, dict[str, int]]] = [(start_iteration, {})]  # counters start at 0

    def observe(self, iteration: int, counters: dict[str, int]) -> Verdict:
        """The verdict on the window that ends at ``iteration``, where the loader's totals are ``counters``."""
        self.snapshots.append((iteration, dict(counters)))
        # The newest snapshot at least `window` iterations old is the base; older ones are no longer needed.
        base = max((i for i, (it, _) in enumerate(self.snapshots) if it <= iteration - self.cfg.window), default=0)
        self.snapshots = self.snapshots[base:]
        first, old = self.snapshots[0]

        def delta(key: str) -> int:
            return int(counters.get(key, 0)) - int(old.get(key, 0))

        reads, retries, skipped = delta("reads"), delta("retries"), delta("skipped_tiles")
        tiles = reads + skipped
        share_skipped = skipped / tiles if tiles else 0.0
        share_failed = retries / (retries + reads) if retries + reads else 0.0
        verdict = Verdict("ok", share_skipped, share_failed, tiles, first)
        if tiles < self.cfg.min_tiles:
            return verdict
        c = self.cfg
        shares = (
            ("skipped", "tiles skipped (trained on as flat fill)", share_skipped, c.warn_skipped, c.stop_skipped),
            ("failed_reads", "read attempts failed", share_failed, c.warn_failed_reads, c.stop_failed_reads),
        )
        over = [s for s in shares if s[2] > s[3]]
        if not over:
            return verdict
        verdict.level = "stop" if any(value > stop for *_, value, _, stop in over) else "warn"
        parts = []
        for key, label, value, warn, stop in over:
            level, limit = ("stop", stop) if value > stop else ("warn", warn)
            parts.append(f"{100 * value:.1f} % of {label} (health.{level}_{key} = {100 * limit:g} %)")
        verdict.message = (
            f"iterations {first + 1}-{iteration}, {tiles} tiles: " + "; ".join(parts) + ". Slides may have gone "
            "bad: check them with `gapless index` (it re-reads changed files) or `gapless tiles`"
        )
        return verdict
