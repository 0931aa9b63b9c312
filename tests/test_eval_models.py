"""Every accepted model format loads and embeds exactly as the model itself does; bad models are one line each.

Real timm ViTs with random weights, saved in each format the evaluation accepts, must give the same embeddings as a
direct computation on the model; a DINOv2 teacher checkpoint must give the tokens of DINOv2's own forward (written
out here from its definition); a gapless checkpoint exported for timm must give the checkpoint's features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from gapless.cli import main
from gapless.errors import InputError
from gapless.eval.models import timm_models
from gapless.eval.models.backbone import IMAGENET
from gapless.eval.models.resolve import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TILE = 64
ARCH = "vit_small_patch16_224"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": TILE, "patch_size": 8}  # seconds, not minutes
WORDS = [f"model.{k}={v}" for k, v in TINY.items()]


def tiny_vit(seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, num_classes=0, **{**TINY, **extra})
    with torch.no_grad():  # random, not initial, weights: LayerScale and biases too
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, TILE, TILE, 3), dtype=np.uint8)


def direct(model, tiles: np.ndarray, mean, std, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """The embedding computed by hand: normalise, forward_features, L2(CLS) ⊕ L2(mean of the patch tokens)."""
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model.forward_features(x)
    cls, patch = tokens[:, 0], tokens[:, prefix:].mean(1)
    return torch.cat([F.normalize(cls, dim=-1), F.normalize(patch, dim=-1)], -1).numpy(), cls.numpy()


def embed(spec: str, tiles: np.ndarray, weights=None, kwargs=None):
    backbone = load_model(spec, weights, kwargs)
    return backbone, *backbone.embed(tiles, torch.device("cpu"))


def write_format(kind: str, model: torch.nn.Module, root: Path) -> tuple[str, str | None, dict]:
    """Save ``model`` in one accepted format; returns (MODEL, --weights, timm kwargs)."""
    state = model.state_dict()
    if kind == "safetensors":
        save_file(state, str(root / "w.safetensors"))
        return f"timm:{ARCH}", str(root / "w.safetensors"), TINY
    if kind == "pth-nested-prefixed":  # a training script's file: module. prefix, a classifier, other entries
        extra = {"module.head.weight": torch.zeros(5, 32), "module.head.bias": torch.zeros(5)}
        torch.save({"epoch": 3, "model": {**{f"module.{k}": v for k, v in state.items()}, **extra}}, root / "w.pth")
        return f"timm:{ARCH}", str(root / "w.pth"), TINY
    if kind == "bin-state-dict":
        torch.save({"state_dict": state}, root / "w.bin")
        return f"timm:{ARCH}", str(root / "w.bin"), TINY
    folder = root / "released"  # the paper's layout: config.json beside NAME.safetensors
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": ARCH, "img_size": TILE, "model_args": TINY}))
    save_file(state, str(folder / "vits_cu_s1.safetensors"))
    return (str(folder) if kind == "released-folder" else str(folder / "vits_cu_s1.safetensors")), None, {}


@pytest.mark.parametrize(
    "kind", ["safetensors", "pth-nested-prefixed", "bin-state-dict", "released-folder", "released-file"]
)
def test_every_format_gives_the_models_own_embedding(kind: str, tiles: np.ndarray, tmp_path: Path) -> None:
    model = tiny_vit()
    spec, weights, kwargs = write_format(kind, model, tmp_path)
    backbone, embedding, cls = embed(spec, tiles, weights, kwargs)
    released = kind.startswith("released")
    # ImageNet statistics, as the paper's protocol and UNI2-h use: for timm:ARCH --weights too, whose architecture's
    # pretrained config (mean = std = 0.5 for this one) describes timm's weights, not the file given.
    mean, std = IMAGENET
    assert (backbone.mean, backbone.std) == (mean, std) and "ImageNet" in backbone.normalisation_source
    assert ("names none" in backbone.normalisation_source) == released
    expected, expected_cls = direct(model, tiles, mean, std, prefix=1)
    np.testing.assert_allclose(embedding, expected, atol=1e-6)
    np.testing.assert_allclose(cls, expected_cls, atol=1e-6)
    assert backbone.prefix_tokens == 1 and backbone.patch_size == 8 and backbone.input_size == TILE
    if kind == "pth-nested-prefixed":
        assert any("module.head.weight" in note for note in backbone.notes)  # set aside, and said so


def test_register_tokens_are_not_patch_tokens(tiles: np.ndarray, tmp_path: Path) -> None:
    model = tiny_vit(reg_tokens=4, no_embed_class=True)
    save_file(model.state_dict(), str(tmp_path / "r.safetensors"))
    backbone, embedding, _ = embed(f"timm:{ARCH}", tiles, tmp_path / "r.safetensors", {**TINY, "reg_tokens": 4,
                                                                                      "no_embed_class": True})  # fmt: skip
    assert backbone.prefix_tokens == 5
    np.testing.assert_allclose(embedding, direct(model, tiles, *IMAGENET, prefix=5)[0], atol=1e-6)
    with_registers = direct(model, tiles, *IMAGENET, prefix=1)[0]
    assert np.abs(embedding[:, 32:] - with_registers[:, 32:]).max() > 1e-3  # the test can tell them apart


def dinov2_teacher(model: torch.nn.Module, path: Path, registers: bool) -> dict[str, torch.Tensor]:
    """A DINOv2 teacher checkpoint holding ``model``'s weights under DINOv2's names, in two block chunks."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.") if registers else key
        if key.startswith("blocks."):
            i = int(key.split(".")[1])
            key = f"blocks.{i}.{i}." + key.split(".", 2)[2]  # chunk i holds block i (depth 2, 2 chunks)
        state[key.replace("reg_token", "register_tokens")] = value.clone()
    if registers:  # DINOv2 keeps the class token's position in pos_embed: split it back out
        class_position = torch.randn(1, 1, state["cls_token"].shape[-1]) * 0.1
        state["cls_token"] = state["cls_token"] - class_position
        state["pos_embed"] = torch.cat([class_position, state["pos_embed"]], dim=1)
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    teacher = {f"backbone.{k}": v for k, v in state.items()}
    teacher["dino_head.mlp.0.weight"] = torch.zeros(8, 32)
    torch.save({"teacher": teacher}, path)
    return state


def dinov2_forward(w: dict[str, torch.Tensor], x: torch.Tensor, heads: int, swiglu: bool) -> torch.Tensor:
    """DINOv2's ViT forward, written from its definition: (CLS, patches) + pos_embed, then registers, then blocks."""
    patches = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=8).flatten(2).transpose(1, 2)
    t = torch.cat([w["cls_token"].expand(len(x), -1, -1), patches], 1) + w["pos_embed"]
    if "register_tokens" in w:
        t = torch.cat([t[:, :1], w["register_tokens"].expand(len(x), -1, -1), t[:, 1:]], 1)
    d = t.shape[-1]
    for i in range(2):
        b = f"blocks.{i}.{i}."
        h = F.layer_norm(t, (d,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps=1e-6)
        q, k, v = (
            F.linear(h, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"])
            .reshape(*t.shape[:2], 3, heads, -1)
            .permute(2, 0, 3, 1, 4)
        )
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(t.shape)
        t = t + w.get(b + "ls1.gamma", 1.0) * F.linear(a, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        h = F.layer_norm(t, (d,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps=1e-6)
        if swiglu:  # SwiGLUFFN: silu(x1) * x2 of the packed w12 projection, then w3
            x1, x2 = F.linear(h, w[b + "mlp.w12.weight"], w[b + "mlp.w12.bias"]).chunk(2, dim=-1)
            m = F.linear(F.silu(x1) * x2, w[b + "mlp.w3.weight"], w[b + "mlp.w3.bias"])
        else:
            m = F.linear(
                F.gelu(F.linear(h, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"])),
                w[b + "mlp.fc2.weight"],
                w[b + "mlp.fc2.bias"],
            )
        t = t + w.get(b + "ls2.gamma", 1.0) * m
    return F.layer_norm(t, (d,), w["norm.weight"], w["norm.bias"], eps=1e-6)  # fmt: skip


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_teacher_checkpoint_runs_dinov2s_forward(registers: bool, tiles: np.ndarray, tmp_path: Path) -> None:
    # With registers: ViT-S-like layout of a recent DINOv2 run (LayerScale, SwiGLU, 4 registers); without: plain MLP.
    extra = {"reg_tokens": 4, "no_embed_class": True, "init_values": 1e-5, "mlp_ratio": 5.5,
             "mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU} if registers else {}  # fmt: skip
    path = tmp_path / "teacher_checkpoint.pth"
    w = dinov2_teacher(tiny_vit(**extra), path, registers)
    backbone = load_model(str(path), kwargs={"num_heads": 2})  # width 32: DINOv2's 64-wide heads would give 1
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.no_grad():
        np.testing.assert_allclose(backbone.tokens(x).numpy(), dinov2_forward(w, x, 2, registers).numpy(), atol=1e-5)
    assert backbone.prefix_tokens == (5 if registers else 1) and backbone.kind == "dinov2"
    assert backbone.mean == (0.485, 0.456, 0.406) and "DINOv2" in backbone.normalisation_source


@pytest.fixture(scope="module")
def gapless_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported gapless backbone with LayerScale, trained (says its config) with its own normalisation."""
    from gapless.config import to_dict
    from gapless.train.checkpoint import BACKBONE_FORMAT, FORMAT_VERSION
    from gapless.train.config import ModelConfig
    from gapless.train.vit import build_vit

    model_cfg = to_dict(ModelConfig(arch="vit_tiny_test", patch_size=8, drop_path=0.0, layerscale=0.1))
    torch.manual_seed(1)
    vit = build_vit(model_cfg, TILE, drop_path=0.0)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    augment = {"global_size": TILE, "mean": [0.7, 0.5, 0.6], "std": [0.15, 0.2, 0.18]}
    path = tmp_path_factory.mktemp("gapless") / "backbone.pt"
    torch.save({"format": BACKBONE_FORMAT, "version": FORMAT_VERSION, "iteration": 11, "backbone": vit.state_dict(),
                "config": {"model": model_cfg, "data": {"augment": augment}}}, path)  # fmt: skip
    return path


def test_gapless_checkpoint_uses_its_training_normalisation(gapless_backbone: Path, tiles: np.ndarray) -> None:
    backbone, embedding, _ = embed(str(gapless_backbone), tiles)
    assert backbone.mean == (0.7, 0.5, 0.6) and "training config" in backbone.normalisation_source
    assert backbone.step == 11 and backbone.prefix_tokens == 1 and backbone.input_size is None
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    for mean, std, same in (
        ((0.7, 0.5, 0.6), (0.15, 0.2, 0.18), True),
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    ):
        with torch.no_grad():
            out = backbone.module.forward_features(
                (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
            )
        ref = torch.cat(
            [F.normalize(out["x_norm_clstoken"], dim=-1), F.normalize(out["x_norm_patchtokens"].mean(1), dim=-1)], -1
        )
        assert np.allclose(embedding, ref.numpy(), atol=1e-6) == same  # fmt: skip


def test_export_for_timm_round_trips(gapless_backbone: Path, tiles: np.ndarray, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "timm_export"
    assert main(["export", str(gapless_backbone), "--format", "timm", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    model = timm.create_model(config["architecture"], num_classes=0, **config["model_args"])
    result = model.load_state_dict(load_file(str(out / "model.safetensors")))
    assert not result.missing_keys and not result.unexpected_keys
    assert timm.create_model(f"local-dir:{out}", pretrained=True).pretrained_cfg["mean"] == [0.7, 0.5, 0.6]
    original, exported = embed(str(gapless_backbone), tiles), embed(str(out), tiles)
    assert exported[0].mean == original[0].mean and exported[0].kind == "released"
    assert np.abs(exported[1] - original[1]).max() <= 1e-5 and np.abs(exported[2] - original[2]).max() <= 1e-5


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled 512 px region images at 0.25 mpp as a set of 64 px tiles."""
    import cv2

    root = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(1)
    rows = ["path,label,patient,mpp"]
    for i in range(6):
        cv2.imwrite(str(root / f"r{i}.png"), rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
        rows.append(f"r{i}.png,{'ab'[i % 2]},p{i},0.25")
    (root / "regions.csv").write_text("\n".join(rows) + "\n")
    out = root / "set.h5"
    assert main(["eval-set", str(root), "--out", str(out), "--tile-px", str(TILE), "--folds", "3"]) == 0
    return out


def test_features_of_a_timm_model_from_the_command_line(small_set: Path, tmp_path: Path) -> None:
    from gapless.eval.features import FeatureFile
    from gapless.eval.sets.file import EvalSet

    # UNI2-h's layout, in miniature: registers, SwiGLU, SiLU, LayerScale, no class position, any input size
    layout = {"reg_tokens": 8, "no_embed_class": True, "mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU,
              "init_values": 1e-5, "dynamic_img_size": True, "mlp_ratio": 5.33334}  # fmt: skip
    model = tiny_vit(**layout)
    save_file(model.state_dict(), str(tmp_path / "uni_like.safetensors"))
    config = tmp_path / "args.yaml"
    config.write_text("reg_tokens: 8\nno_embed_class: true\nmlp_layer: SwiGLUPacked\nact_layer: SiLU\ninit_values: 1e-5\n"
                      "dynamic_img_size: true\nmlp_ratio: 5.33334\ndepth: 5\n")  # depth: the words below win  # fmt: skip
    out = tmp_path / "f.h5"
    args = ["features", f"timm:{ARCH}", "--weights", str(tmp_path / "uni_like.safetensors"), "--model-args",
            str(config), "--set", str(small_set), "--out", str(out), "--mean", "0.6,0.5,0.4", "--std", "0.2,0.2,0.2"]  # fmt: skip
    assert main([*args, *WORDS, "--device", "cpu"]) == 0
    evalset = EvalSet.load(small_set)
    feats = FeatureFile.load(out, evalset)
    assert feats.model["prefix_tokens"] == 9 and feats.model["normalisation_source"] == "--mean/--std"
    expected = direct(model, evalset.read_tiles(0.75), (0.6, 0.5, 0.4), (0.2, 0.2, 0.2), prefix=9)
    np.testing.assert_allclose(feats.features["0.75"], expected[0], atol=1e-6)
    np.testing.assert_allclose(feats.cls["0.75"], expected[1], atol=1e-6)


def fails(args: list[str], capsys) -> str:
    assert main(args) == 2
    return " ".join(capsys.readouterr().err.split())


def test_bad_models_are_one_line_each(small_set: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    save_file(tiny_vit().state_dict(), str(tmp_path / "w.safetensors"))
    set_args = ["--set", str(small_set), "--out", str(tmp_path / "f.h5")]
    with pytest.raises(InputError, match="unknown timm architecture 'vit_smol_patch16_224' .did you mean vit_small"):
        load_model("timm:vit_smol_patch16_224", tmp_path / "w.safetensors")
    with pytest.raises(InputError, match=r"w.safetensors: weights do not match timm:\S+: 12 missing \(blocks.2.norm1"):
        load_model(f"timm:{ARCH}", tmp_path / "w.safetensors", {**TINY, "depth": 3})
    with pytest.raises(InputError, match=r"weights do not match timm:\S+: 12 unexpected \(blocks.1."):
        load_model(f"timm:{ARCH}", tmp_path / "w.safetensors", {**TINY, "depth": 1})
    with pytest.raises(InputError, match=r"weights have another shape .*cls_token \(1, 1, 32\) vs \(1, 1, 48\)"):
        load_model(f"timm:{ARCH}", tmp_path / "w.safetensors", {**TINY, "embed_dim": 48, "num_heads": 3})
    with pytest.raises(InputError, match="give its weights with --weights"):
        load_model(f"timm:{ARCH}")
    (tmp_path / "folder").mkdir()
    assert "folder: no config.json beside the weights" in fails(
        ["features", str(tmp_path / "folder"), *set_args], capsys
    )
    monkeypatch.setattr(timm_models, "hub_reachable", lambda timeout=3.0: False)
    message = fails(["features", "hf-hub:nobody/no-such-model", *set_args], capsys)
    assert "hf-hub:nobody/no-such-model: needs the network" in message and "Traceback" not in message


def test_tiles_the_model_cannot_take_are_refused(small_set: Path, tmp_path: Path, capsys) -> None:
    patch14 = tiny_vit(patch_size=14, img_size=56, dynamic_img_size=True)
    save_file(patch14.state_dict(), str(tmp_path / "p14.safetensors"))
    args = ["features", f"timm:{ARCH}", "--weights", str(tmp_path / "p14.safetensors"), "--set", str(small_set),
            "--out", str(tmp_path / "f.h5"), *WORDS[:3], "model.img_size=56", "model.patch_size=14",
            "model.dynamic_img_size=true"]  # fmt: skip
    message = fails(args, capsys)
    assert "patch size 14 does not divide the 64 px tiles of" in message and "a multiple of 14 (e.g. 70)" in message
    backbone = load_model(f"timm:{ARCH}", tmp_path / "p14.safetensors", {**TINY, "patch_size": 14, "img_size": 56,
                                                                       "dynamic_img_size": True})  # fmt: skip
    backbone.check_tiles(56, "set.h5")  # a multiple of the patch: any size goes with dynamic_img_size
    fixed = load_model(f"timm:{ARCH}", tmp_path / "p14.safetensors", {**TINY, "patch_size": 14, "img_size": 56})
    with pytest.raises(InputError, match="takes 56 px images and the tiles of set.h5 are 112 px.*dynamic_img_size"):
        fixed.check_tiles(112, "set.h5")
