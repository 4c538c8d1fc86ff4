"""Triton Inference Server model repositories for exported ONNX files and TensorRT plans.

    triton/
      svt_s_fp16/        config.pbtxt   1/model.onnx   (platform onnxruntime_onnx)
      svt_s_fp16_trt/    config.pbtxt   1/model.plan   (platform tensorrt_plan)

Everything in a config comes from the artifact itself: for ONNX the graph's inputs and outputs
(names, element types, dims) and the export manifest's batch profile; for a plan the metadata
JSON twins-build writes beside it (`engines/<stem>.plan.json`: precision, inputs, outputs, profile).
A dynamic batch dim becomes `max_batch_size` = the profile's MAX with dims that leave the batch
out, plus dynamic batching that prefers the profile's OPT and MAX; a static batch gives
`max_batch_size: 0` and the full dims. `batching()` is that decision, the one twins-serve uses too.
Configs are written as protobuf text and, when tritonclient is installed, parsed back with Triton's
own ModelConfig schema (`triton_schema`) before they land.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins_trt.artifacts.files import atomic_path, ensure_dir, write_bytes_atomic
from twins_trt.artifacts.manifest import BatchRange, Manifest
from twins_trt.errors import EngineMismatchError, TritonConfigError
from twins_trt.triton_schema import model_config_pb2, parse_config

log = logging.getLogger(__name__)

# ONNX TensorProto element types, TensorRT DataType names and NumPy names -> Triton data types
_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 2: "TYPE_UINT8", 3: "TYPE_INT8",
               5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}
_NAMED_TYPES = {
    "float": "TYPE_FP32", "float32": "TYPE_FP32", "fp32": "TYPE_FP32", "half": "TYPE_FP16", "float16": "TYPE_FP16",
    "fp16": "TYPE_FP16", "bf16": "TYPE_BF16", "bfloat16": "TYPE_BF16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "double": "TYPE_FP64", "float64": "TYPE_FP64",
}
# ONNX Runtime's TensorRT accelerator takes FP32/FP16/INT8; an FP8 Q/DQ graph is explicitly quantized, built with FP16
_TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8", "fp8": "FP16"}


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # TYPE_FP32, ...
    shape: tuple[int, ...]  # -1 where dynamic, batch included


@dataclass
class ModelSpec:
    """What a config needs, read from one artifact."""

    source: Path
    kind: str  # onnx | plan
    precision: str | None
    inputs: list[Tensor]
    outputs: list[Tensor]
    batch: dict[str, int] | None  # {"min","opt","max"} when the batch dim is dynamic, else None
    stem: str
    notes: list[str] = field(default_factory=list)
    extra_files: list[Path] = field(default_factory=list)  # ONNX external data, copied beside the model

    @property
    def platform(self) -> str:
        return "tensorrt_plan" if self.kind == "plan" else "onnxruntime_onnx"

    @property
    def model_file(self) -> str:
        return "model.plan" if self.kind == "plan" else "model.onnx"

    @property
    def max_batch_size(self) -> int:
        return int(self.batch["max"]) if self.batch else 0

    def default_name(self) -> str:
        """`svt_s.fp16.onnx` -> `svt_s_fp16`; `svt_s.fp16.plan` -> `svt_s_fp16_trt`."""
        base = self.stem
        if self.precision and not base.endswith(f".{self.precision}"):
            base = f"{base}.{self.precision}"
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_")
        return f"{name}_trt" if self.kind == "plan" else name


# ---------------------------------------------------------------------------------------------- reading


def data_type(value: Any, where: str) -> str:
    if isinstance(value, int) and value in _ONNX_TYPES:
        return _ONNX_TYPES[value]
    text = str(getattr(value, "name", value)).strip()
    if text.upper().startswith("TYPE_"):
        return text.upper()
    key = text.lower().removeprefix("datatype.").removeprefix("tensor(").removesuffix(")")
    if key in _NAMED_TYPES:
        return _NAMED_TYPES[key]
    raise TritonConfigError(f"{where}: data type {value!r} has no Triton equivalent "
                            f"(known: {', '.join(sorted(set(_NAMED_TYPES)))})")


def spec_from_onnx(path: str | os.PathLike) -> ModelSpec:
    """Inputs and outputs from the graph; batch profile from the manifest (or the ONNX metadata)."""
    import onnx

    from twins_trt.export import get_metadata

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as e:
        raise TritonConfigError(f"ONNX file {path} does not exist; create it with twins-export") from e
    except Exception as e:
        raise TritonConfigError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e})") from e
    manifest = Manifest.read(path)
    meta = get_metadata(model)
    init_names = {i.name for i in model.graph.initializer}

    def tensors(values) -> list[Tensor]:
        out = []
        for v in values:
            if v.name in init_names:
                continue
            tt = v.type.tensor_type
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            out.append(Tensor(v.name, data_type(tt.elem_type, f"{path} tensor {v.name!r}"), dims))
        return out

    inputs, outputs = tensors(model.graph.input), tensors(model.graph.output)
    if not inputs or not outputs:
        raise TritonConfigError(f"{path} has {len(inputs)} input(s) and {len(outputs)} output(s); "
                                "need at least one each")
    batch = _batch_from(manifest.batch if manifest else None, meta.get("batch_profile"), inputs, str(path))
    precision = (manifest.precision if manifest else None) or meta.get("precision")
    spec = ModelSpec(path, "onnx", precision, inputs, outputs, batch, path.stem,
                     extra_files=_external_data(model, path.parent))
    if not manifest:
        spec.notes.append(f"no manifest beside {path}; read everything from the graph")
    return spec


def _batch_from(recorded: BatchRange | None, meta_profile: str | None, inputs: list[Tensor], where: str) -> dict | None:
    """The dynamic batch profile {min, opt, max}, or None for a static batch: the manifest's word first."""
    if recorded is not None:
        return None if recorded.static else {"min": recorded.min, "opt": recorded.opt, "max": recorded.max}
    if meta_profile:
        lo, opt, hi = (int(x) for x in meta_profile.split(":"))
        return {"min": lo, "opt": opt, "max": hi}
    if all(t.shape and t.shape[0] == -1 for t in inputs):
        raise TritonConfigError(f"{where}: the batch dim is dynamic but no batch profile is recorded (no manifest "
                                "'batch' and no twins_trt.batch_profile metadata); re-export with twins-export "
                                "--dynamic-batch MIN:OPT:MAX")
    return None


def engine_metadata(plan: str | os.PathLike) -> dict[str, Any]:
    """The engine's metadata, read by the one reader (`trt.engine_meta`), its refusals as TritonConfigError."""
    from twins_trt.trt.engine_meta import read_engine_metadata

    try:
        return read_engine_metadata(plan)
    except EngineMismatchError as e:
        raise TritonConfigError(str(e)) from e


def spec_from_plan(plan: str | os.PathLike) -> ModelSpec:
    """Inputs, outputs and profile from the engine's metadata JSON; every missing piece is named."""
    plan = Path(plan)
    if not plan.is_file():
        raise TritonConfigError(f"engine {plan} does not exist; build it with twins-build")
    meta = engine_metadata(plan)
    from twins_trt.trt.engine_meta import metadata_path

    where = str(metadata_path(plan))
    problems = []
    for key in ("inputs", "outputs"):
        v = meta.get(key)
        if not isinstance(v, list) or not v:
            problems.append(f"'{key}' (a list of {{name, shape, dtype}})")
            continue
        for i, t in enumerate(v):
            lacks = [k for k in ("name", "shape", "dtype") if not isinstance(t, dict) or k not in t]
            if lacks:
                problems.append(f"{key}[{i}].{'/'.join(lacks)}")
    if "profile" not in meta:
        problems.append("'profile' ({min, opt, max} shapes, or one such entry per input name)")
    if "precision" not in meta:
        problems.append("'precision' (fp32, fp16, int8 or fp8)")
    if problems:
        raise TritonConfigError(f"engine metadata {where} lacks {', '.join(problems)}; it has keys "
                                f"{sorted(meta)}")

    def tensors(items: list[dict]) -> list[Tensor]:
        return [Tensor(str(t["name"]), data_type(t["dtype"], f"{where} tensor {t['name']!r}"),
                       tuple(int(d) for d in t["shape"])) for t in items]

    inputs, outputs = tensors(meta["inputs"]), tensors(meta["outputs"])
    profile = meta["profile"]
    if isinstance(profile, dict) and {"min", "opt", "max"} <= set(profile):
        first = profile
    elif isinstance(profile, dict) and inputs[0].name in profile:
        first = profile[inputs[0].name]  # twins-build writes one profile per input name
    else:
        raise TritonConfigError(f"{where}: 'profile' must be {{min, opt, max}} shapes or {{input name: {{min, opt, "
                                f"max}}}}; got {json.dumps(profile)[:200]}")
    try:
        lo, opt, hi = (int(first[k][0]) for k in ("min", "opt", "max"))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise TritonConfigError(f"{where}: profile {json.dumps(first)[:200]} needs min/opt/max shapes "
                                "with the batch first") from e
    dynamic = inputs[0].shape[:1] == (-1,) or lo != hi
    batch = {"min": lo, "opt": opt, "max": hi} if dynamic else None
    if not dynamic:
        inputs = [Tensor(t.name, t.data_type, tuple(first["min"]) if i == 0 else t.shape) for i, t in enumerate(inputs)]
    return ModelSpec(plan, "plan", meta.get("precision"), inputs, outputs, batch, plan.stem)


def spec_from_artifact(path: str | os.PathLike) -> ModelSpec:
    path = Path(path)
    if path.suffix == ".onnx":
        return spec_from_onnx(path)
    if path.suffix in (".plan", ".engine", ".trt"):
        return spec_from_plan(path)
    raise TritonConfigError(f"{path}: expected an exported .onnx or a TensorRT .plan")


# ---------------------------------------------------------------------------------------------- writing


DEFAULT_QUEUE_DELAY_US = 100  # Triton's dynamic batcher waits this long for a preferred batch to fill


@dataclass(frozen=True)
class Batching:
    """How Triton batches one artifact's requests: the one decision twins-triton and twins-serve share."""

    max_batch_size: int  # 0: the artifact takes one static batch, with the batch in its dims
    preferred: tuple[int, ...]  # preferred batch sizes: the profile's OPT and MAX
    queue_delay_us: int
    dynamic: bool  # Triton's dynamic batcher on (off: each request runs as it came)


def batching(spec: ModelSpec, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, dynamic: bool = True) -> Batching:
    """From the artifact's batch profile: `max_batch_size` = MAX, preferred sizes = OPT and MAX."""
    if queue_delay_us < 0:
        raise ValueError(f"the queue delay must be >= 0 microseconds, got {queue_delay_us}")
    if not spec.batch:
        return Batching(0, (), 0, False)
    hi = int(spec.batch["max"])
    preferred = tuple(sorted({b for b in (int(spec.batch["opt"]), hi) if 1 <= b <= hi}))
    return Batching(hi, preferred, queue_delay_us if dynamic else 0, dynamic)



def _dims(t: Tensor, spec: ModelSpec, where: str) -> tuple[int, ...]:
    if spec.batch is None:
        return t.shape
    if not t.shape or t.shape[0] not in (-1, spec.batch["max"]):
        raise TritonConfigError(f"{where}: {t.name!r} has shape {list(t.shape)} but the batch is dynamic; "
                                "expected the batch dim first")
    return t.shape[1:]


def config_text(spec: ModelSpec, name: str, instances: int = 1, kind: str = "gpu",
                trt_accelerator: bool = False, workspace_bytes: int = 1 << 30, *, batch: Batching | None = None,
                backend: str | None = None, parameters: dict[str, str] | None = None) -> str:
    """config.pbtxt for `spec` (protobuf text of Triton's ModelConfig).

    `batch`: `batching(spec)` unless given; `backend` ("python"): a model a Triton backend runs instead of
    the artifact's platform, with `parameters` for it (twins-serve).
    """
    batch = batch or batching(spec)
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if kind not in ("gpu", "cpu"):
        raise ValueError(f"instance kind must be 'gpu' or 'cpu', got {kind!r}")
    if spec.kind == "plan" and kind != "gpu" and not backend:
        raise ValueError(f"{spec.source}: a TensorRT plan runs on the GPU only (instance kind 'gpu')")
    if trt_accelerator and spec.kind != "onnx":
        raise ValueError(f"{spec.source}: the TensorRT execution accelerator is for ONNX models; a plan already is one")
    if trt_accelerator and kind != "gpu":
        raise ValueError("the TensorRT execution accelerator needs GPU instances (instance kind 'gpu')")

    def io(t: Tensor) -> str:
        dims = ", ".join(str(d) for d in _dims(t, spec, str(spec.source)))
        return f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {dims} ]\n  }}'

    lines = [f"# generated by twins-triton from {spec.source.name}"
             f"{f' ({spec.precision})' if spec.precision else ''}",
             f'name: "{name}"', f'backend: "{backend}"' if backend else f'platform: "{spec.platform}"',
             f"max_batch_size: {batch.max_batch_size}",
             "input [", ",\n".join(io(t) for t in spec.inputs), "]",
             "output [", ",\n".join(io(t) for t in spec.outputs), "]"]
    if batch.dynamic:
        lines += ["dynamic_batching {", f"  preferred_batch_size: [ {', '.join(map(str, batch.preferred))} ]",
                  f"  max_queue_delay_microseconds: {batch.queue_delay_us}", "}"]
    lines += ["instance_group [", f"  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}", "]"]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(str(value))} }} }}')
    if trt_accelerator:
        mode = _TRT_PRECISION.get(spec.precision or "fp32", "FP32")
        lines += ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator: [", "      {",
                  '        name: "tensorrt"',
                  f'        parameters {{ key: "precision_mode" value: "{mode}" }}',
                  f'        parameters {{ key: "max_workspace_size_bytes" value: "{workspace_bytes}" }}',
                  "      }", "    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _external_data(model, folder: Path) -> list[Path]:
    """Files an ONNX keeps its weights in (beside it), which must travel with it."""
    from onnx.external_data_helper import uses_external_data

    locs = set()
    for t in model.graph.initializer:
        if uses_external_data(t):
            locs |= {e.value for e in t.external_data if e.key == "location"}
    return [folder / loc for loc in sorted(locs)]


def write_triton_repo(artifacts: Sequence[str | os.PathLike], repo_dir: str | os.PathLike = "triton",
                      instances: int = 1, *, names: Sequence[str] | None = None, kind: str = "gpu",
                      trt_accelerator: bool = False, version: int = 1) -> list[Path]:
    """One Triton model per artifact (ONNX or plan) under `repo_dir`; returns the model folders.

    Each model folder gets `config.pbtxt` and `<version>/model.onnx|model.plan`, both written
    atomically. All configs are built (and checked) before anything is written.
    """
    paths = [Path(a) for a in artifacts]
    if not paths:
        raise ValueError("no artifacts given; pass exported .onnx files and/or TensorRT .plan files")
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} model name(s) for {len(paths)} artifact(s); give one per artifact or none")
    if version < 1:
        raise ValueError(f"model version must be >= 1, got {version}")
    specs = [spec_from_artifact(p) for p in paths]
    chosen = list(names) if names is not None else [s.default_name() for s in specs]
    bad = [n for n in chosen if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", n)]
    if bad:
        raise ValueError(f"model name(s) {bad} are not valid folder names (letters, digits, _ . -)")
    dupes = sorted({n for n in chosen if chosen.count(n) > 1})
    if dupes:
        raise ValueError(f"two artifacts would both be model {dupes[0]!r}; give --name for each")
    texts = []
    for spec, name in zip(specs, chosen, strict=True):
        text = config_text(spec, name, instances, kind, trt_accelerator)
        try:
            parse_config(text)
        except Exception as e:  # text_format.ParseError: a bug here, not the user's
            raise TritonConfigError(f"the config written for {spec.source} does not parse as Triton's ModelConfig "
                                    f"({e})") from e
        texts.append(text)
    repo = ensure_dir(repo_dir)
    out = []
    for spec, name, text in zip(specs, chosen, texts, strict=True):
        model_dir = repo / name
        target = model_dir / str(version) / spec.model_file
        _copy_atomic(spec.source, target)
        for extra in spec.extra_files:
            _copy_atomic(extra, target.parent / extra.name)
        write_bytes_atomic(model_dir / "config.pbtxt", text.encode())
        for note in spec.notes:
            log.warning("%s: %s", name, note)
        log.info("wrote Triton model %s (%s, max_batch_size %d) from %s", name, spec.platform,
                 spec.max_batch_size, spec.source)
        out.append(model_dir)
    return out


__all__ = ["DEFAULT_QUEUE_DELAY_US", "Batching", "ModelSpec", "Tensor", "TritonConfigError", "batching",
           "config_text", "model_config_pb2", "parse_config", "spec_from_artifact", "spec_from_onnx", "spec_from_plan",
           "write_triton_repo"]
