"""What this machine computes on: a CUDA GPU as torch sees it, and the CPU's feature flags.

The one place device detection lives: the runners, the TensorRT builder and the backend table all
ask here, so none of them imports another to learn whether a GPU is visible.
"""

from __future__ import annotations

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


__all__ = ["cpu_flags", "cuda_available", "require_cuda"]
