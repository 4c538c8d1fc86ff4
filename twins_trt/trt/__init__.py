"""TensorRT: strongly typed engines from the exported ONNX, their metadata, and the build hint.

Precision lives in the ONNX (FP16 tensors, or Q/DQ pairs for INT8), so the builder never gets a
precision flag: on TensorRT 10 the network is created STRONGLY_TYPED, on 11 it is strongly typed
by definition. TensorRT is imported lazily; every function that talks to it takes an optional
`trt` module (None: `import tensorrt`), which is what lets tests drive the real API classes
without a GPU.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from types import ModuleType

from twins_trt.errors import BackendUnavailableError

MIN_MAJOR = 10


def load_tensorrt(trt: ModuleType | None = None) -> ModuleType:
    """`trt` if given, else `import tensorrt`; BackendUnavailableError (one line) when it cannot be used."""
    if trt is None:
        try:
            import tensorrt as trt
        except ImportError as e:  # missing package, or its libnvinfer.so is not on the loader path
            raise BackendUnavailableError(f"TensorRT is not importable here ({e})") from e
        except OSError as e:
            raise BackendUnavailableError(f"TensorRT's libraries could not be loaded ({e})") from e
    if tensorrt_major(trt) < MIN_MAJOR:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is too old; twins-trt needs TensorRT >= {MIN_MAJOR}")
    return trt


def tensorrt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def tensorrt_status(trt: ModuleType | None = None) -> tuple[bool, str]:
    """(True, "TensorRT 10.x on <GPU>") when engines can be built and run here, else (False, why)."""
    try:
        trt = load_tensorrt(trt)
    except BackendUnavailableError as e:
        return False, str(e)
    from twins_trt.trt.engine_meta import device_info, is_emulated

    if is_emulated(trt):
        return True, (f"TensorRT emulator {trt.__version__} on {device_info(trt)['name']} "
                      "(ONNX Runtime on the CPU: figures are emulated, not TensorRT's)")
    from twins_trt.device import cuda_available

    if not cuda_available():
        return False, f"TensorRT {trt.__version__} is installed but torch sees no CUDA GPU"
    import torch

    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"


def build_command(onnx_path: str | os.PathLike, out_dir: str | os.PathLike = "engines", *,
                  profile: str | None = None, workspace_gib: float | None = None,
                  opt_level: int | None = None, timing_cache: str | os.PathLike | None = None,
                  opt_batches: list[int] | None = None) -> str:
    """The exact `twins-build` command line that (re)builds the engine for `onnx_path`."""
    args = ["twins-build", str(onnx_path), "-o", str(out_dir)]
    if profile:
        args += ["--profile", profile]
    if opt_batches and len(opt_batches) > 1:
        args += ["--opt-batches", ",".join(map(str, opt_batches))]
    if workspace_gib is not None:
        args += ["--workspace", f"{workspace_gib:g}"]
    if opt_level is not None:
        args += ["--opt-level", str(opt_level)]
    if timing_cache is not None:
        args += ["--timing-cache", str(timing_cache)]
    return shlex.join(args)


def build_hint(onnx_path: str | os.PathLike, out_dir: str | os.PathLike = "engines") -> str:
    """What to run on a GPU machine to turn `onnx_path` into an engine (the profile comes from its metadata)."""
    return build_command(onnx_path, out_dir)


def engine_paths(onnx_path: str | os.PathLike, out_dir: str | os.PathLike = "engines") -> tuple[Path, Path]:
    """`export/svt_s.fp16.onnx` -> (`engines/svt_s.fp16.plan`, `engines/svt_s.fp16.plan.json`).

    The metadata is never `<stem>.json`: that is the ONNX manifest's name, and `-o export` must not clobber it.
    """
    plan = Path(out_dir) / f"{Path(onnx_path).stem}.plan"
    return plan, plan.with_name(plan.name + ".json")


def logger_for(trt: ModuleType, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


__all__ = ["MIN_MAJOR", "build_command", "build_hint", "engine_paths", "load_tensorrt", "logger_for", "tensorrt_major",
           "tensorrt_status"]
