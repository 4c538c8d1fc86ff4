"""What an engine is tied to, and whether a plan on disk can still be used: metadata and compatibility checks.

An engine is tied to the ONNX it was built from (its sha256), the TensorRT version and the GPU. Its
metadata sits beside it as `<stem>.plan.json` (never `<stem>.json`, which is the ONNX manifest's name:
`twins-build -o export` must not overwrite it). This module imports neither TensorRT nor the runners'
engine code, so the runner, the builder and the artifact resolver all depend on it and not on each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from twins_trt.artifacts import sha256_file
from twins_trt.errors import BackendUnavailableError, EngineMismatchError

METADATA_FORMAT = 2  # 2: `<stem>.plan.json`, one profile per optimised batch ("profiles"), "emulated"
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)  # TensorRT builds FP8 Q/DQ networks on Ada (8.9), Hopper (9.0), Blackwell (10.x, 12.x)


def metadata_path(plan_path: str | os.PathLike) -> Path:
    """`engines/svt_s.fp16.plan` -> `engines/svt_s.fp16.plan.json`."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def is_emulated(trt: ModuleType | None) -> bool:
    """True for the TensorRT emulator (tools/trt_emulator), whose figures are never TensorRT's."""
    return getattr(trt, "__emulator__", False) is True


def device_info(trt: ModuleType | None = None) -> dict[str, str]:
    """Name and compute capability of the device engines are built for here: the CUDA GPU, or the emulator's."""
    if is_emulated(trt):
        return dict(trt.emulated_device())
    from twins_trt.device import cuda_available

    if not cuda_available():
        raise BackendUnavailableError("building or loading a TensorRT engine needs a CUDA GPU and torch sees none")
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def fp8_refusal(device: dict[str, str]) -> str | None:
    """Why TensorRT cannot build (or run) an FP8 engine on `device` (`device_info()`), in one line; None when it can."""
    cc = device.get("compute_capability") or "0.0"
    try:
        have = tuple(int(v) for v in cc.split(".")[:2])
    except ValueError:
        have = (0, 0)
    if have >= FP8_MIN_COMPUTE_CAPABILITY:
        return None
    need = ".".join(map(str, FP8_MIN_COMPUTE_CAPABILITY))
    return (f"FP8 engines need a GPU of compute capability >= {need} (Ada L4/L40S, Hopper H100/H200, Blackwell "
            f"B200); {device.get('name')} has {cc}: build the FP16 or INT8 ONNX here instead, or this one on such a GPU")


def read_engine_metadata(plan_path: str | os.PathLike) -> dict[str, Any]:
    plan_path = Path(plan_path)
    meta_path = metadata_path(plan_path)
    if not plan_path.is_file():
        raise EngineMismatchError(f"engine {plan_path} does not exist; build it with twins-build EXPORT.onnx")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise EngineMismatchError(
            f"engine {plan_path} has no metadata file {meta_path}, so its TensorRT version and GPU are unknown; "
            f"rebuild it with twins-build EXPORT.onnx -o {plan_path.parent}") from None
    except ValueError as e:
        raise EngineMismatchError(f"engine metadata {meta_path} is not valid JSON ({e}); rebuild the engine") from e
    if not isinstance(meta, dict):
        raise EngineMismatchError(f"engine metadata {meta_path} holds a JSON {type(meta).__name__}, not an object "
                                  "(it must be a JSON object); rebuild the engine with twins-build")
    return meta


def incompatibilities(metadata: dict[str, Any], trt_version: str, device: dict[str, str]) -> list[str]:
    """Why an engine built as `metadata` says cannot run on this TensorRT and device (empty: it can)."""
    problems = []
    if metadata.get("tensorrt") != trt_version:
        problems.append(f"it was built with TensorRT {metadata.get('tensorrt')} and this is TensorRT {trt_version}")
    built_on = metadata.get("gpu") or {}
    if (built_on.get("name"), built_on.get("compute_capability")) != (device["name"], device["compute_capability"]):
        problems.append(f"it was built for {built_on.get('name')} (compute capability "
                        f"{built_on.get('compute_capability')}) and this GPU is {device['name']} "
                        f"(compute capability {device['compute_capability']})")
    return problems


def check_engine_compatible(metadata: dict[str, Any], trt_version: str, device: dict[str, str],
                            plan_path: str | os.PathLike = "engine") -> None:
    """EngineMismatchError, with the command that rebuilds it, unless built by this TensorRT on this GPU."""
    problems = incompatibilities(metadata, trt_version, device)
    if problems:
        cmd = metadata.get("rebuild_command") or f"twins-build EXPORT.onnx -o {Path(plan_path).parent}"
        raise EngineMismatchError(f"cannot load {plan_path}: {'; '.join(problems)}. Rebuild it here with: {cmd}")


def stale_reason(plan_path: str | os.PathLike, onnx_path: str | os.PathLike, trt_version: str,
                 device: dict[str, str]) -> str | None:
    """None when the plan can be reused for `onnx_path` here; else why not (missing, re-exported ONNX, other
    TensorRT version or device, unreadable metadata)."""
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        return f"{plan_path} does not exist"
    try:
        meta = read_engine_metadata(plan_path)
    except EngineMismatchError as e:
        return str(e)
    if meta.get("onnx_sha256") != sha256_file(onnx_path):
        return f"{onnx_path} changed since the engine was built (its sha256 differs from the one recorded)"
    problems = incompatibilities(meta, trt_version, device)
    return "; ".join(problems) if problems else None


def engine_profiles(metadata: dict[str, Any]) -> list[dict[str, dict[str, list[int]]]]:
    """Every optimization profile of an engine, in engine order (format 1 recorded only one)."""
    return list(metadata.get("profiles") or ([metadata["profile"]] if metadata.get("profile") else []))


def batch_range(metadata: dict[str, Any]) -> tuple[int, int]:
    """(min, max) batch over all of the engine's profiles."""
    profs = [next(iter(p.values())) for p in engine_profiles(metadata)]
    if not profs:
        return 0, -1
    return min(p["min"][0] for p in profs), max(p["max"][0] for p in profs)


def opt_batches(metadata: dict[str, Any]) -> list[int]:
    """The batch each profile is tuned for (its OPT)."""
    return [next(iter(p.values()))["opt"][0] for p in engine_profiles(metadata)]


__all__ = ["FP8_MIN_COMPUTE_CAPABILITY", "METADATA_FORMAT", "batch_range", "check_engine_compatible", "device_info",
           "engine_profiles", "fp8_refusal", "incompatibilities", "is_emulated", "metadata_path", "opt_batches",
           "read_engine_metadata", "stale_reason"]
