"""torch.distributed set-up: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) selects a process group, NCCL
on GPUs and gloo on CPUs; without it the run is one plain process. Multi-node runs use torchrun's rendezvous."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from gapless.devices import torch_device
from gapless.errors import RunError

T = TypeVar("T")


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str = "auto") -> DistEnv:
    """Join the process group that torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch_device(device_pref, index=local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank, world_size, local_rank, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def all_gather_floats(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's list of floats, in rank order (a diagnostic, e.g. that ranks draw different tiles)."""
    local = torch.tensor(values, dtype=torch.float64, device=device)
    if not (dist.is_available() and dist.is_initialized()):
        return [local.tolist()]
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return [g.tolist() for g in gathered]


def sum_counters(counters: dict[str, int], device: torch.device) -> dict[str, int]:
    """Integer counters (e.g. the loader's reads and skips) summed over ranks; same keys on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or not counters:
        return dict(counters)
    keys = sorted(counters)
    values = torch.tensor([counters[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return {k: int(v) for k, v in zip(keys, values.tolist())}


def all_ok(ok: bool, device: torch.device) -> bool:
    """True on every rank when ``ok`` is true on every rank (a collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=device)
    dist.all_reduce(flag)
    return flag.item() == 0


def on_main(env: DistEnv, action: Callable[[], T], what: str) -> T | None:
    """Run ``action`` on rank 0 and tell every rank whether it worked: a failure is raised on every rank (rank 0's
    own error there, a :class:`RunError` saying what rank 0 could not do on the others), so no rank waits forever
    in a collective that rank 0 never joins. Returns the action's result on rank 0, None on the others."""
    result: Any = None
    error: BaseException | None = None
    if env.is_main:
        try:
            result = action()
        except Exception as exc:  # raised below, once every rank knows
            error = exc
    if not all_ok(error is None, env.device):
        raise error if error is not None else RunError(f"rank 0 could not {what}; see its message")
    return result
