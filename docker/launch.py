"""Container launcher: ``pretrain`` runs under torchrun, one process per visible GPU; everything else runs as is.

``docker run IMAGE pretrain --config C.yaml --out /runs/x`` becomes
``torchrun --standalone --nnodes 1 --nproc-per-node N --no-python gapless pretrain ...``, and
``docker run IMAGE bench ...`` becomes ``gapless bench ...``. The environment chooses the topology:

  GAPLESS_NPROC           processes on this node (default: the visible GPUs, or 1 on a machine without any)
  NNODES                  number of nodes, or MIN:MAX for an elastic job (default 1)
  RDZV_ENDPOINT           host:port of the c10d rendezvous; nodes get their rank from it (recommended)
  RDZV_ID                 job id shared by all nodes of one job (default "gapless")
  RDZV_BACKEND            rendezvous backend with RDZV_ENDPOINT (default c10d)
  MASTER_ADDR, NODE_RANK  static rendezvous instead of RDZV_ENDPOINT (MASTER_PORT defaults to 29500)
  GAPLESS_TORCHRUN_ARGS   extra torchrun options, e.g. "--max-restarts 3"

Standard library only: it runs before anything else in the container and is tested without one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

DISTRIBUTED_COMMANDS = frozenset({"pretrain"})
HELP_FLAGS = frozenset({"-h", "--help"})
DEFAULT_MASTER_PORT = "29500"
NNODES_PATTERN = re.compile(r"^[1-9][0-9]*(:[1-9][0-9]*)?$")

LAUNCHER_HELP = """
In this container, `pretrain` is launched through torchrun with one process per visible GPU; other commands run
directly. Environment: GAPLESS_NPROC (processes per node), NNODES, RDZV_ENDPOINT=host:port, RDZV_ID (multi-node,
c10d rendezvous) or MASTER_ADDR/MASTER_PORT/NODE_RANK (static), GAPLESS_TORCHRUN_ARGS (extra torchrun options).
Mount slides read-only at /data and a writable volume at /runs; shipped configs are in /opt/gapless/configs.
"""


class LaunchError(Exception):
    """The environment asks for an impossible launch; printed as one line."""


def _env(env: Mapping[str, str], name: str) -> str:
    """An environment variable, with empty meaning unset (compose passes unset variables as empty strings)."""
    return env.get(name, "").strip()


def gpus_from_nvidia_smi() -> int | None:
    """GPUs listed by ``nvidia-smi -L``; None when the tool is missing or fails (no driver in the container)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def gpus_from_torch() -> int:
    """Last resort when nvidia-smi is absent: ask PyTorch (slow to import, hence last)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def count_visible_gpus(
    env: Mapping[str, str],
    nvidia_smi: Callable[[], int | None] = gpus_from_nvidia_smi,
    torch_count: Callable[[], int] = gpus_from_torch,
) -> int:
    """GPUs this container may use: CUDA_VISIBLE_DEVICES restricts what nvidia-smi lists, so it is asked first."""
    if "CUDA_VISIBLE_DEVICES" in env:
        visible = 0
        for entry in env["CUDA_VISIBLE_DEVICES"].split(","):
            entry = entry.strip()
            # CUDA stops enumerating at the first invalid entry; "-1" and "" are the usual ways to hide all GPUs.
            if not entry or entry == "-1" or entry == "NoDevFiles":
                break
            visible += 1
        return visible
    listed = nvidia_smi()
    return listed if listed is not None else torch_count()


def resolve_nproc(env: Mapping[str, str], gpu_count: Callable[[], int]) -> int:
    """GAPLESS_NPROC when set (an integer >= 1, or "auto"), else one process per visible GPU, at least one."""
    requested = _env(env, "GAPLESS_NPROC")
    if requested and requested != "auto":
        if not requested.isdigit() or int(requested) < 1:
            raise LaunchError(f"GAPLESS_NPROC must be a positive integer or 'auto', got '{requested}'")
        return int(requested)
    return max(1, gpu_count())


def rendezvous_args(env: Mapping[str, str]) -> list[str]:
    """torchrun options that place this node in its job: standalone, c10d rendezvous, or static master."""
    nnodes = _env(env, "NNODES") or "1"
    if not NNODES_PATTERN.match(nnodes):
        raise LaunchError(f"NNODES must be a positive integer or MIN:MAX, got '{nnodes}'")
    endpoint = _env(env, "RDZV_ENDPOINT")
    master = _env(env, "MASTER_ADDR")
    if endpoint:
        return [
            "--nnodes", nnodes,
            "--rdzv-backend", _env(env, "RDZV_BACKEND") or "c10d",
            "--rdzv-endpoint", endpoint,
            "--rdzv-id", _env(env, "RDZV_ID") or "gapless",
        ]  # fmt: skip
    if nnodes == "1":
        # --standalone picks a free local port, so two single-node jobs on one host never collide.
        return ["--standalone", "--nnodes", "1"]
    if not master:
        raise LaunchError(
            f"NNODES={nnodes} needs a rendezvous point: set RDZV_ENDPOINT=host:port (and RDZV_ID) on every node, "
            "or MASTER_ADDR and NODE_RANK"
        )
    node_rank = _env(env, "NODE_RANK")
    if not node_rank.isdigit():
        raise LaunchError(f"static rendezvous (MASTER_ADDR={master}) needs NODE_RANK=0..N-1, got '{node_rank}'")
    if ":" in nnodes:
        raise LaunchError("an elastic NNODES=MIN:MAX needs RDZV_ENDPOINT (c10d rendezvous), not MASTER_ADDR")
    return [
        "--nnodes", nnodes,
        "--node-rank", node_rank,
        "--master-addr", master,
        "--master-port", _env(env, "MASTER_PORT") or DEFAULT_MASTER_PORT,
    ]  # fmt: skip


def runs_distributed(argv: Sequence[str]) -> bool:
    """``pretrain`` goes through torchrun, except ``pretrain --help``, which needs no processes."""
    return bool(argv) and argv[0] in DISTRIBUTED_COMMANDS and not HELP_FLAGS.intersection(argv[1:])


def build_command(argv: Sequence[str], env: Mapping[str, str], gpu_count: Callable[[], int] | None = None) -> list[str]:
    """The command that runs ``gapless ARGV`` in this container."""
    if not runs_distributed(argv):
        return ["gapless", *argv]
    counter = gpu_count if gpu_count is not None else (lambda: count_visible_gpus(env))
    topology = rendezvous_args(env)  # first: a bad topology fails before GPUs are probed
    nproc = resolve_nproc(env, counter)
    extra = shlex.split(_env(env, "GAPLESS_TORCHRUN_ARGS"))
    return ["torchrun", *topology, "--nproc-per-node", str(nproc), *extra, "--no-python", "gapless", *argv]


def resolve_executable(name: str) -> str:
    """``name`` on PATH, else next to this Python (a runtime that replaced the image's PATH still finds it)."""
    found = shutil.which(name)
    if found is not None:
        return found
    sibling = os.path.join(os.path.dirname(sys.executable), name)
    return sibling if os.access(sibling, os.X_OK) else name


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    try:
        command = build_command(argv, env)
    except LaunchError as exc:
        print(f"gapless-launch: error: {exc}", file=sys.stderr)
        return 2
    if command[0] == "torchrun":
        print("gapless-launch: " + shlex.join(command), file=sys.stderr, flush=True)
    command[0] = resolve_executable(command[0])
    if not argv or argv[0] in HELP_FLAGS:
        # The top-level help also says how this container launches things; it is printed after gapless's own.
        status = subprocess.run(command, check=False).returncode
        print(LAUNCHER_HELP.rstrip())
        return status
    try:
        os.execvp(command[0], command)  # replaces this process: signals reach torchrun/gapless directly
    except FileNotFoundError:
        print(f"gapless-launch: error: '{command[0]}' is not on PATH", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
