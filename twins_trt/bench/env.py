"""The machine a result was measured on: every result carries it, so numbers are never read without it."""

from __future__ import annotations

import os
import platform
import subprocess

from twins_trt.artifacts import git_commit, now_iso, tool_versions
from twins_trt.device import cpu_flags


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def isa_flags() -> list[str]:
    """The instruction-set flags that change which kernels the libraries pick (in ISA_FLAGS order)."""
    have = cpu_flags()
    return [flag for flag in ISA_FLAGS if flag in have]


def usable_cores() -> int:
    """Cores this process may run on (affinity / cgroup cpuset), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def gpu_info() -> dict[str, str | None]:
    info: dict[str, str | None] = {"name": None, "driver": None, "cuda": None}
    try:
        import torch
    except ImportError:  # pragma: no cover
        return info
    info["cuda"] = torch.version.cuda
    if not torch.cuda.is_available():
        return info
    info["name"] = torch.cuda.get_device_name()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def capture_environment(threads: int | None = None) -> dict:
    import torch

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {
        "date": now_iso(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": isa_flags(),
        "usable_cores": usable_cores(),
        "threads": {"torch": torch.get_num_threads(), "ort_intra_op": threads},
        "load_average_at_start": load,
        "gpu": gpu_info(),
        "versions": tool_versions(),
        "git_commit": git_commit(),
    }


def fingerprint(env: dict) -> dict:
    """What a recorded speed figure depends on besides our code: the machine and the libraries' versions."""
    gpu = env.get("gpu") or {}
    v = env.get("versions") or {}
    return {"cpu": env.get("cpu"), "isa": env.get("isa"), "cores": env.get("usable_cores"),
            "gpu": gpu.get("name"), "driver": gpu.get("driver"), "torch": v.get("torch"),
            "onnxruntime": v.get("onnxruntime-gpu") or v.get("onnxruntime"),
            "tensorrt": v.get("tensorrt")}


def fingerprint_differences(recorded: dict, here: dict) -> list[str]:
    """`what: recorded -> here` for every field that differs; a field the record lacks differs too."""
    def show(value) -> str:
        if isinstance(value, list):
            return " ".join(value) or "none of " + "/".join(ISA_FLAGS)
        return "none" if value is None else str(value)

    out = []
    for key, now in here.items():
        then = recorded.get(key)
        if then != now:
            was = "not recorded" if then is None and key == "isa" else show(then)
            out.append(f"{key}: {was} -> {show(now)}")
    return out


def environment_line(env: dict) -> str:
    gpu = env.get("gpu") or {}
    v = env.get("versions") or {}
    ort = v.get("onnxruntime-gpu") or v.get("onnxruntime")
    parts = [f"CPU {env.get('cpu')} ({env.get('usable_cores')} usable of {env.get('cores')} cores)",
             f"threads torch {env['threads']['torch']} / ORT {env['threads']['ort_intra_op']}",
             f"GPU {gpu.get('name')} (driver {gpu.get('driver')})" if gpu.get("name") else "no GPU",
             f"torch {v.get('torch')}", f"onnxruntime {ort}"]
    if v.get("openvino"):
        parts.append(f"openvino {v['openvino']}")
    if v.get("tensorrt"):
        parts.append(f"tensorrt {v['tensorrt']}")
    parts += [f"git {env.get('git_commit')}", env.get("date", "")]
    return "; ".join(p for p in parts if p)
