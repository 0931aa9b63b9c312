"""The magnifications of the method, named once: the standard mpps, the ones in between, and how an mpp is written.

Pathology models are trained and compared at the standard magnifications 0.25, 0.5, 1.0 and 2.0 microns per pixel
(40x, 20x, 10x, 5x); the method's point is what happens in between, at 0.375, 0.75 and 1.5 mpp. Evaluation covers
all seven.
"""

from __future__ import annotations

STANDARD_MPPS = (0.25, 0.5, 1.0, 2.0)  # the discrete-uniform (DU) set and the probes' training mpps
INTERMEDIATE_MPPS = (0.375, 0.75, 1.5)  # where discrete training leaves its dips
EVAL_MPPS = tuple(sorted(STANDARD_MPPS + INTERMEDIATE_MPPS))
TRAIN_RANGE = (0.25, 2.0)  # the continuous strategies' range


def mpp_key(mpp: float) -> str:
    """The name an mpp gets in files and JSON ("0.375"), stable under float round-trips."""
    return f"{float(mpp):g}"
