"""Backend names, what each needs, and why one cannot run here.

One naming scheme: ``<runtime>[-<provider>][-<precision>]``, precision fp32 when left out.

    torch            PyTorch eager fp32 (on --device: cuda when visible, else cpu)
    torch-compile    torch.compile fp32 (same device)
    torch-fp16       PyTorch eager under fp16 autocast (CUDA only)
    ort-cpu[-fp16|-int8|-fp8]   ONNX Runtime, CPU execution provider, on the fp32/fp16/int8/fp8 ONNX
    ort-cuda[-fp16|-int8|-fp8]  ONNX Runtime, CUDA execution provider
    ort-trt[-fp16|-int8|-fp8]   ONNX Runtime, TensorRT execution provider
    trt-fp32|trt-fp16|trt-int8|trt-fp8   TensorRT engine (TrtRunner) built from that ONNX (fp8: compute
                           capability >= 8.9, i.e. Ada, Hopper, Blackwell)
    openvino[-fp16|-int8|-fp8]  OpenVINO on the CPU (the CPU's compiled engine) on that ONNX, f32 hint
    openvino-bf16          OpenVINO on the fp32 ONNX with the bf16 precision hint (CPUs with native bf16 only)

FP8 on a CPU is emulated, for accuracy, never for speed: ort-cpu-fp8 runs the FP8 Q/DQ pairs as they are written
(rounding to FLOAT8E4M3FN, then the MatMul/Conv in FP16/FP32; ONNX Runtime has no FP8 kernels, and opens the
graph at ORT_ENABLE_BASIC), openvino-fp8 as FakeConvert rounding with f32 kernels (its runtime-precision
report says so). Neither is in the `cpu` group; name them.

`precision` is always the artifact's; `hint` is what OpenVINO is asked to compute in.

Groups: ``cpu``, ``gpu``, ``all``, ``auto`` (``gpu`` where torch sees a CUDA device, else ``cpu``).
Everything here is pure data and pure functions; `Capabilities.detect()` is the only probe, and
`make_runner` the one runner factory (bench, eval and the A/B worker all build runners through it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from twins_trt.export import PRECISIONS
from twins_trt.qdq import FORMATS  # the quantized precisions (int8, fp8): calibrated exports

ORT_PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                      "trt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class Backend:
    name: str
    runtime: str  # torch | ort | trt | openvino
    precision: str = "fp32"
    provider: str | None = None  # ort: cpu | cuda | trt
    hint: str | None = None  # openvino: INFERENCE_PRECISION_HINT (f32 | bf16)
    compile: bool = False
    gpu_only: bool = False

    @property
    def needs_onnx(self) -> bool:
        return self.runtime in ("ort", "trt", "openvino")

    @property
    def needs_engine(self) -> bool:
        return self.runtime == "trt"

    @property
    def is_torch(self) -> bool:
        return self.runtime == "torch"


def _table() -> dict[str, Backend]:
    out = {
        "torch": Backend("torch", "torch"),
        "torch-compile": Backend("torch-compile", "torch", compile=True),
        "torch-fp16": Backend("torch-fp16", "torch", precision="fp16", gpu_only=True),
    }
    for provider in ORT_PROVIDER_NAMES:
        for p in PRECISIONS:
            name = f"ort-{provider}" if p == "fp32" else f"ort-{provider}-{p}"
            out[name] = Backend(name, "ort", p, provider, gpu_only=provider != "cpu")
    for p in PRECISIONS:
        out[f"trt-{p}"] = Backend(f"trt-{p}", "trt", p, gpu_only=True)
    for p in PRECISIONS:
        name = "openvino" if p == "fp32" else f"openvino-{p}"
        out[name] = Backend(name, "openvino", p, hint="f32")
    out["openvino-bf16"] = Backend("openvino-bf16", "openvino", "fp32", hint="bf16")
    return out


BACKENDS: dict[str, Backend] = _table()
REFERENCE = "torch"  # speedups and the gate are relative to PyTorch eager fp32
GROUPS: dict[str, list[str]] = {
    "cpu": ["torch", "torch-compile", "ort-cpu", "ort-cpu-fp16", "ort-cpu-int8", "openvino", "openvino-bf16",
            "openvino-fp16", "openvino-int8"],
    "gpu": ["torch", "torch-fp16", "torch-compile", "ort-cuda", "ort-cuda-fp16", "ort-trt", "ort-trt-fp16",
            "ort-trt-int8", "trt-fp32", "trt-fp16", "trt-int8", "trt-fp8"],
    "all": list(BACKENDS),
}
ALIASES = {"ort-cpu-fp32": "ort-cpu", "ort-cuda-fp32": "ort-cuda", "ort-trt-fp32": "ort-trt", "torch-fp32": "torch",
           "torch-eager": "torch", "openvino-fp32": "openvino",
           # twins-eval's former names, kept so old commands still work
           "ort-fp32": "ort-cpu", "ort-fp16": "ort-cpu-fp16", "ort-int8": "ort-cpu-int8"}


def parse_backends(text: str, cuda: bool = False) -> list[Backend]:
    """`"torch,ort-cpu-int8,gpu"` -> Backends in the order given, duplicates dropped. ValueError names the bad ones."""
    names: list[str] = []
    bad: list[str] = []
    for raw in text.split(","):
        tok = raw.strip().lower()
        if not tok:
            continue
        if tok == "auto":
            tok = "gpu" if cuda else "cpu"
        if tok in GROUPS:
            names += GROUPS[tok]
        elif ALIASES.get(tok, tok) in BACKENDS:
            names.append(ALIASES.get(tok, tok))
        else:
            bad.append(raw.strip())
    if bad:
        raise ValueError(f"unknown backend(s) {', '.join(map(repr, bad))}; expected names from: {', '.join(BACKENDS)} "
                         f"or a group: {', '.join(GROUPS)}, auto (scheme: <runtime>[-<provider>][-<precision>])")
    if not names:
        raise ValueError("no backend given; e.g. --backends torch,ort-cpu")
    return [BACKENDS[n] for n in dict.fromkeys(names)]


def parse_batches(text: str) -> list[int]:
    """`"1,8,64"` -> [1, 8, 64]; ValueError for anything that is not a positive integer."""
    out: list[int] = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        try:
            b = int(tok)
        except ValueError:
            raise ValueError(f"batch sizes must be positive integers separated by commas (e.g. 1,8,64); "
                             f"got {tok!r} in {text!r}") from None
        if b < 1:
            raise ValueError(f"batch sizes must be >= 1; got {b} in {text!r}")
        out.append(b)
    if not out:
        raise ValueError(f"no batch size in {text!r}; e.g. --batch 1,8")
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers; detect() probes it, tests build one by hand."""

    cuda: bool = False
    gpu_name: str | None = None
    ort_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    tensorrt_ok: bool = False
    tensorrt_why: str = "TensorRT is not importable here"
    openvino_ok: bool = True  # a regular dependency: there unless the install is broken
    openvino_why: str = "OpenVINO"
    bf16: bool = False  # native bf16 arithmetic (avx512_bf16 / AMX) that OpenVINO offers
    bf16_why: str = "this CPU has no native bf16"
    fp8_refused: str | None = None  # why TensorRT's device cannot build FP8 engines (compute capability < 8.9)

    @classmethod
    def detect(cls) -> Capabilities:
        from twins_trt.device import cuda_available
        from twins_trt.runners.openvino_runner import bf16_status, openvino_status
        from twins_trt.trt import tensorrt_status

        cuda = cuda_available()
        gpu = None
        if cuda:
            import torch

            gpu = torch.cuda.get_device_name()
        try:
            import onnxruntime as ort

            providers = tuple(ort.get_available_providers())
        except ImportError:  # pragma: no cover
            providers = ()
        ok, why = tensorrt_status()
        ov_ok, ov_why = openvino_status()
        bf16, bf16_why = bf16_status()
        fp8_refused = None
        if ok:
            from twins_trt.trt import load_tensorrt
            from twins_trt.trt.engine_meta import device_info, fp8_refusal

            fp8_refused = fp8_refusal(device_info(load_tensorrt()))
        return cls(cuda, gpu, providers, ok, why, ov_ok, ov_why, bf16, bf16_why, fp8_refused)


def skip_reason(b: Backend, caps: Capabilities, device: str = "auto") -> str | None:
    """One line saying why `b` cannot run here, or None when it can."""
    no_gpu = "no CUDA GPU is visible to torch on this machine"
    if b.runtime == "torch":
        if b.precision == "fp16" and not caps.cuda:
            return f"fp16 PyTorch runs on CUDA only and {no_gpu}"
        if device == "cuda" and not caps.cuda:
            return f"--device cuda asked for, but {no_gpu}"
        return None
    if b.runtime == "ort":
        prov = ORT_PROVIDER_NAMES[b.provider]
        if prov not in caps.ort_providers:
            return f"ONNX Runtime here lacks {prov} (available: {', '.join(caps.ort_providers) or 'none'})"
        if b.provider != "cpu" and not caps.cuda:
            return f"ONNX Runtime's {prov} needs a GPU and {no_gpu}"
        if b.provider == "trt" and not caps.tensorrt_ok:
            return f"ONNX Runtime's {prov} needs the TensorRT libraries: {caps.tensorrt_why}"
        if b.provider == "trt" and b.precision == "fp8" and caps.fp8_refused:
            return caps.fp8_refused
        return None
    if b.runtime == "trt":
        if not caps.tensorrt_ok:
            return caps.tensorrt_why
        if b.precision == "fp8" and caps.fp8_refused:
            return caps.fp8_refused
        return None
    if b.runtime == "openvino":
        if not caps.openvino_ok:
            return caps.openvino_why
        if b.hint == "bf16" and not caps.bf16:
            return f"the bf16 hint needs a CPU with native bf16: {caps.bf16_why}"
        return None
    raise ValueError(f"unknown runtime {b.runtime!r}")  # pragma: no cover


def torch_device(device: str, caps: Capabilities) -> str:
    """--device auto -> cuda where visible, else cpu."""
    if device == "auto":
        return "cuda" if caps.cuda else "cpu"
    return device


# ---------------------------------------------------------------------------------------------- runners


def make_runner(b: Backend, *, model, device: str, onnx: dict[str, Path], engines: dict[str, Path],
                threads: int | None, cuda_graph: bool = False):
    """A Runner for `b`; runtimes are imported lazily (TensorRT above all)."""
    if b.runtime == "torch":
        from twins_trt.runners.torch_runner import TorchRunner

        return TorchRunner(model, device=device, fp16=b.precision == "fp16", compile=b.compile, name=b.name)
    if b.runtime == "ort":
        from twins_trt.runners.ort_runner import OrtRunner

        return OrtRunner(onnx[b.precision], provider=b.provider, threads=threads, name=b.name)
    if b.runtime == "trt":
        from twins_trt.trt.runner import TrtRunner

        return TrtRunner(engines[b.precision], use_cuda_graph=cuda_graph, name=b.name)
    if b.runtime == "openvino":
        from twins_trt.runners.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(onnx[b.precision], precision_hint=b.hint or "f32", threads=threads, name=b.name)
    raise ValueError(f"unknown runtime {b.runtime!r}")  # pragma: no cover


@dataclass
class Plan:
    """What a run will do: backends to run, backends skipped (with reasons), artifacts it needs."""

    run: list[Backend] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    onnx_precisions: list[str] = field(default_factory=list)
    engine_precisions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run": [b.name for b in self.run], "skipped": dict(self.skipped),
                "onnx_precisions": list(self.onnx_precisions), "engine_precisions": list(self.engine_precisions)}


def plan_run(backends: list[Backend], caps: Capabilities, device: str = "auto", *,
             can_calibrate: bool = True, int8_available: bool = False) -> Plan:
    """Split backends into run/skipped and list the ONNX and engines the runnable ones need.

    The PyTorch fp32 reference is always run (speedups and the gate are relative to it).
    `can_calibrate`: --calib-data or --calib-synthetic was given; `int8_available`: a matching int8
    ONNX already exists, so no calibration is needed.
    """
    plan = Plan()
    if REFERENCE not in [b.name for b in backends]:
        backends = [BACKENDS[REFERENCE], *backends]
    for b in backends:
        why = skip_reason(b, caps, device)
        if why is None and b.precision in FORMATS and b.needs_onnx and not (
                can_calibrate or (int8_available and b.precision == "int8")):
            why = (f"{FORMATS[b.precision].label} needs a calibrated ONNX: pass --calib-data DIR (real images) or "
                   "--calib-synthetic (random data: fine for speed, not for accuracy)")
        if why is not None:
            plan.skipped[b.name] = why
            continue
        plan.run.append(b)
        if b.needs_onnx and b.precision not in plan.onnx_precisions:
            plan.onnx_precisions.append(b.precision)
        if b.needs_engine and b.precision not in plan.engine_precisions:
            plan.engine_precisions.append(b.precision)
    order = {p: i for i, p in enumerate(PRECISIONS)}
    plan.onnx_precisions.sort(key=order.__getitem__)
    plan.engine_precisions.sort(key=order.__getitem__)
    return plan
