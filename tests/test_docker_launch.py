"""The launcher that turns ``pretrain`` into torchrun inside the image: its command lines parsed by torchrun's own
parser, the entrypoint run with fake ``gapless`` and ``nvidia-smi`` tools, and real torchrun launches (one rank per
GPU; two nodes meeting at a rendezvous on loopback)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def _load_launcher():
    """docker/ is no package: load the launcher from its file."""
    spec = importlib.util.spec_from_file_location("gapless_docker_launch", DOCKER / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch = _load_launcher()


def torchrun_args(command: list[str]):
    """Parse a launcher command with torchrun's own parser: every option name and value must be valid there."""
    from torch.distributed.run import get_args_parser

    assert command[0] == "torchrun"
    return get_args_parser().parse_args(command[1:])


def test_gpu_count_follows_cuda_visible_devices_then_nvidia_smi() -> None:
    def never() -> int:
        raise AssertionError("CUDA_VISIBLE_DEVICES decides alone")

    count = launch.count_visible_gpus
    assert count({"CUDA_VISIBLE_DEVICES": "0,1,2"}, never, never) == 3
    assert count({"CUDA_VISIBLE_DEVICES": "GPU-8a1f,GPU-77c2"}, never, never) == 2
    assert count({"CUDA_VISIBLE_DEVICES": ""}, never, never) == 0
    assert count({"CUDA_VISIBLE_DEVICES": "-1"}, never, never) == 0
    assert count({"CUDA_VISIBLE_DEVICES": "0,-1,1"}, never, never) == 1  # CUDA stops at the invalid entry
    assert count({}, lambda: 8, never) == 8
    assert count({}, lambda: None, lambda: 2) == 2  # no nvidia-smi: ask torch


def test_single_node_pretrain_uses_one_process_per_gpu() -> None:
    argv = ["pretrain", "--config", "c.yaml", "optim.base_lr=1e-3", "--out", "/runs/a"]
    command = launch.build_command(argv, {}, gpu_count=lambda: 4)
    args = torchrun_args(command)
    assert args.standalone and args.nnodes == "1" and args.nproc_per_node == "4"
    assert args.no_python and args.training_script == "gapless" and args.training_script_args == argv
    no_gpu = torchrun_args(launch.build_command(argv, {}, gpu_count=lambda: 0))
    assert no_gpu.nproc_per_node == "1"  # a CPU-only container still trains, as one process


def test_nproc_override_and_extra_torchrun_options() -> None:
    env = {"GAPLESS_NPROC": "3", "GAPLESS_TORCHRUN_ARGS": "--max-restarts 2"}
    args = torchrun_args(launch.build_command(["pretrain", "--out", "r"], env, gpu_count=lambda: 8))
    assert args.nproc_per_node == "3" and args.max_restarts == 2
    auto = launch.build_command(["pretrain"], {"GAPLESS_NPROC": "auto"}, gpu_count=lambda: 2)
    assert torchrun_args(auto).nproc_per_node == "2"
    for bad in ("0", "two", "-1"):
        with pytest.raises(launch.LaunchError, match="GAPLESS_NPROC"):
            launch.build_command(["pretrain"], {"GAPLESS_NPROC": bad}, gpu_count=lambda: 1)


def test_multi_node_rendezvous_from_the_environment() -> None:
    env = {"NNODES": "4", "RDZV_ENDPOINT": "node001:29500", "RDZV_ID": "job42", "NODE_RANK": "3"}
    args = torchrun_args(launch.build_command(["pretrain"], env, gpu_count=lambda: 8))
    assert (args.nnodes, args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == ("4", "c10d", "node001:29500", "job42")
    assert not args.standalone and args.nproc_per_node == "8"
    elastic = torchrun_args(launch.build_command(["pretrain"], {**env, "NNODES": "2:4"}, gpu_count=lambda: 8))
    assert elastic.nnodes == "2:4"
    static_env = {"NNODES": "2", "MASTER_ADDR": "10.0.0.1", "NODE_RANK": "1"}
    static = torchrun_args(launch.build_command(["pretrain"], static_env, gpu_count=lambda: 8))
    assert (static.nnodes, static.node_rank, static.master_addr, static.master_port) == ("2", 1, "10.0.0.1", 29500)
    for broken, message in (
        ({"NNODES": "2"}, "needs a rendezvous point"),
        ({"NNODES": "2", "MASTER_ADDR": "h"}, "NODE_RANK"),
        ({"NNODES": "two", "RDZV_ENDPOINT": "h:1"}, "NNODES"),
        ({"NNODES": "2:4", "MASTER_ADDR": "h", "NODE_RANK": "0"}, "elastic"),
    ):
        with pytest.raises(launch.LaunchError, match=message):
            launch.build_command(["pretrain"], broken, gpu_count=lambda: 1)


def test_other_commands_and_help_run_gapless_directly() -> None:
    env = {"NNODES": "2"}  # a topology that torchrun would reject is irrelevant to them
    assert launch.build_command(["bench", "--quick"], env) == ["gapless", "bench", "--quick"]
    assert launch.build_command(["evaluate", "ck.pt", "--set", "s.h5"], env)[:2] == ["gapless", "evaluate"]
    assert launch.build_command(["pretrain", "--help"], env) == ["gapless", "pretrain", "--help"]
    assert launch.build_command(["--help"], env) == ["gapless", "--help"]


def _fake_bin(tmp_path: Path) -> Path:
    """A PATH folder with a fake `gapless` recording each call and an `nvidia-smi` listing two GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gapless").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "rank = os.environ.get('RANK', 'none')\n"
        "with open(os.path.join(os.environ['CALLS'], f'rank-{rank}.json'), 'w') as f:\n"
        "    json.dump({'argv': sys.argv[1:], 'world': os.environ.get('WORLD_SIZE')}, f)\n"
        "print('usage: gapless COMMAND')\n"
    )
    (bin_dir / "nvidia-smi").write_text(
        "#!/bin/sh\necho 'GPU 0: H100 (UUID: GPU-a)'\necho 'GPU 1: H100 (UUID: GPU-b)'\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _launcher_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """A clean environment whose PATH finds the fakes first, then this Python's torchrun."""
    bin_dir = tmp_path / "bin" if (tmp_path / "bin").exists() else _fake_bin(tmp_path)
    calls = tmp_path / "calls"
    calls.mkdir(exist_ok=True)
    path = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    return {"PATH": path, "HOME": str(tmp_path), "CALLS": str(calls), "GAPLESS_PYTHON": sys.executable, **env}


def _entrypoint(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(DOCKER / "entrypoint.sh"), *argv],
        env=_launcher_env(tmp_path, **env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_entrypoint_runs_a_real_torchrun_with_one_rank_per_gpu(tmp_path: Path) -> None:
    argv = ["pretrain", "--config", "/opt/gapless/configs/pretrain_tiny_cpu.yaml", "--out", "/runs/x"]
    result = _entrypoint(tmp_path, *argv)
    assert result.returncode == 0, result.stderr
    assert "--nproc-per-node 2" in result.stderr  # from the fake nvidia-smi's two GPUs
    ranks = {p.name: json.loads(p.read_text()) for p in (tmp_path / "calls").iterdir()}
    assert sorted(ranks) == ["rank-0.json", "rank-1.json"]
    assert all(call == {"argv": argv, "world": "2"} for call in ranks.values())


def test_entrypoint_direct_commands_and_errors(tmp_path: Path) -> None:
    bench = _entrypoint(tmp_path, "bench", "--quick")
    assert bench.returncode == 0
    assert json.loads((tmp_path / "calls" / "rank-none.json").read_text())["argv"] == ["bench", "--quick"]
    helped = _entrypoint(tmp_path, "--help")
    assert helped.returncode == 0 and "usage: gapless" in helped.stdout and "GAPLESS_NPROC" in helped.stdout
    broken = _entrypoint(tmp_path, "pretrain", "--out", "r", NNODES="2")
    assert broken.returncode == 2 and "gapless-launch: error: NNODES=2 needs a rendezvous point" in broken.stderr


def test_entrypoint_help_with_the_real_gapless() -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "GAPLESS_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(DOCKER / "entrypoint.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "usage: gapless" in result.stdout and "RDZV_ENDPOINT" in result.stdout


@pytest.mark.slow  # two torchrun agents and a rendezvous: about 10 s on two busy cores
def test_two_nodes_meet_at_a_c10d_rendezvous_on_loopback(tmp_path: Path) -> None:
    """Two launchers with the multi-node variables (one process each) form one job of world size 2."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _launcher_env(tmp_path, NNODES="2", RDZV_ENDPOINT=f"127.0.0.1:{port}", RDZV_ID="loopback", GAPLESS_NPROC="1")
    command = ["bash", str(DOCKER / "entrypoint.sh"), "pretrain", "--out", "r"]
    nodes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for node in nodes:
        _, stderr = node.communicate(timeout=120)
        assert node.returncode == 0, stderr.decode()
    calls = sorted((tmp_path / "calls").glob("rank-*.json"))
    assert [p.name for p in calls] == ["rank-0.json", "rank-1.json"]
    assert all(json.loads(p.read_text())["world"] == "2" for p in calls)
