"""ONNX -> strongly typed TensorRT engine, saved atomically with its metadata.

Each step says what it turns into what (Polygraphy style) and takes `trt=None` (None: the
installed `tensorrt`):

    builder, network, parser = network_from_onnx_path(onnx_path)
    config = config_from_network(builder, network, profiles, workspace_gib=4, opt_level=3)
    engine = engine_bytes_from_network(builder, network, config)
    save_engine(engine, "engines/svt_s.fp16.plan", metadata)

`build_engine` runs them all and is what `twins-build` calls. No precision flag is ever set: the
precision is in the ONNX (FP16 tensors or Q/DQ), and the network is strongly typed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from twins_trt.artifacts import (
    atomic_path,
    ensure_dir,
    now_iso,
    sha256_file,
    tool_versions,
    write_bytes_atomic,
)
from twins_trt.errors import BackendUnavailableError, BuildError, ProfileError, UnsupportedByTensorRTError
from twins_trt.trt import build_command, build_hint, engine_paths, load_tensorrt, logger_for, tensorrt_major, tensorrt_status
from twins_trt.trt.engine_meta import METADATA_FORMAT, device_info, fp8_refusal, is_emulated, metadata_path
from twins_trt.trt.profile import OnnxInfo, Profile, profile_from_onnx, read_onnx_info

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# steps


def network_flags(trt: ModuleType) -> int:
    """STRONGLY_TYPED on TensorRT 10; 0 on 11+, where every network is strongly typed and the flag is ignored."""
    if tensorrt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def network_from_onnx_path(onnx_path: str | os.PathLike, *, trt: ModuleType | None = None, logger=None):
    """(builder, network, parser) with the ONNX parsed into a strongly typed network.

    Every parser error is reported, with node index, name and op, in one BuildError.
    """
    trt = load_tensorrt(trt)
    path = Path(onnx_path)
    if not path.is_file():
        raise BuildError(f"ONNX file {path} does not exist; create it with twins-export")
    logger = logger or logger_for(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))  # from the file, so external weights resolve beside it
    if not ok or parser.num_errors:
        raise BuildError(parser_errors_message(parser, path))
    return builder, network, parser


def parser_errors_message(parser, path: str | os.PathLike) -> str:
    n = parser.num_errors
    lines = [f"TensorRT's ONNX parser rejected {path} ({n} error{'s' * (n != 1)}):"]
    for i in range(n):
        err = parser.get_error(i)
        where = [f"node {err.node()}"]
        if hasattr(err, "node_name") and err.node_name():
            where.append(repr(err.node_name()))
        if hasattr(err, "node_operator") and err.node_operator():
            where.append(f"({err.node_operator()})")
        code = getattr(err.code(), "name", err.code())
        lines.append(f"  [{i + 1}] {' '.join(where)}: {code}: {err.desc()}")
    if n == 0:
        lines.append("  (the parser returned failure without errors; rerun with --verbose for TensorRT's log)")
    return "\n".join(lines)


def config_from_network(builder, network, profiles: dict[str, Profile] | list[dict[str, Profile]], *,
                        workspace_gib: float | None = None,
                        opt_level: int | None = None, timing_cache: str | os.PathLike | None = None,
                        allow_tf32: bool = True, trt: ModuleType | None = None):
    """An IBuilderConfig with the optimization profile(s), memory limit, optimization level and timing cache.

    `profiles` is one profile (input name -> Profile) or a list of them, added in order (profile 0 first).

    allow_tf32=False keeps FP32 matmuls and convolutions in true FP32, which an fp32 export needs to
    stay within 1e-4 of PyTorch (TensorRT enables TF32 by default on Ampere and later).
    """
    trt = load_tensorrt(trt)
    config = builder.create_builder_config()
    if not allow_tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if workspace_gib is not None:
        if workspace_gib <= 0:
            raise BuildError(f"--workspace must be > 0 GiB, got {workspace_gib}")
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if opt_level is not None:
        if not 0 <= opt_level <= 5:
            raise BuildError(f"--opt-level must be 0..5, got {opt_level}")
        config.builder_optimization_level = opt_level

    names = [network.get_input(i).name for i in range(network.num_inputs)]
    for one in profiles if isinstance(profiles, list) else [profiles]:
        missing = [n for n in names if n not in one]
        if missing:
            raise ProfileError(f"no profile for network input(s) {missing}; profiles were computed for {sorted(one)}")
        profile = builder.create_optimization_profile()
        for name in names:
            p = one[name]
            try:  # the bindings raise RuntimeError on shapes setDimensions finds inconsistent (pyCore.cpp)
                profile.set_shape(name, p.min, p.opt, p.max)
            except RuntimeError as e:
                raise ProfileError(f"TensorRT rejected the optimization profile {_profiles_text(one)}: {e}") from e
        if config.add_optimization_profile(profile) < 0:
            raise ProfileError(f"TensorRT rejected the optimization profile {_profiles_text(one)}")

    if timing_cache is not None:
        data = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            log.warning("timing cache %s was made by another TensorRT or GPU; building with an empty one", timing_cache)
            config.set_timing_cache(config.create_timing_cache(b""), False)
    return config


def engine_bytes_from_network(builder, network, config) -> bytes:
    """Build and serialize; the build time is logged. BuildError if TensorRT gives nothing back."""
    t0 = time.perf_counter()
    mem = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if mem is None:
        raise BuildError(f"TensorRT failed to build the engine after {seconds:.1f} s (its log above says why)")
    data = host_bytes(mem)
    log.info("built a %.1f MiB engine in %.1f s", len(data) / 2**20, seconds)
    return data


def host_bytes(mem) -> bytes:
    """An IHostMemory (or any buffer) as bytes."""
    return bytes(memoryview(mem))


def save_timing_cache(config, path: str | os.PathLike) -> Path | None:
    """Merge the config's timing cache into the file at `path` (other builds may have written it); save atomically."""
    cache = config.get_timing_cache()
    if cache is None:
        return None
    path = Path(path)
    if path.is_file():
        if not cache.combine(config.create_timing_cache(path.read_bytes()), False):
            log.warning("could not merge %s (another TensorRT version?); overwriting it", path)
    write_bytes_atomic(path, host_bytes(cache.serialize()))
    log.info("timing cache saved to %s", path)
    return path


def save_engine(engine: bytes, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write the plan and its `.plan.json` metadata; both appear under their final names, or neither does."""
    path = Path(path)
    if metadata is None:
        return write_bytes_atomic(path, engine)
    with atomic_path(metadata_path(path)) as tmp_meta, atomic_path(path) as tmp_plan:
        tmp_plan.write_bytes(engine)
        tmp_meta.write_text(json.dumps(metadata, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# metadata


def io_description(network) -> dict[str, list[dict[str, Any]]]:
    def one(t) -> dict[str, Any]:
        return {"name": t.name, "shape": [int(d) for d in t.shape], "dtype": getattr(t.dtype, "name", str(t.dtype))}

    return {"inputs": [one(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [one(network.get_output(i)) for i in range(network.num_outputs)]}


def _profiles_text(profiles: dict[str, Profile]) -> str:
    return ", ".join(f"{n}: min {p.min} opt {p.opt} max {p.max}" for n, p in profiles.items())


# ---------------------------------------------------------------------------------------------
# the whole build


@dataclass(frozen=True)
class BuildResult:
    plan_path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def profiles_for_batches(profiles: dict[str, Profile], opt_batches: list[int] | None) -> list[dict[str, Profile]]:
    """One profile per batch in `opt_batches`, each with OPT at that batch (the rest of the range unchanged).

    trtexec measures each batch on kernels tuned for it; a MIN:MAX:MAX engine would time batch 1 on kernels
    chosen for the largest batch. None (or one batch) keeps the single profile as it is.
    """
    if not opt_batches:
        return [profiles]
    out = []
    for b in opt_batches:
        one = {}
        for name, p in profiles.items():
            if not p.min[0] <= b <= p.max[0]:
                raise ProfileError(f"--opt-batches {b} is outside the batch range {p.min[0]}..{p.max[0]} of {name!r}")
            one[name] = Profile(p.min, (b, *p.opt[1:]), p.max)
        out.append(one)
    return out


def refuse_fp8_below_ada(info: OnnxInfo, device: dict[str, str]) -> None:
    """BackendUnavailableError, in one line naming the device and the requirement, for an ONNX with FP8 Q/DQ on a GPU
    below compute capability 8.9 (TensorRT's builder refuses it there: "Networks with FP8 Q/DQ layers require
    hardware with FP8 support"), before anything is built."""
    import onnx

    from twins_trt.qdq import formats_in

    if info.precision != "fp8" and "fp8" not in formats_in(onnx.load(str(info.path), load_external_data=False)):
        return
    why = fp8_refusal(device)
    if why:
        raise BackendUnavailableError(f"twins-build refuses {info.path.name}: {why}")


def build_engine(onnx_path: str | os.PathLike, out_dir: str | os.PathLike = "engines", *, batch: int | None = None,
                 profile: str | None = None, opt_batches: list[int] | None = None, workspace_gib: float | None = None,
                 opt_level: int | None = None, timing_cache: str | os.PathLike | None = None, verbose: bool = False,
                 trt: ModuleType | None = None, device: dict[str, str] | None = None) -> BuildResult:
    """`export/<name>.onnx` -> `<out_dir>/<name>.plan` + `<out_dir>/<name>.plan.json`.

    opt_batches=[1, 8] gives one optimization profile per batch, OPT at that batch (see profiles_for_batches).
    The engine is saved before the timing cache, so a failing cache write never loses a finished build.
    """
    trt = load_tensorrt(trt)
    info: OnnxInfo = read_onnx_info(onnx_path)
    base = profile_from_onnx(info, batch=batch, profile=profile)
    opt_batches = sorted(set(opt_batches)) if opt_batches and len(set(opt_batches)) > 1 else None
    profiles = profiles_for_batches(base, opt_batches)
    device = device or device_info(trt)
    refuse_fp8_below_ada(info, device)
    plan_path, meta_path = engine_paths(onnx_path, out_dir)
    ensure_dir(out_dir)  # fail before a long build, not after
    log.info("building %s -> %s: %s %s on %s, precision %s (from the ONNX), profile%s %s, workspace %s, "
             "optimization level %s, timing cache %s", info.path, plan_path,
             "TensorRT emulator" if is_emulated(trt) else "TensorRT", trt.__version__, device["name"],
             info.precision, "s" * (len(profiles) > 1), "; ".join(_profiles_text(p) for p in profiles),
             f"{workspace_gib:g} GiB" if workspace_gib else "default",
             "default" if opt_level is None else opt_level, timing_cache or "none")

    import onnx

    from twins_trt.export.attention import report_attention  # pure graph analysis (onnx), imported when building
    from twins_trt.export.trt_support import check_model, with_types

    graph = with_types(onnx.load(str(info.path), load_external_data=False))
    support = check_model(graph, infer=False)  # TensorRT's operator table, before the parser: one line per node
    if not support.ok:
        raise UnsupportedByTensorRTError(support.refusal(str(info.path)))
    attention = report_attention(graph, info.precision if info.precision in ("fp32", "fp16", "int8", "fp8") else None,
                                 infer=False)
    log.info("%s; fused attention, %s", support.line(), attention.line())

    t0 = time.perf_counter()
    builder, network, _parser = network_from_onnx_path(info.path, trt=trt, logger=logger_for(trt, verbose))
    config = config_from_network(builder, network, profiles if len(profiles) > 1 else profiles[0],
                                 workspace_gib=workspace_gib, opt_level=opt_level, timing_cache=timing_cache,
                                 allow_tf32=info.precision != "fp32", trt=trt)
    engine = engine_bytes_from_network(builder, network, config)
    seconds = time.perf_counter() - t0

    overridden = batch is not None or profile is not None
    batch_spec = next(iter(base.values())).batch_spec() if overridden else None
    metadata = {
        "format": METADATA_FORMAT,
        "engine": plan_path.name,
        "emulated": is_emulated(trt),
        "onnx": str(info.path),
        "onnx_sha256": sha256_file(info.path),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "variant": info.variant,
        "precision": info.precision,
        "features": info.metadata.get("twins_trt.features") == "true",
        "tensorrt": str(trt.__version__),
        "gpu": {"name": device["name"], "compute_capability": device["compute_capability"]},
        "profile": {name: p.to_json() for name, p in profiles[0].items()},
        "profiles": [{name: p.to_json() for name, p in one.items()} for one in profiles],
        **io_description(network),
        "builder": {"strongly_typed": True, "tf32": info.precision != "fp32", "workspace_gib": workspace_gib,
                    "opt_level": opt_level,
                    "timing_cache": None if timing_cache is None else str(timing_cache)},
        "checks": {"tensorrt_parser": support.line(), "table": support.table,
                   "fused_attention": attention.line(), "attention_rules": attention.to_dict()["rules"]},
        "build_seconds": round(seconds, 3),
        "built_at": now_iso(),
        "tools": tool_versions(),
        "rebuild_command": build_command(info.path, out_dir, profile=batch_spec, workspace_gib=workspace_gib,
                                         opt_level=opt_level, timing_cache=timing_cache, opt_batches=opt_batches),
    }
    save_engine(engine, plan_path, metadata)
    log.info("saved %s (%.1f MiB) and %s", plan_path, len(engine) / 2**20, meta_path)
    if timing_cache is not None:
        try:
            save_timing_cache(config, timing_cache)
        except OSError as e:  # the engine is saved; a cache that cannot be written only costs the next build time
            log.warning("timing cache not saved to %s (%s); the engine %s is complete", timing_cache,
                        e.strerror or e, plan_path)
    return BuildResult(plan_path, meta_path, metadata)


__all__ = ["BuildResult", "build_engine", "config_from_network", "engine_bytes_from_network", "host_bytes",
           "io_description", "network_flags", "network_from_onnx_path", "parser_errors_message",
           "profiles_for_batches", "save_engine", "save_timing_cache"]


def try_build_after_export(onnx_path: str | os.PathLike, out_dir: str | os.PathLike = "engines",
                           trt: ModuleType | None = None) -> tuple[bool, str]:
    """Build the engine now if this machine can; otherwise say why and give the command for one that can.

    Build failures (parser or builder) are raised as BuildError: an export that TensorRT rejects is news.
    """
    ok, why = tensorrt_status(trt)
    if not ok:
        return False, f"no TensorRT engine built: {why}; on a GPU machine run: {build_hint(onnx_path, out_dir)}"
    try:
        result = build_engine(onnx_path, out_dir, trt=trt)
    except BackendUnavailableError as e:  # the device cannot take this precision (FP8 below 8.9): not news
        return False, f"no TensorRT engine built: {e}"
    return True, (f"built {result.plan_path} ({result.metadata['engine_bytes'] / 2**20:.1f} MiB, "
                  f"{result.metadata['build_seconds']:.1f} s, {why})")
