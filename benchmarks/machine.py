"""What a result was measured on: machine (CPU model, cores, memory, GPU), library versions and git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Each library under the distribution names it ships as (CUDA 12 and 13 builds have different names).
PACKAGES = {
    "torch": ("torch",),
    "dali": ("nvidia-dali-cuda120", "nvidia-dali-cuda130"),
    "cucim": ("cucim-cu12", "cucim-cu13"),
    "nvimgcodec": ("nvidia-nvimgcodec-cu12", "nvidia-nvimgcodec-cu13"),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "gapless": ("gapless",),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "name": props.name,
        "memory_gib": props.total_memory / 2**30,
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
    }


def machine() -> dict[str, Any]:
    import psutil

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": gpu_info(),
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name, dists in PACKAGES.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """HEAD commit of the working tree and whether it has uncommitted changes (None outside a checkout)."""
    cwd = repo or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
