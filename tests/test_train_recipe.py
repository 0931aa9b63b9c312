"""The short CPU recipes (demo, reproduce tiny/small) against the two ways a short run on a tiny model fails.

1. A slow EMA over a short run leaves the teacher, which is what gets evaluated, mostly at its initial weights, and
   the "trained" network scores like the untrained control by construction.
2. At initialisation a 32-wide ViT maps every tile to nearly the same CLS token, so targets that do not spread the
   batch over the prototypes are the same few prototypes for every image (nothing to distil).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from gapless.apps.experiment import load_experiment
from gapless.pipeline.synthetic import SyntheticLoader
from gapless.train.masking import make_masks
from gapless.train.schedules import build_schedules
from gapless.train.ssl import DINOv2Objective, build_models

SHORT = ["demo_cpu", "reproduce_tiny", "reproduce_small"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def initial_weight_share(momentum: np.ndarray) -> float:
    """How much of its initial weights the EMA teacher still holds after the run: the product of the momenta."""
    return float(np.prod(momentum))


@pytest.mark.parametrize("name", SHORT)
def test_teacher_moves_off_its_initial_weights(name: str) -> None:
    cfg = load_experiment(name, []).pretrain
    momentum = build_schedules(cfg, world_size=1).momentum
    assert len(momentum) == cfg.total_iterations
    assert initial_weight_share(momentum) < 0.3, f"{name}: the teacher ends mostly untrained"


def first_step_monitors(overrides: list[str]) -> dict[str, float]:
    """The teacher's collapse monitors at iteration 0 of the demo recipe, on a synthetic multi-crop batch."""
    cfg = load_experiment("demo_cpu", overrides).pretrain
    torch.manual_seed(cfg.seed)
    student, teacher = build_models(cfg)
    a, batch_size = cfg.data.augment, cfg.data.batch_size
    loader = SyntheticLoader(dataclasses.replace(cfg.data, loader="synthetic"), device=torch.device("cpu"))
    batch = loader.batch(0)
    masks = make_masks(cfg.seed, 0, 0, a.global_crops * batch_size, (a.global_size // cfg.model.patch_size,) * 2)
    objective = DINOv2Objective(cfg.loss, cfg.model.head_prototypes, a.global_crops, a.local_crops)
    with torch.no_grad():
        _, parts = objective(
            student(batch["global_crops"], batch["local_crops"], masks),
            teacher.teacher_forward(batch["global_crops"], masks),
            masks,
            cfg.schedule.teacher_temp,
        )
    return {k: float(v) for k, v in parts.items()} | {"log_k": math.log(cfg.model.head_prototypes)}


def test_demo_recipe_targets_differ_between_images_from_the_first_step() -> None:
    m = first_step_monitors([])
    assert m["teacher_marginal_entropy"] > 0.9 * m["log_k"], m  # every prototype in use
    assert m["teacher_marginal_entropy"] - m["teacher_entropy"] > 0.5, m  # each image its own target
