"""gapless: continuous-magnification data pipeline and DINOv2 pretraining for pathology foundation models.

This core package holds what every subsystem shares: the ``gapless`` command line, configuration machinery and
console/report helpers. The subsystems are the sibling packages ``pipeline``, ``train``, ``eval`` and
``benchmarks``.
"""

__version__ = "0.1.0"
