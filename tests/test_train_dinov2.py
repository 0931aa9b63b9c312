"""The recipe against DINOv2's (facebookresearch/dinov2), one test per rule: schedules, parameter groups, the
prototype layer's trained gain, weight decay on the tokens, LayerScale, the position-embedding offset, stochastic
depth, and the pairing and averaging of the losses. Each reference below restates DINOv2's definition in a few
lines of plain PyTorch/NumPy and is compared with the trainer's own code on identical inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gapless.cli import main as gapless_main
from gapless.config import load_config
from gapless.train.checkpoint import list_checkpoints
from gapless.train.config import PretrainConfig
from gapless.train.head import WeightNormLinear
from gapless.train.loop import train
from gapless.train.masking import make_masks
from gapless.train.optim import apply_schedule, build_optimizer
from gapless.train.recipe import explain
from gapless.train.schedules import build_schedules
from gapless.train.ssl import DINOv2Objective, build_models
from gapless.train.vit import VisionTransformer, add_residual_of_subset, build_vit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY_MODEL = ["model.arch=vit_tiny_test", "data.augment.global_size=64", "data.augment.local_size=32"]


def dinov2_cosine(base, final, total, warmup=0, start=0.0, freeze=0) -> list[float]:
    """DINOv2's CosineScheduler: zeros while frozen, a linear ramp that ends at ``base`` (both ends included), a
    cosine over the rest; indexed past the end, ``final``."""
    ramp = np.linspace(start, base, warmup)
    n = total - warmup - freeze
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * np.arange(n) / n))
    return [*np.zeros(freeze), *ramp, *cosine]


def test_schedules_equal_dinov2s() -> None:
    cfg = load_config(PretrainConfig, None, ["epochs=10", "data.iterations_per_epoch=7", "data.batch_size=16",
                                             "optim.warmup_epochs=2", "schedule.teacher_temp_warmup_epochs=3",
                                             "optim.freeze_last_layer_epochs=1"])  # fmt: skip
    s = build_schedules(cfg, world_size=4)
    lr = 4e-3 * math.sqrt(64 / 1024)  # sqrt_wrt_1024
    assert s.lr.tolist() == pytest.approx(dinov2_cosine(lr, 1e-6, 70, warmup=14), rel=1e-12)
    assert s.lr[13] == pytest.approx(lr) and s.lr[12] < lr  # the warmup's last iteration is at the peak
    last_layer = dinov2_cosine(lr, 1e-6, 70, warmup=14)
    last_layer[:7] = [0.0] * 7
    assert s.last_layer_lr.tolist() == pytest.approx(last_layer, rel=1e-12)
    assert s.weight_decay.tolist() == pytest.approx(dinov2_cosine(0.04, 0.4, 70), rel=1e-12)
    assert s.momentum.tolist() == pytest.approx(dinov2_cosine(0.992, 1.0, 70), rel=1e-12)
    temp = dinov2_cosine(0.07, 0.07, 21, warmup=21, start=0.04) + [0.07] * 49  # past its end: the final value
    assert s.teacher_temp.tolist() == pytest.approx(temp, rel=1e-12) and s.teacher_temp[20] == 0.07


def dinov2_groups(name: str, depth: int, decay: float = 0.9, patch_mult: float = 0.2) -> tuple[float, float, bool]:
    """(lr multiplier, wd multiplier, is last layer) by DINOv2's get_params_groups_with_decay, which runs per
    submodel: backbone names without a prefix, head names without one and no blocks (depth 0)."""
    module, _, rest = name.partition(".")
    layers = depth if module == "backbone" else 0
    layer = layers + 1
    if module == "backbone":
        if any(k in rest for k in ("pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens")):
            layer = 0
        elif rest.startswith("blocks."):
            layer = int(rest.split(".")[1]) + 1
    lr = decay ** (layers + 1 - layer) * (patch_mult if "patch_embed" in rest else 1.0)
    wd = 0.0 if rest.endswith(".bias") or "norm" in rest or "gamma" in rest else 1.0
    return lr, wd, "last_layer" in rest


def test_parameter_groups_follow_dinov2s_rules() -> None:
    cfg = load_config(PretrainConfig, None, TINY_MODEL)
    student, _ = build_models(cfg)
    optimizer = build_optimizer(student, 2, 0.9, 0.2, (0.9, 0.999))
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, p in student.named_parameters():
        g = group_of[id(p)]
        lr, wd, last = dinov2_groups(name, depth=2)
        assert (g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) == (pytest.approx(lr), wd, last), name


def test_prototype_layer_is_torch_weight_norm_with_a_trained_gain() -> None:
    torch.manual_seed(0)
    ours = WeightNormLinear(8, 5)
    assert torch.equal(ours.weight_g, torch.ones(5, 1))  # DINOv2 fills the gain with 1
    with torch.no_grad():
        ours.weight_g.uniform_(0.5, 2.0)
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(8, 5, bias=False))
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(ours.weight_g)
        reference.parametrizations.weight.original1.copy_(ours.weight_v)
    x = torch.randn(3, 8)
    assert torch.allclose(ours(x), reference(x), atol=1e-6)
    ours(x).sum().backward()
    assert ours.weight_g.grad is not None and ours.weight_g.grad.abs().sum() > 0


def test_last_layer_gain_is_frozen_then_trained(tmp_path) -> None:
    # Frozen for 3 iterations (lr 0, as the rest of the last layer), trained from the 4th on.
    cfg = load_config(PretrainConfig, "pretrain_tiny_cpu", ["optim.freeze_last_layer_epochs=0.3", "epochs=0.5",
                                                            "checkpoint.every=1", "checkpoint.keep=10"])  # fmt: skip
    train(cfg, tmp_path)
    gains = {int(p.stem[5:]): torch.load(p, weights_only=True)["student"]["head.last_layer.weight_g"]
             for p in list_checkpoints(tmp_path)}  # fmt: skip
    directions = {int(p.stem[5:]): torch.load(p, weights_only=True)["student"]["head.last_layer.weight_v"]
                  for p in list_checkpoints(tmp_path)}  # fmt: skip
    assert torch.equal(gains[3], torch.ones_like(gains[3])) and torch.equal(directions[1], directions[3])
    assert not torch.equal(gains[4], gains[3]) and not torch.equal(gains[5], gains[4])
    assert not torch.equal(directions[4], directions[3])


def test_tokens_get_the_scheduled_weight_decay() -> None:
    cfg = load_config(PretrainConfig, None, TINY_MODEL)
    student, _ = build_models(cfg)
    optimizer = build_optimizer(student, 2, 0.9, 0.2, (0.9, 0.999))
    named = dict(student.named_parameters())
    with torch.no_grad():
        named["backbone.mask_token"].fill_(1.0)
    tokens = {k: named[f"backbone.{k}"].detach().clone() for k in ("cls_token", "pos_embed", "mask_token")}
    lr, wd = 0.5, 0.2
    apply_schedule(optimizer, lr, lr, wd)
    for p in student.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: an AdamW step is the decay alone
    optimizer.step()
    factor = 1 - lr * 0.9**3 * wd  # the embeddings' layer-wise lr multiplier (depth 2: 0.9 ** 3)
    for k, before in tokens.items():
        assert torch.allclose(named[f"backbone.{k}"], before * factor, atol=1e-7), k


def test_layerscale_is_dinov2s_by_default() -> None:
    cfg = load_config(PretrainConfig, None, TINY_MODEL)
    assert cfg.model.layerscale == 1e-5
    vit = build_vit(cfg.model, 64)
    assert torch.all(vit.blocks[0].ls1.gamma == 1e-5) and torch.all(vit.blocks[1].ls2.gamma == 1e-5)


def test_position_embedding_interpolation_has_dinov2s_offset() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=8, depth=1, num_heads=2)
    grid = vit.pos_embed[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    for h, w in ((6, 6), (6, 4)):
        # DINOv2: bicubic with scale factors (n + 0.1) / 14, whose floor gives the output size
        reference = F.interpolate(grid, scale_factor=((h + 0.1) / 14, (w + 0.1) / 14), mode="bicubic")
        reference = torch.cat([vit.pos_embed[:, :1], reference.permute(0, 2, 3, 1).reshape(1, h * w, 8)], dim=1)
        assert torch.equal(vit.interpolate_pos_encoding(h, w), reference)
        by_size = F.interpolate(grid, size=(h, w), mode="bicubic").permute(0, 2, 3, 1).reshape(1, h * w, 8)
        assert not torch.allclose(reference[:, 1:], by_size)  # the offset moves where the grid is sampled
    assert vit.interpolate_pos_encoding(14, 14) is vit.pos_embed


def test_stochastic_depth_above_0_1_runs_the_branch_on_a_batch_subset() -> None:
    torch.manual_seed(0)
    x = torch.zeros(10, 3, 4)
    out = add_residual_of_subset(x, torch.ones_like, rate=0.3)
    touched = out.flatten(1).abs().sum(dim=1) > 0
    assert touched.sum() == 7  # int(10 * (1 - 0.3)) samples, as DINOv2
    assert torch.allclose(out[touched], torch.full((7, 3, 4), 10 / 7))  # scaled by batch / subset
    assert torch.equal(out[~touched], x[~touched])


def dinov2_total_loss(objective, student, teacher_cls_targets, patch_targets, masks, n_local) -> torch.Tensor:
    """DINOv2's forward_backward arrangement: both global crops as one batch against the swapped teacher
    targets, x 2 / (pairs); local crops against both teacher crops / (pairs); iBOT x 2 x 1/2; KoLeo per crop."""
    t = objective.cfg
    pairs = 2 * 1 + 2 * n_local
    swapped = torch.cat(teacher_cls_targets.chunk(2)[::-1])

    def ce(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return -(p * F.log_softmax(s / t.student_temp, dim=-1)).sum(dim=-1).mean()

    dino_global = ce(student["global_scores"], swapped) * 2 / pairs
    dino_local = sum(ce(s, p) for s in student["local_scores"].chunk(n_local) for p in teacher_cls_targets.chunk(2))
    per_patch = (patch_targets * F.log_softmax(student["patch_scores"] / t.student_temp, dim=-1)).sum(dim=-1)
    ibot = -(per_patch * masks.weights).sum() / masks.masks.shape[0] * 2 * 0.5
    koleo = sum(objective.koleo(c) for c in student["global_cls_features"].chunk(2))
    return dino_global + dino_local / pairs + t.ibot_weight * ibot + t.koleo_weight * koleo


def test_loss_pairing_and_averaging_equal_dinov2s() -> None:
    torch.manual_seed(0)
    cfg = load_config(PretrainConfig, None, [*TINY_MODEL, "model.head_prototypes=64"])
    b, n_local = 4, 3
    masks = make_masks(0, 0, 0, 2 * b, (4, 4))
    objective = DINOv2Objective(cfg.loss, 64, 2, n_local)
    m = int(masks.indices.numel())
    student = {"global_scores": torch.randn(2 * b, 64), "local_scores": torch.randn(n_local * b, 64),
               "patch_scores": torch.randn(m, 64), "global_cls_features": torch.randn(2 * b, 32)}  # fmt: skip
    teacher = {"global_scores": torch.randn(2 * b, 64), "patch_scores": torch.randn(m, 64)}
    cls_targets = objective.dino.softmax_center_teacher(teacher["global_scores"], 0.05)
    patch_targets = objective.ibot.softmax_center_teacher(teacher["patch_scores"], 0.05)
    total, _ = objective(student, teacher, masks, 0.05)
    expected = dinov2_total_loss(objective, student, cls_targets, patch_targets, masks, n_local)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_explain_lists_only_what_differs(capsys) -> None:
    vits = load_config(PretrainConfig, "pretrain_vits16", [])
    assert explain(vits, world_size=8)["values"] == []  # the shipped ViT-S/16 config is DINOv2's recipe
    assert gapless_main(["pretrain", "--config", "pretrain_tiny_cpu", "--explain", "model.drop_path=0.3"]) == 0
    out = capsys.readouterr().err  # tables go to stderr with every other message
    assert "model.layerscale" in out and "model.drop_path" not in out and "colour jitter" in out
