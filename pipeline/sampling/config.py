"""Configuration schema of a target-mpp sampling strategy."""

from __future__ import annotations

from dataclasses import dataclass, field

from gapless.pipeline.sampling.magnifications import STANDARD_MPPS, TRAIN_RANGE

STRATEGIES = ("fixed", "du", "cu", "maxavg", "minmax", "file")
PAPER_STRATEGIES = ("du", "cu", "maxavg", "minmax")  # the strategies the method compares
CONTINUOUS = ("cu", "maxavg", "minmax")
STRATEGY_LABELS = {
    "fixed": "fixed",
    "du": "DU",
    "cu": "CU",
    "maxavg": "CU-MAXAVG",
    "minmax": "CU-MINMAX",
    "file": "file",
}
KERNELS = ("information", "loglaplace")


@dataclass
class SamplingConfig:
    """Which distribution of target mpp tiles are drawn from.

    strategy: fixed (one mpp), du (discrete uniform over ``du_mpps``), cu (continuous uniform on [low, high]),
    maxavg (p ∝ exp(K̄/lam)), minmax (the max-min LP), file (a density given on a grid in ``density_file``).
    """

    strategy: str = "cu"
    low: float = TRAIN_RANGE[0]
    high: float = TRAIN_RANGE[1]
    du_mpps: list[float] = field(default_factory=lambda: list(STANDARD_MPPS))
    fixed_mpp: float = 0.5
    lam: float = 1.0
    kernel: str = "information"
    kernel_sigma: float = 0.5
    grid: int = 1000
    density_file: str = ""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown strategy '{self.strategy}' (choose from {', '.join(STRATEGIES)})")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel: unknown kernel '{self.kernel}' (choose from {', '.join(KERNELS)})")
        if not self.low > 0:
            raise ValueError(f"low: the mpp range must be positive, got low={self.low}")
        if not self.high > self.low:
            raise ValueError(f"high: the mpp range needs low < high, got [{self.low}, {self.high}]")
        if not self.lam > 0:
            raise ValueError(f"lam: the entropy weight must be > 0, got {self.lam}")
        if not self.kernel_sigma > 0:
            raise ValueError(f"kernel_sigma: must be > 0, got {self.kernel_sigma}")
        if self.grid < 10:
            raise ValueError(f"grid: needs at least 10 points, got {self.grid}")
        if self.strategy == "du" and not self.du_mpps:
            raise ValueError("du_mpps: the DU strategy needs at least one mpp")
        if any(m <= 0 for m in self.du_mpps):
            raise ValueError(f"du_mpps: every mpp must be positive, got {self.du_mpps}")
        if self.fixed_mpp <= 0:
            raise ValueError(f"fixed_mpp: must be positive, got {self.fixed_mpp}")
        if self.strategy == "file" and not self.density_file:
            raise ValueError("density_file: the 'file' strategy needs a density file")
