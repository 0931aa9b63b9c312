"""Where computation runs: the one place that decides between CUDA and the CPU.

torch is imported only when a device is asked for, so importing this module costs nothing on a machine without
it. ``auto`` means CUDA when a usable device is present, else the CPU; asking for ``cuda`` where there is none is an
:class:`~gapless.errors.InputError` naming the setting.
"""

from __future__ import annotations

from typing import Any

from gapless.errors import InputError

PREFERENCES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether torch is installed and sees a usable CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def torch_device(preference: str = "auto", index: int | None = None, setting: str = "device") -> Any:
    """The ``torch.device`` for ``preference`` (auto | cpu | cuda); ``index`` picks a GPU (default: the current one).

    ``setting`` names the flag or key in the error raised when CUDA is asked for and missing.
    """
    import torch

    if preference not in PREFERENCES:
        raise InputError(f"{setting}: '{preference}' is not one of {', '.join(PREFERENCES)}")
    if preference == "cpu" or (preference == "auto" and not cuda_available()):
        return torch.device("cpu")
    if not cuda_available():
        raise InputError(f"{setting}: 'cuda' requested but this machine has no usable CUDA device")
    return torch.device("cuda", torch.cuda.current_device() if index is None else index)
