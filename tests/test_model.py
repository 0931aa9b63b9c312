"""ViT, DINO head, iBOT masks, schedules and optimiser parameter groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gapless.config import load_config
from gapless.train.config import PretrainConfig
from gapless.train.head import DINOHead
from gapless.train.masking import block_mask, make_masks
from gapless.train.optim import apply_schedule, build_optimizer
from gapless.train.schedules import build_schedules, cosine_schedule
from gapless.train.ssl import build_models
from gapless.train.vit import Attention, VisionTransformer, build_vit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_vit(**kw) -> VisionTransformer:
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, **kw)


def test_forward_features_global_and_local_crops() -> None:
    vit = tiny_vit().eval()
    out = vit.forward_features(torch.randn(3, 3, 64, 64))
    assert out["x_norm_clstoken"].shape == (3, 32) and out["x_norm_patchtokens"].shape == (3, 16, 32)
    local = vit.forward_features(torch.randn(2, 3, 32, 32))  # interpolated position embedding (2x2 grid)
    assert local["x_norm_patchtokens"].shape == (2, 4, 32)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit.forward_features(torch.randn(1, 3, 40, 40))


def test_vit_small_takes_224_and_96() -> None:
    cfg = load_config(PretrainConfig, None, [])
    vit = build_vit(cfg.model, 224).eval()
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(21.7e6, rel=0.02)  # ViT-S/16
    with torch.no_grad():
        assert vit.forward_features(torch.randn(1, 3, 224, 224))["x_norm_patchtokens"].shape == (1, 196, 384)
        assert vit.forward_features(torch.randn(1, 3, 96, 96))["x_norm_patchtokens"].shape == (1, 36, 384)


def test_mask_token_replaces_masked_patches() -> None:
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, :5] = True
    with torch.no_grad():
        vit.mask_token.fill_(0.5)
        tokens = vit.prepare_tokens(x, masks)
        plain = vit.prepare_tokens(x)
    pos = vit.pos_embed[0, 1:6]
    assert torch.allclose(tokens[0, 1:6], 0.5 + pos)
    assert torch.equal(tokens[0, 6:], plain[0, 6:]) and torch.equal(tokens[1], plain[1])


def test_sdpa_attention_matches_explicit_softmax() -> None:
    attn = Attention(dim=8, num_heads=2, impl="sdpa")
    x = torch.randn(2, 5, 8)
    qkv = attn.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = F.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(attn(x), expected, atol=1e-6)
    assert not attn.uses_xformers(x)  # CPU tensors never take the xFormers path


def test_drop_path_only_in_training() -> None:
    vit = tiny_vit(drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    vit.eval()
    a, b = vit(x), vit(x)
    assert torch.equal(a, b)
    vit.train()
    torch.manual_seed(0)
    assert not torch.equal(vit(x), a)


def test_head_shapes_and_unit_prototypes() -> None:
    head = DINOHead(32, prototypes=100, hidden=64, bottleneck=16)
    scores = head(torch.randn(5, 32))
    assert scores.shape == (5, 100)
    assert scores.abs().max() <= 1.0 + 1e-5  # cosine similarities: unit bottleneck, unit prototypes


def test_block_mask_counts_and_determinism() -> None:
    m = block_mask(np.random.default_rng(0), (14, 14), 60, max_block=98)
    assert 40 <= m.sum() <= 60
    a = make_masks(seed=1, rank=0, iteration=5, n_crops=16, grid=(14, 14))
    b = make_masks(seed=1, rank=0, iteration=5, n_crops=16, grid=(14, 14))
    c = make_masks(seed=1, rank=1, iteration=5, n_crops=16, grid=(14, 14))
    assert torch.equal(a.masks, b.masks) and not torch.equal(a.masks, c.masks)
    masked_crops = a.masks.any(dim=1)
    assert masked_crops.sum() == 8  # mask_probability 0.5
    ratios = a.masks[masked_crops].float().mean(dim=1)
    assert ratios.min() >= 0.05 and ratios.max() <= 0.5
    assert torch.equal(a.indices, a.masks.flatten().nonzero().squeeze(1))
    # each masked crop's weights sum to 1
    crop_of = a.indices // 196
    sums = torch.zeros(16).index_add_(0, crop_of, a.weights)
    assert torch.allclose(sums[masked_crops], torch.ones(8))


def test_cosine_schedule_shape() -> None:
    s = cosine_schedule(1.0, 0.0, total=20, warmup=5, warmup_start=0.0)
    # The warmup ends at the peak (its last iteration, 4, is at 1.0), where the cosine starts.
    assert len(s) == 20 and s[0] == 0.0 and s[4] == 1.0 and s[5] == 1.0 and s[-1] == pytest.approx(0.0, abs=0.02)
    assert np.all(np.diff(s[:5]) > 0) and np.all(np.diff(s[5:]) <= 0)


def test_schedules_follow_the_recipe() -> None:
    cfg = load_config(PretrainConfig, None, ["epochs=50", "data.iterations_per_epoch=10", "data.batch_size=64"])
    s = build_schedules(cfg, world_size=4)  # global batch 256: lr = 4e-3 * sqrt(256 / 1024) = 2e-3
    assert s.lr[0] == 0.0 and s.lr[99] == s.lr[100] == pytest.approx(2e-3) and s.lr[-1] == pytest.approx(1e-6, abs=1e-6)
    assert np.all(s.last_layer_lr[:10] == 0) and s.last_layer_lr[10] == s.lr[10]
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.4, abs=1e-3)
    assert s.momentum[0] == pytest.approx(0.992) and s.momentum[-1] == pytest.approx(1.0, abs=1e-5)
    assert s.teacher_temp[0] == pytest.approx(0.04) and s.teacher_temp[299:].min() == pytest.approx(0.07)
    assert s.at(10_000)["lr"] == s.lr[-1]


def test_optimizer_groups_layer_decay_and_no_decay() -> None:
    cfg = load_config(PretrainConfig, None, ["model.arch=vit_tiny_test", "data.augment.global_size=64"])
    student, _ = build_models(cfg)
    opt = build_optimizer(student, depth=2, layerwise_decay=0.9, patch_embed_lr_mult=0.2, betas=(0.9, 0.999))
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(student.named_parameters())
    pe = group_of[id(named["backbone.patch_embed.weight"])]
    assert pe["lr_multiplier"] == pytest.approx(0.9**3 * 0.2) and pe["wd_multiplier"] == 1.0
    for token in ("pos_embed", "cls_token", "mask_token"):  # decayed, as in DINOv2
        assert group_of[id(named[f"backbone.{token}"])]["wd_multiplier"] == 1.0, token
    assert group_of[id(named["backbone.blocks.0.ls1.gamma"])]["wd_multiplier"] == 0.0
    assert group_of[id(named["backbone.blocks.0.norm1.weight"])]["wd_multiplier"] == 0.0
    assert group_of[id(named["backbone.blocks.1.attn.qkv.bias"])]["wd_multiplier"] == 0.0
    assert group_of[id(named["backbone.blocks.1.attn.qkv.weight"])]["lr_multiplier"] == pytest.approx(0.9)
    assert group_of[id(named["head.mlp.0.weight"])]["lr_multiplier"] == 1.0
    for name in ("head.last_layer.weight_v", "head.last_layer.weight_g"):  # the prototypes and their gains
        assert group_of[id(named[name])]["is_last_layer"] and group_of[id(named[name])]["wd_multiplier"] == 1.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)


def test_fused_adamw_matches_the_multi_tensor_one() -> None:
    """optim.fused=true changes the kernel, not the update: equal to float round-off over a few steps."""
    cfg = load_config(PretrainConfig, None, ["model.arch=vit_tiny_test", "data.augment.global_size=64"])
    torch.manual_seed(0)
    a, _ = build_models(cfg)
    b, _ = build_models(cfg)
    b.load_state_dict(a.state_dict())
    opts = [build_optimizer(m, 2, 0.9, 0.2, (0.9, 0.999), fused=f) for m, f in ((a, False), (b, True))]
    for step in range(3):
        torch.manual_seed(step)
        grads = [torch.randn_like(p) for p in a.parameters()]
        for model, opt in zip((a, b), opts):
            apply_schedule(opt, 1e-3, 1e-3, 0.04)
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
