"""The verdicts of a run, computed from its own measurements: what continuous sampling costs, how the loaders
compare, and whether the loader keeps up with the trainer. Pure arithmetic on lists of rates (tiles/s).

Cost of strategy S relative to DU in the same loader: ``cost = 1 - ratio`` (positive: S is slower). With one
measurement pass, ``ratio = median(S) / median(DU)`` and its spread comes from the repeated windows,
conservatively: the ratio can be as low as ``min(S) / max(DU)`` and as high as ``max(S) / min(DU)``. With several
passes (strategies measured close together in time, pass after pass), each pass gives its own ratio
``median(S_p) / median(DU_p)``; ``ratio`` is their median and the interval their min and max, so load that drifts
between passes does not count as a difference between strategies. ``± spread`` is half the interval.
"CU ≥ 0.98× DU" holds when the ratio is at least 0.98.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

TARGET_RATIO = 0.98  # the target: CU throughput >= 0.98x DU in the same pipeline
TARGET_SPEEDUP = 3.0  # DALI on a GPU >= 3x the DataLoader baselines


@dataclass(frozen=True)
class Cost:
    """Strategy vs reference (DU) in one loader."""

    loader: str
    strategy: str
    reference: str
    metric: str  # "throughput" (tiles/s, wall clock) or "cpu" (tiles per CPU-second of process + workers)
    ratio: float  # median(strategy) / median(reference)
    ratio_low: float
    ratio_high: float
    cost_pct: float  # 100 (1 - ratio)
    spread_pct: float  # 100 (ratio_high - ratio_low) / 2
    meets_target: bool
    passes: int = 1  # > 1: ratio and interval from per-pass ratios

    def sentence(self, labels: dict[str, str] | None = None) -> str:
        name = (labels or {}).get(self.strategy, self.strategy)
        ref = (labels or {}).get(self.reference, self.reference)
        word = "costs" if self.cost_pct >= 0 else "gains"
        what = "throughput" if self.metric == "throughput" else "tiles per CPU-second"
        return (
            f"{self.loader}: {name} {word} {abs(self.cost_pct):.1f} % (± {self.spread_pct:.1f}) {what} relative to "
            f"{ref} ({self.ratio:.3f}×, {self._basis()}; target ≥ {TARGET_RATIO}×: "
            f"{'met' if self.meets_target else 'not met'})"
        )

    def _basis(self) -> str:
        return f"median of {self.passes} paired passes" if self.passes > 1 else "medians of the windows"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost(
    loader: str,
    strategy: str,
    rates: list[float],
    reference_rates: list[float],
    reference: str = "du",
    metric: str = "throughput",
    pass_rates: list[list[float]] | None = None,
    pass_reference_rates: list[list[float]] | None = None,
) -> Cost:
    """The :class:`Cost` of ``rates`` (tiles/s per window) relative to ``reference_rates``; with the windows of
    each pass given too (same number of passes for both), from the per-pass ratios (see the module doc)."""
    if not rates or not reference_rates:
        raise ValueError("cost needs at least one measurement of each strategy")
    passes = 1
    if pass_rates and pass_reference_rates and len(pass_rates) == len(pass_reference_rates) > 1:
        per_pass = [statistics.median(a) / statistics.median(b)
                    for a, b in zip(pass_rates, pass_reference_rates) if a and b]  # fmt: skip
        passes = len(per_pass)
    if passes > 1:
        ratio, low, high = statistics.median(per_pass), min(per_pass), max(per_pass)
    else:
        ratio = statistics.median(rates) / statistics.median(reference_rates)
        low = min(rates) / max(reference_rates)
        high = max(rates) / min(reference_rates)
    return Cost(
        loader=loader,
        strategy=strategy,
        reference=reference,
        metric=metric,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        cost_pct=100.0 * (1.0 - ratio),
        spread_pct=100.0 * (high - low) / 2.0,
        meets_target=ratio >= TARGET_RATIO,
        passes=passes,
    )


def strategy_costs(results: list[dict[str, Any]], reference: str = "du", metric: str = "throughput") -> list[Cost]:
    """Every (loader, strategy != reference) cost among throughput results (dicts with loader, strategy, rates
    and cpu_ms_per_tile). ``metric="cpu"`` compares tiles per CPU-second (1000 / cpu_ms_per_tile) instead."""

    def values(r: dict[str, Any]) -> list[float]:
        if metric == "cpu":
            return [1e3 / v for v in r.get("cpu_ms_per_tile", []) if v > 0]
        return list(r.get("rates", []))

    def per_pass(r: dict[str, Any]) -> list[list[float]] | None:
        if metric == "cpu":
            passes = r.get("pass_cpu_ms_per_tile")
            return [[1e3 / v for v in p if v > 0] for p in passes] if passes else None
        return r.get("pass_rates")

    by_key = {(r["loader"], r["strategy"]): r for r in results if r["loader"] != "synthetic"}
    costs = []
    for (loader, strategy), r in by_key.items():
        ref = by_key.get((loader, reference))
        if strategy != reference and ref and values(r) and values(ref):
            costs.append(cost(loader, strategy, values(r), values(ref), reference, metric, per_pass(r), per_pass(ref)))
    return costs


def speedups(results: list[dict[str, Any]], fast: str = "dali", slow: str = "baseline") -> dict[str, float]:
    """median(fast) / median(slow) per strategy measured for both loaders."""
    med = {(r["loader"], r["strategy"]): statistics.median(r["rates"]) for r in results if r.get("rates")}
    return {s: med[(fast, s)] / med[(slow, s)] for (loader, s) in med if loader == fast and (slow, s) in med}


def keeps_up(loader_tiles_per_s: float, trainer_tiles_per_s: float) -> dict[str, Any]:
    """Whether a loader delivers tiles at least as fast as the trainer consumes them, and by what factor."""
    ratio = loader_tiles_per_s / trainer_tiles_per_s if trainer_tiles_per_s > 0 else float("inf")
    return {"loader_tiles_per_s": loader_tiles_per_s, "trainer_tiles_per_s": trainer_tiles_per_s,
            "ratio": ratio, "keeps_up": ratio >= 1.0}  # fmt: skip
