"""Target-mpp sampling: distributions (DU, CU, CU-MAXAVG, CU-MINMAX, fixed, from file), kernels and analysis."""

from pipeline.sampling.analysis import EVAL_MPPS, signal, summarize
from pipeline.sampling.config import SamplingConfig
from pipeline.sampling.distributions import Distribution, GridDensity, Mixture, PointMasses
from pipeline.sampling.kernels import information_kernel, kernel_matrix, loglaplace_kernel, make_kernel
from pipeline.sampling.strategies import build_distribution, load_density_file, mean_kernel

__all__ = [
    "EVAL_MPPS",
    "Distribution",
    "GridDensity",
    "Mixture",
    "PointMasses",
    "SamplingConfig",
    "build_distribution",
    "information_kernel",
    "kernel_matrix",
    "load_density_file",
    "loglaplace_kernel",
    "make_kernel",
    "mean_kernel",
    "signal",
    "summarize",
]
