"""Configuration schema of the evaluation: which mpps, how RankMe is computed, the probe grids.

Defaults follow the paper's protocol (REFERENCE.md §1): probes train on embeddings pooled from the four standard
mpps and are tested at all seven; k and C are chosen on validation balanced accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gapless.pipeline.sampling.magnifications import STANDARD_MPPS

KNN_KS = (1, 3, 5, 10, 20, 40, 80)
# The paper's grid, logspace(-4, 4, 9). A full sweep is slow on a CPU; `linear_cs` takes any list.
LINEAR_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


@dataclass
class EvalConfig:
    """Evaluation settings. ``test_mpps`` empty means every mpp the set holds."""

    train_mpps: list[float] = field(default_factory=lambda: list(STANDARD_MPPS))
    test_mpps: list[float] = field(default_factory=list)
    knn_ks: list[int] = field(default_factory=lambda: list(KNN_KS))
    knn_vote: str = "majority"  # majority (sklearn's uniform weights) | weighted (DINO: exp(cos / 0.07))
    knn_temperature: float = 0.07
    linear_cs: list[float] = field(default_factory=lambda: list(LINEAR_CS))
    linear_max_iter: int = 1000
    linear_warm_start: bool = False  # True: each C starts from the previous C's weights (faster, see eval.probes)
    refit: bool = True  # refit the chosen k / C on train + validation before testing
    rankme_method: str = "svd"  # svd (singular values of the N x D matrix) | cov (covariance eigenvalues)
    rankme_eps: float = 1e-7
    rankme_samples: int = 0  # 0: the smallest count over mpps (the same N at every mpp)
    probes: list[str] = field(default_factory=lambda: ["knn", "linear"])
    seed: int = 0
    batch_size: int = 64  # feature extraction
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        if self.knn_vote not in ("majority", "weighted"):
            raise ValueError(f"knn_vote: '{self.knn_vote}' is not one of majority, weighted")
        if self.rankme_method not in ("svd", "cov"):
            raise ValueError(f"rankme_method: '{self.rankme_method}' is not one of svd, cov")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: '{self.device}' is not one of auto, cpu, cuda")
        unknown = set(self.probes) - {"knn", "linear"}
        if unknown:
            raise ValueError(f"probes: unknown probe(s) {sorted(unknown)} (choose from knn, linear)")
        if not self.train_mpps:
            raise ValueError("train_mpps: needs at least one mpp")
        if any(k < 1 for k in self.knn_ks) or not self.knn_ks:
            raise ValueError(f"knn_ks: every k must be >= 1, got {self.knn_ks}")
        if any(c <= 0 for c in self.linear_cs) or not self.linear_cs:
            raise ValueError(f"linear_cs: every C must be > 0, got {self.linear_cs}")
        if self.rankme_eps < 0 or self.rankme_samples < 0 or self.batch_size < 1 or self.linear_max_iter < 1:
            raise ValueError("rankme_eps, rankme_samples must be >= 0; batch_size, linear_max_iter >= 1")
