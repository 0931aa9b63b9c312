"""Config machinery: YAML + key=value overrides, unknown keys and wrong types named, resolved config written."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from gapless.config import ConfigError, load_config, parse_override, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    amp: bool = False
    tags: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    mode: str | None = None


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.5\n")
    cfg = load_config(Run, path, ["optim.betas=[0.8, 0.9]", "tags=[a, b]", "amp=true", "steps=30"])
    assert cfg.steps == 30 and cfg.optim.lr == 0.5 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.tags == ["a", "b"] and cfg.amp is True and cfg.name == "run"


def test_int_is_accepted_for_float():
    assert load_config(Run, overrides=["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    "override, key",
    [
        ("stepz=3", "stepz"),
        ("optim.lrr=3", "optim.lrr"),
        ("steps=ten", "steps"),
        ("amp=3", "amp"),
        ("optim.betas=[1, 2, 3]", "optim.betas"),
        ("optim=5", "optim"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(Run, overrides=[override])


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(Run, overrides=["stpes=1"])


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.momentum"):
        load_config(Run, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Run, tmp_path / "list.yaml")


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("steps")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Run, overrides=["optim.lr=0.1", "tags=[x]"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    data = yaml.safe_load(out.read_text())
    assert data == to_dict(cfg)
    assert load_config(Run, out) == cfg


def test_numbers_with_an_exponent_are_numbers_in_overrides_and_files(tmp_path):
    """YAML 1.1 reads 2e-3 (no dot) and 1.0e5 (no sign) as strings; gapless reads every such number as a number."""
    from gapless.eval.config import EvalConfig
    from gapless.train.config import PretrainConfig

    assert load_config(PretrainConfig, None, ["optim.base_lr=2e-3"]).optim.base_lr == 2e-3
    path = tmp_path / "eval.yaml"
    path.write_text("linear_cs: [1e-4, 1, 1.0e4, .5e2]\n")
    cfg = load_config(EvalConfig, path, ["rankme_eps=1e-7"])
    assert cfg.linear_cs == [1e-4, 1.0, 1e4, 50.0] and cfg.rankme_eps == 1e-7
    assert parse_override("x=-3E+2")[1] == -300.0 and parse_override("x=1e3x")[1] == "1e3x"
    assert load_config(Run, overrides=["name=e5", "steps=3"]).name == "e5"
    with pytest.raises(ConfigError, match="name: expected a string"):  # a string field is not given a number
        load_config(Run, overrides=["name=1e3"])


def test_timm_arguments_with_an_exponent_are_numbers(tmp_path):
    from argparse import Namespace

    from gapless.eval.cli import model_options

    args = tmp_path / "uni.yaml"
    args.write_text("init_values: 1e-5\nmlp_ratio: 5.33334\nact_layer: SiLU\n")
    kwargs, _ = model_options(Namespace(model_args=str(args), mean=None, std=None), ["model.drop_rate=2e-1"])
    assert kwargs == {"init_values": 1e-5, "mlp_ratio": 5.33334, "act_layer": "SiLU", "drop_rate": 0.2}
