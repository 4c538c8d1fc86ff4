"""ONNX Runtime on the CPU, CUDA or its TensorRT execution provider; and the one way a graph is run on the CPU
in padded batches (`cpu_session`, `padded_batches`, `run_in_batches`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from twins_trt.device import cpu_threads
from twins_trt.errors import BackendUnavailableError
from twins_trt.runners.base import Feed, Runner, existing_onnx, single_input

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider"],
    "trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
}


class OrtRunner(Runner):
    def __init__(self, onnx_path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                 name: str | None = None):
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        self.path = existing_onnx(onnx_path)
        self.provider = provider
        self.threads = threads
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.name = name or f"ort-{provider}"
        self.session = None
        self._binding = None

    def activate(self) -> None:
        if self.session is not None:
            return
        import onnxruntime as ort

        wanted = PROVIDERS[self.provider]
        missing = [p for p in wanted if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime here lacks {', '.join(missing)} (available: {', '.join(ort.get_available_providers())})"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization_for(self.path)])
        threads = self.threads or cpu_threads()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(self.path), opts, providers=wanted)
        # ONNX Runtime falls back silently (TensorRT -> CUDA -> CPU): label a figure by what the session runs on
        got = session.get_providers()
        if self.provider == "trt" and "TensorrtExecutionProvider" not in got:
            raise BackendUnavailableError(
                f"ONNX Runtime could not start its TensorRT provider for {self.path} (the session runs on "
                f"{', '.join(got)}); not measured, so no CUDA figure is reported as TensorRT")
        if self.device == "cuda" and "CUDAExecutionProvider" not in got:
            raise BackendUnavailableError(f"ONNX Runtime could not start CUDA for {self.path} (no usable GPU)")
        self.session = session

    def deactivate(self) -> None:
        self.session = None
        self._binding = None

    @property
    def input_names(self) -> list[str]:
        self.activate()
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        self.activate()
        return [o.name for o in self.session.get_outputs()]

    def _cast(self, x: np.ndarray) -> np.ndarray:
        """Feed the dtype the graph declares (fp16 I/O artifacts take half)."""
        want = self.session.get_inputs()[0].type
        return x.astype(np.float16 if want == "tensor(float16)" else np.float32, copy=False)

    def infer(self, feed: Feed | np.ndarray) -> dict[str, np.ndarray]:
        self.activate()
        x = self._cast(single_input(feed))
        outs = self.session.run(None, {self.input_names[0]: x})
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs)}

    def prepare(self, feed: Feed | np.ndarray) -> None:
        self.activate()
        x = self._cast(single_input(feed))
        if self.device == "cpu":
            self._prepared = {self.input_names[0]: x}
            return
        import onnxruntime as ort

        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_names[0], ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self._binding = binding

    def run_prepared(self) -> None:
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
        else:
            self.session.run(None, self._prepared)

    def synchronize(self) -> None:
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def describe(self) -> dict:
        self.activate()
        return {"name": self.name, "device": self.device, "onnx": str(self.path),
                "providers": self.session.get_providers(), "threads": self.threads}


# ---------------------------------------------------------------------------------------------- CPU sessions, batches

OPTIMIZATION = {"all": "ORT_ENABLE_ALL", "basic": "ORT_ENABLE_BASIC", "none": "ORT_DISABLE_ALL"}


def optimization_for(model) -> str:
    """The graph optimisation level ONNX Runtime runs `model` (an onnx.ModelProto or a path) at: "all", its default,
    unless the graph's Q/DQ format asks for less (`twins_trt.qdq.FORMATS`): FP8 Q/DQ need "basic", because "all"
    fuses a Q/DQ MatMul into MatMulIntegerToFloat, which has no FP8 type, and the session then fails to open.
    The one place the level is chosen: every ONNX Runtime session here (OrtRunner, cpu_session) asks it."""
    import onnx

    from twins_trt.qdq import FORMATS, formats_in

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    wanted = {FORMATS[p].ort_optimization for p in formats_in(model)}
    return next((level for level in ("none", "basic") if level in wanted), "all")


def cpu_session(model, *, optimization: str | None = None, expose: set[str] | None = None,
                threads: int | None = None):
    """An ONNX Runtime CPU session of `model` (an onnx.ModelProto or a path), quiet below errors.

    `optimization`: ONNX Runtime's graph optimizations, "all" (its default), "basic" or "none" (every tensor
    computed as the graph has it); None: the level the graph needs (`optimization_for`). `expose`: tensors made
    outputs too, after the graph's own (sorted by name). `threads`: its intra-op threads (None: `cpu_threads`).
    """
    import onnx
    import onnxruntime as ort

    if optimization is None:
        optimization = optimization_for(model)
    if optimization not in OPTIMIZATION:
        raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION)}, got {optimization!r}")
    if expose:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        have = {o.name for o in probe.graph.output}
        for name in sorted(expose - have):
            probe.graph.output.add(name=name)
        model = probe
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization])
    so.intra_op_num_threads = threads or cpu_threads() or 0
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def session_infer(session, feeds: dict[str, np.ndarray] | None = None
                  ) -> tuple[Callable[[np.ndarray], dict[str, np.ndarray]], int | None]:
    """(infer, static batch) of a session whose first input is the image: `infer` feeds an array in the dtype the
    graph declares and returns every output by name, as ONNX Runtime gives it; the batch is None when the graph's is
    symbolic. `feeds`: the graph's other inputs, the same arrays at every run."""
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    names = [o.name for o in session.get_outputs()]

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, {inp.name: x.astype(dtype), **(feeds or {})})))

    return infer, batch


def padded_batches(infer: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray, step: int,
                   min_batch: int = 1, workers: int = 1) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """`infer` on `x` in chunks of `step` samples, a chunk shorter than `min_batch` padded up to it by repeating
    its last sample; yields (outputs, how many of the chunk's leading samples are real), in order. `workers` > 1:
    that many chunks run at once, on threads (ONNX Runtime releases the GIL while it runs; give it a session of
    one intra-op thread each: on 2 cores, two one-thread runs side by side did 12 svt_s INT8 samples in 2.5-2.8 s
    where one two-thread session took 3.9-4.2 s, with the same outputs bit for bit)."""
    def chunks() -> Iterator[tuple[np.ndarray, int]]:
        for start in range(0, len(x), step):
            xb = x[start:start + step]
            n = len(xb)
            if n < min_batch:
                xb = np.concatenate([xb, np.repeat(xb[-1:], min_batch - n, axis=0)])
            yield xb, n

    if workers <= 1 or len(x) <= step:
        for xb, n in chunks():
            yield infer(xb), n
        return
    from concurrent.futures import ThreadPoolExecutor

    parts = list(chunks())
    with ThreadPoolExecutor(min(workers, len(parts))) as pool:
        yield from zip(pool.map(infer, [xb for xb, _ in parts]), [n for _, n in parts])


def run_in_batches(infer: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray, step: int,
                   min_batch: int = 1, workers: int = 1) -> dict[str, np.ndarray]:
    """Every output of `infer` over all of `x` (`padded_batches`), the padding dropped, concatenated per output."""
    outs: dict[str, list[np.ndarray]] = {}
    for got, n in padded_batches(infer, x, step, min_batch, workers):
        for name, v in got.items():
            outs.setdefault(name, []).append(v[:n])
    return {name: np.concatenate(v) for name, v in outs.items()}
