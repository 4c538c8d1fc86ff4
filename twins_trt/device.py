"""What this machine computes on: a CUDA GPU as torch sees it, and the CPU's feature flags.

The one place device detection lives: the runners, the TensorRT builder and the backend table all
ask here, so none of them imports another to learn whether a GPU is visible.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from twins_trt.errors import BackendUnavailableError


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def require_cuda(what: str) -> None:
    if not cuda_available():
        raise BackendUnavailableError(f"{what} needs a CUDA GPU and none is visible to torch on this machine")


def cpu_threads() -> int | None:
    """The thread count a CPU runtime takes when none is asked for: PyTorch's (`torch.set_num_threads`), so one
    setting governs PyTorch, ONNX Runtime and OpenVINO alike and two processes sharing the cores do not each
    start a thread per core (on 2 cores, two ONNX Runtime processes at 2 threads each ran 2x slower than at 1).
    None where PyTorch is not loaded: each runtime's own default then."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_is_x86() -> bool:
    """Whether this is an x86 CPU (x86-64 or 32-bit), as Python's platform reports it."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


__all__ = ["cpu_flags", "cpu_is_x86", "cuda_available", "require_cuda"]
