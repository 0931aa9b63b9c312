"""Target-mpp sampling: distributions (DU, CU, CU-MAXAVG, CU-MINMAX, fixed, from file), kernels and analysis."""

from gapless.pipeline.sampling.analysis import signal, summarize
from gapless.pipeline.sampling.config import SamplingConfig
from gapless.pipeline.sampling.distributions import Distribution, GridDensity, Mixture, PointMasses
from gapless.pipeline.sampling.kernels import information_kernel, kernel_matrix, loglaplace_kernel, make_kernel
from gapless.pipeline.sampling.strategies import build_distribution, load_density_file, mean_kernel

__all__ = [
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
