"""OpenVINO on the CPU: the CPU's counterpart of TensorRT for the same ONNX artifacts.

OpenVINO reads the ONNX as it is, turns Q/DQ pairs into INT8 kernels and, given the bf16 hint on a
CPU with bf16 arithmetic, runs an FP32 graph in bf16. The model is compiled once per input shape
(reshaped to that static shape, as OpenVINO recommends for speed), with the same thread count as
ONNX Runtime and PyTorch: INFERENCE_NUM_THREADS = threads, one stream, latency hint.
"""

from __future__ import annotations

import os

import numpy as np

from twins_trt.device import cpu_flags, cpu_threads
from twins_trt.errors import BackendUnavailableError
from twins_trt.runners.base import Feed, Runner, existing_onnx, single_input

PRECISION_HINTS = ("f32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # bf16 arithmetic in hardware (Linux /proc/cpuinfo names)
VNNI_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products that accumulate in int32
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) below the first ISA with VNNI: oneDNN then uses no VNNI instruction
NO_VNNI_ISA_CAPS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")


def openvino_status() -> tuple[bool, str]:
    """(importable, one line): the version, or why OpenVINO cannot be used."""
    try:
        import openvino
    except ImportError as e:
        return False, f"OpenVINO is not importable here ({e}); pip install openvino"
    return True, f"OpenVINO {openvino.get_version()}"



def bf16_decision(capabilities: tuple[str, ...] | frozenset[str], flags: frozenset[str]) -> tuple[bool, str]:
    """Native bf16 or not, and why: OpenVINO must offer BF16 and the CPU must compute in it.

    `capabilities`: OpenVINO's CPU OPTIMIZATION_CAPABILITIES; `flags`: the CPU flags (empty = unknown,
    then OpenVINO's word is taken). Without bf16 hardware OpenVINO would emulate it, slower than fp32.
    """
    if "BF16" not in capabilities:
        return False, (f"this CPU has no native bf16: OpenVINO's CPU plugin does not offer BF16 "
                       f"(OPTIMIZATION_CAPABILITIES: {', '.join(capabilities) or 'none'})")
    have = sorted(set(BF16_CPU_FLAGS) & set(flags))
    if flags and not have:
        return False, (f"this CPU has no native bf16 (neither {' nor '.join(BF16_CPU_FLAGS)} among its flags); "
                       f"the bf16 hint would be emulated")
    return True, f"native bf16 ({', '.join(have) or 'OpenVINO reports BF16'})"


def int8_decision(flags: frozenset[str], isa_cap: str | None = None) -> tuple[bool, str]:
    """Exact INT8 kernels or not, and why. Without VNNI (or with oneDNN capped below it by ONEDNN_MAX_CPU_ISA),
    OpenVINO's u8 x s8 kernels add pairs of products in 16 bits (vpmaddubsw), which saturate: an INT8 artifact
    that ONNX Runtime computes correctly can miss its tolerance there. `flags` empty = unknown, taken as exact.
    """
    cap = (isa_cap or "").strip().upper()
    if cap in NO_VNNI_ISA_CAPS:
        return False, f"oneDNN is capped at {cap} (ONEDNN_MAX_CPU_ISA), below VNNI"
    have = sorted(set(VNNI_CPU_FLAGS) & set(flags))
    if flags and not have:
        return False, (f"this CPU has no VNNI (none of {', '.join(VNNI_CPU_FLAGS)}): OpenVINO's INT8 kernels add "
                       "u8 x s8 products in 16 bits, which saturate")
    return True, f"exact int32 accumulation ({', '.join(have) or 'CPU flags unknown'})"


def int8_status() -> tuple[bool, str]:
    """int8_decision() for this machine and process."""
    return int8_decision(cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA"))


def bf16_status() -> tuple[bool, str]:
    """bf16_decision() for this machine."""
    ok, why = openvino_status()
    if not ok:
        return False, why
    import openvino as ov

    caps = tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return bf16_decision(caps, cpu_flags())


class _Compiled:
    """One static-shape compilation: the reshaped model, the compiled model and its infer request."""

    def __init__(self, model, compiled):
        self.model = model
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.report = None


class OpenVinoRunner(Runner):
    def __init__(self, onnx_path: str | os.PathLike, precision_hint: str = "f32", threads: int | None = None,
                 name: str | None = None):
        if precision_hint not in PRECISION_HINTS:
            raise ValueError(f"precision_hint must be one of {', '.join(PRECISION_HINTS)}, got {precision_hint!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for OpenVINO's default), got {threads}")
        self.path = existing_onnx(onnx_path)
        self.precision_hint = precision_hint
        self.threads = threads
        self.device = "cpu"
        self.name = name or ("openvino" if precision_hint == "f32" else f"openvino-{precision_hint}")
        self._core = None
        self._model = None
        self._by_shape: dict[tuple[int, ...], _Compiled] = {}
        self._last: _Compiled | None = None
        self._quantized: dict[str, str] | None = None
        self._staged: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def activate(self) -> None:
        if self._core is not None:
            return
        ok, why = openvino_status()
        if not ok:
            raise BackendUnavailableError(why)
        if self.precision_hint == "bf16":
            ok, why = bf16_status()
            if not ok:
                raise BackendUnavailableError(f"the bf16 hint needs native bf16: {why}")
        self._refuse_if_export_says_so()
        import openvino as ov

        self._core = ov.Core()
        self._model = self._core.read_model(str(self.path))

    def _refuse_if_export_says_so(self) -> None:
        """An artifact that OpenVINO computed wrongly at export (its manifest says so) is not run here."""
        from twins_trt.artifacts.manifest import Manifest
        from twins_trt.runners.openvino_precision import refusal

        manifest = Manifest.read(self.path)  # None: not from twins-export, or being verified right now
        why = refusal(manifest.get("openvino") if manifest else None, self.path.name)
        if why:
            raise BackendUnavailableError(why)

    def deactivate(self) -> None:
        self._core = None
        self._model = None
        self._by_shape.clear()
        self._last = None
        self._staged = None

    def config(self) -> dict:
        """The compile properties: the same thread count as the other CPU backends, one stream, latency."""
        cfg = {"INFERENCE_PRECISION_HINT": self.precision_hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        threads = self.threads or cpu_threads()
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = threads
        return cfg

    def compiled_for(self, shape: tuple[int, ...]) -> _Compiled:
        """The model compiled for this input shape (compiled on first use, then reused)."""
        self.activate()
        key = tuple(int(d) for d in shape)
        if key not in self._by_shape:
            import openvino as ov

            model = self._model.clone()
            if not model.inputs[0].get_partial_shape().compatible(ov.PartialShape(list(key))):
                raise ValueError(f"{self.path.name} takes input shape {model.inputs[0].get_partial_shape()}, "
                                 f"got {list(key)}")
            model.reshape({model.inputs[0]: list(key)})
            self._by_shape[key] = _Compiled(model, self._core.compile_model(model, "CPU", self.config()))
        self._last = self._by_shape[key]
        return self._last

    # ------------------------------------------------------------------------------------------ interface

    @property
    def input_names(self) -> list[str]:
        self.activate()
        return [self._model.inputs[0].get_any_name()]

    @property
    def output_names(self) -> list[str]:
        self.activate()
        return [o.get_any_name() for o in self._model.outputs]

    def _cast(self, x: np.ndarray, c: _Compiled) -> np.ndarray:
        """Feed the dtype the graph declares (fp16 I/O artifacts take half)."""
        import openvino as ov

        want = np.float16 if c.compiled.inputs[0].get_element_type() == ov.Type.f16 else np.float32
        return np.ascontiguousarray(x, dtype=want)

    def infer(self, feed: Feed | np.ndarray) -> dict[str, np.ndarray]:
        x = single_input(feed)
        c = self.compiled_for(x.shape)
        c.request.infer({0: self._cast(x, c)})
        return {n: np.array(c.request.get_output_tensor(i).data, dtype=np.float32)
                for i, n in enumerate(self.output_names)}

    def prepare(self, feed: Feed | np.ndarray) -> None:
        import openvino as ov

        x = single_input(feed)
        c = self.compiled_for(x.shape)
        self._staged = self._cast(x, c)  # the tensor below shares this memory: keep it alive
        c.request.set_input_tensor(ov.Tensor(self._staged, shared_memory=True))

    def run_prepared(self) -> None:
        if self._staged is None or self._last is None:
            raise RuntimeError("call prepare(feed) before run_prepared()")
        self._last.request.infer()

    # ------------------------------------------------------------------------------------------ reporting

    def precision_report(self):
        """What ran in which precision for the last compiled shape (None before the first inference)."""
        from twins_trt.runners.openvino_precision import layer_formats, precision_report

        c = self._last
        if c is None:
            return None
        if c.report is None:
            if self._quantized is None:
                self._quantized = layer_formats(self.path)  # INT8 and FP8 layers, by name
            c.report = precision_report(c.model, c.compiled, self._quantized)
        return c.report

    def describe(self) -> dict:
        import openvino as ov

        self.activate()
        rep = self.precision_report()
        out = {"name": self.name, "device": self.device, "onnx": str(self.path), "openvino": ov.get_version(),
               "precision_hint": self.precision_hint, "threads": self.threads, "num_streams": 1,
               "performance_hint": "LATENCY"}
        if self._last is not None:
            out["compiled_precision_hint"] = self._last.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        out["precision_report"] = rep.to_dict() if rep is not None else None
        return out
