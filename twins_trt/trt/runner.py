"""TensorRT engines through the TensorRT 10+ I/O tensor API, with torch owning device memory.

Buffers are torch CUDA tensors and the stream is a torch CUDA stream, so timing uses the same
clock as the PyTorch baseline and no pycuda is needed. With `use_cuda_graph=True` the enqueue
is captured once per input shape and replayed.

Under the TensorRT emulator (tools/trt_emulator, which runs the engine's graph on ONNX Runtime on the
CPU) the GPU path is as above wherever torch sees CUDA: the emulator then takes device pointers and CUDA
streams and moves the data through the CUDA runtime (its "device" memory), so buffers, streams, copies and
CUDA-graph capture execute for real. Without CUDA ("host" memory) one seam changes, in `_HostOrCuda`:
buffers are 256-byte aligned host tensors, the stream handle is 0, the clock is the host's, device memory
is not measured (the process RSS is the figure), and CUDA graphs are skipped with a reason.

The setup path is three plain functions (`io_tensors`, `bind_tensors`, `enqueue`) that take the
engine and context objects, so tests can drive them with objects specced from the real API.
Importing this module needs neither TensorRT nor CUDA.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from twins_trt.device import require_cuda
from twins_trt.errors import EngineMismatchError, EngineRunError, InputSizeError
from twins_trt.runners.base import Feed, Runner, single_input

# TensorRT DataType member name -> torch dtype attribute
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
# IExecutionContext::setTensorAddress: "The pointer must have at least 256-byte alignment" (NvInferRuntime.h).
# cudaMalloc and torch's CUDA allocator give that; torch's host allocator gives 64, so host buffers are padded.
ADDRESS_ALIGNMENT = 256


def aligned_host_tensor(shape: tuple[int, ...], dtype: Any, alignment: int = ADDRESS_ALIGNMENT):
    """An uninitialised host torch tensor whose data starts on an `alignment`-byte boundary.

    `dtype` is a torch dtype or its name ("float32"). The tensor is a view of a slightly larger byte buffer,
    which it keeps alive."""
    import torch

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    raw = torch.empty(nbytes + alignment, dtype=torch.uint8)
    start = -raw.data_ptr() % alignment
    return raw[start:start + nbytes].view(dtype).view(shape)


@dataclass(frozen=True)
class IOTensor:
    name: str
    is_input: bool
    dtype: str  # TensorRT DataType member name: FLOAT, HALF, ...
    shape: tuple[int, ...]  # -1 where dynamic


def _enum_name(v: Any) -> str:
    return getattr(v, "name", str(v))


def io_tensors(engine, trt: ModuleType) -> list[IOTensor]:
    """The engine's inputs and outputs, in engine order."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        if mode == trt.TensorIOMode.NONE:
            continue
        out.append(IOTensor(name, mode == trt.TensorIOMode.INPUT, _enum_name(engine.get_tensor_dtype(name)),
                            tuple(int(d) for d in engine.get_tensor_shape(name))))
    return out


def input_profile(engine, name: str, profile_index: int = 0) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes the engine accepts for input `name`."""
    return tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, profile_index))


def bind_tensors(context, tensors: list[IOTensor], inputs: Mapping[str, Any],
                 alloc: Callable[[tuple[int, ...], str], Any], engine=None) -> dict[str, Any]:
    """Set every input's shape and address, allocate outputs for the shapes that follow, set their addresses.

    `inputs` hold device tensors (anything with `.shape` and `.data_ptr()`); `alloc(shape, trt_dtype_name)`
    makes an output buffer. Returns the output buffers by name.
    """
    for t in tensors:
        if not t.is_input:
            continue
        if t.name not in inputs:
            raise EngineRunError(f"engine input {t.name!r} not fed (got {sorted(inputs)})")
        x = inputs[t.name]
        shape = tuple(int(d) for d in x.shape)
        if not context.set_input_shape(t.name, shape):
            accepted = ""
            if engine is not None:
                lo, opt, hi = input_profile(engine, t.name)
                accepted = f"; the engine takes min {lo}, opt {opt}, max {hi} (rebuild with twins-build --profile)"
            raise InputSizeError(f"TensorRT rejected shape {shape} for input {t.name!r}{accepted}")
        context.set_tensor_address(t.name, int(x.data_ptr()))
    unresolved = context.infer_shapes()
    if unresolved:
        raise EngineRunError(f"TensorRT could not resolve the shapes of {list(unresolved)}")
    outputs = {}
    for t in tensors:
        if t.is_input:
            continue
        shape = tuple(int(d) for d in context.get_tensor_shape(t.name))
        buf = alloc(shape, t.dtype)
        context.set_tensor_address(t.name, int(buf.data_ptr()))
        outputs[t.name] = buf
    return outputs


def engine_from_bytes(data: bytes, trt: ModuleType, logger, source: str = "engine", rebuild: str = ""):
    """(runtime, engine, context); the runtime must outlive the engine, so it is returned too."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineMismatchError(f"TensorRT {trt.__version__} could not deserialize {source}; "
                                  f"rebuild it with: {rebuild or 'twins-build EXPORT.onnx'}")
    context = engine.create_execution_context()
    if context is None:
        raise EngineRunError(f"TensorRT could not create an execution context for {source} (out of GPU memory?)")
    return runtime, engine, context


def enqueue(context, stream_handle: int) -> None:
    if not context.execute_async_v3(stream_handle):
        raise EngineRunError("TensorRT's execute_async_v3 failed (TensorRT's log above says why)")


def select_profile(profiles: list[dict[str, dict[str, list[int]]]], batch: int) -> int | None:
    """The profile to run `batch` on: the one tuned for it (OPT == batch), else the first that takes it."""
    firsts = [next(iter(p.values())) for p in profiles]
    for i, p in enumerate(firsts):
        if p["opt"][0] == batch:
            return i
    for i, p in enumerate(firsts):
        if p["min"][0] <= batch <= p["max"][0]:
            return i
    return None


class _HostOrCuda:
    """Where buffers live, what stream TensorRT is given and how to wait for it: CUDA, or host memory for the
    emulator. The only place the two paths differ."""

    def __init__(self, cuda: bool):
        self.cuda = cuda  # False: host memory, only under the emulator without CUDA
        self.device = "cuda" if cuda else "cpu"
        self.stream = None

    def open(self) -> None:
        if self.cuda:
            import torch

            self.stream = torch.cuda.Stream()

    def close(self) -> None:
        self.stream = None

    @property
    def handle(self) -> int:
        return int(self.stream.cuda_stream) if self.cuda else 0

    def scope(self):
        if not self.cuda:
            return contextlib.nullcontext()
        import torch

        return torch.cuda.stream(self.stream)

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def alloc(self, shape: tuple[int, ...], trt_dtype: str):
        import torch

        if not self.cuda:
            return aligned_host_tensor(shape, TORCH_DTYPES[trt_dtype])
        return torch.empty(shape, dtype=getattr(torch, TORCH_DTYPES[trt_dtype]), device=self.device)


class TrtRunner(Runner):
    def __init__(self, engine_path: str | os.PathLike, *, use_cuda_graph: bool = False, check_metadata: bool = True,
                 verbose: bool = False, name: str | None = None, trt: ModuleType | None = None):
        from twins_trt.trt import load_tensorrt
        from twins_trt.trt.engine_meta import (
            check_engine_compatible,
            device_info,
            engine_profiles,
            is_emulated,
            read_engine_metadata,
        )

        self.trt = load_tensorrt(trt)  # BackendUnavailableError with one line when TensorRT is missing
        self.emulated = is_emulated(self.trt)
        # the emulator's I/O lives on the GPU where torch sees one (TRT_EMULATOR_MEMORY), else in host memory
        cuda = not self.emulated or self.trt.emulated_memory() == "device"
        if cuda:
            require_cuda("the TensorRT runner")
        self.path = Path(engine_path)
        self.metadata = read_engine_metadata(self.path)
        if check_metadata:
            check_engine_compatible(self.metadata, str(self.trt.__version__), device_info(self.trt), self.path)
        self._mem = _HostOrCuda(cuda)
        self.cuda_graph_skipped = ("CUDA graphs need a GPU; the TensorRT emulator runs on the host"
                                   if use_cuda_graph and not cuda else None)
        self.use_cuda_graph = use_cuda_graph and cuda
        self.verbose = verbose
        self.device = self._mem.device
        self.name = name or ("trt-graph" if self.use_cuda_graph else "trt")
        self._profiles = engine_profiles(self.metadata)
        self._runtime = self.engine = self.context = None
        self._tensors: list[IOTensor] = []
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        self._graph = None

    # -- lifecycle

    def activate(self) -> None:
        if self.engine is not None:
            return
        from twins_trt.trt import logger_for

        trt = self.trt
        self._runtime, self.engine, self.context = engine_from_bytes(
            self.path.read_bytes(), trt, logger_for(trt, self.verbose), str(self.path),
            self.metadata.get("rebuild_command", ""))
        self._tensors = io_tensors(self.engine, trt)
        self._mem.open()

    def deactivate(self) -> None:
        self._graph = None
        self._inputs, self._outputs = {}, {}
        self.context = None
        self.engine = None
        self._runtime = None
        self._mem.close()

    @property
    def input_names(self) -> list[str]:
        self.activate()
        return [t.name for t in self._tensors if t.is_input]

    @property
    def output_names(self) -> list[str]:
        self.activate()
        return [t.name for t in self._tensors if not t.is_input]

    # -- running

    def _alloc(self, shape: tuple[int, ...], trt_dtype: str):
        return self._mem.alloc(shape, trt_dtype)

    def _use_profile_for(self, batch: int) -> None:
        """Switch to the profile tuned for `batch` (engines built with one profile per benchmarked batch)."""
        if len(self._profiles) < 2:
            return
        index = select_profile(self._profiles, batch)
        if index is None or index == self.context.active_optimization_profile:
            return  # none takes it: set_input_shape reports the accepted range
        try:  # the bindings raise RuntimeError where setOptimizationProfileAsync fails (pyCore.cpp)
            switched = self.context.set_optimization_profile_async(index, self._mem.handle)
        except RuntimeError as e:
            raise EngineRunError(f"TensorRT could not switch {self.path} to optimization profile {index} ({e})") from e
        if not switched:
            raise EngineRunError(f"TensorRT could not switch {self.path} to optimization profile {index}")
        self._inputs, self._outputs, self._graph = {}, {}, None  # shapes and addresses are bound per profile

    def prepare(self, feed: Feed | np.ndarray) -> None:
        """Copy the input to its buffer; rebind (and recapture the graph) only when the shape changes.

        The new buffers become the runner's only once TensorRT has accepted them: after an InputSizeError
        nothing stale is left bound, so a retry binds again instead of running on freed memory.
        """
        import torch

        self.activate()
        x = np.ascontiguousarray(single_input(feed))
        spec = next(t for t in self._tensors if t.is_input)
        with self._mem.scope():
            if x.ndim:
                self._use_profile_for(int(x.shape[0]))
            buf = self._inputs.get(spec.name)
            if buf is None or tuple(buf.shape) != x.shape:
                self._inputs, self._outputs, self._graph = {}, {}, None
                buf = self._alloc(x.shape, spec.dtype)
                buf.copy_(torch.from_numpy(x))
                inputs = {spec.name: buf}
                outputs = bind_tensors(self.context, self._tensors, inputs, self._alloc, self.engine)
                self._inputs, self._outputs = inputs, outputs
            else:
                buf.copy_(torch.from_numpy(x))
        if self.use_cuda_graph and self._graph is None:
            self._capture()

    def _capture(self) -> None:
        import torch

        stream = self._mem.stream
        enqueue(self.context, stream.cuda_stream)  # warm-up: TensorRT finishes lazy set-up outside capture
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            enqueue(self.context, stream.cuda_stream)
        self._graph = graph

    def run_prepared(self) -> None:
        if not self._inputs:
            raise EngineRunError("nothing is prepared: call prepare(feed) with a shape the engine accepts first")
        if self._graph is not None:
            with self._mem.scope():
                self._graph.replay()
        else:
            enqueue(self.context, self._mem.handle)

    def synchronize(self) -> None:
        self._mem.synchronize()

    def infer(self, feed: Feed | np.ndarray) -> dict[str, np.ndarray]:
        import torch

        self.prepare(feed)
        self.run_prepared()
        self.synchronize()
        # a copy: on the host (emulator) .cpu() would return the output buffer itself, which the next run overwrites
        return {n: o.to("cpu", torch.float32, copy=True).numpy() for n, o in self._outputs.items()}

    def outputs(self) -> dict[str, Any]:
        """The output buffers of the last run (device tensors; host tensors under the emulator)."""
        return dict(self._outputs)

    # -- reporting

    def io_bytes(self) -> int:
        """Bytes of the I/O buffers this runner allocated for the current shape."""
        return sum(int(t.numel()) * int(t.element_size()) for t in (*self._inputs.values(), *self._outputs.values()))

    def engine_bytes(self) -> int:
        """What TensorRT holds itself for this engine: activations (device memory) and weights."""
        total = 0
        if self.engine is not None:
            if hasattr(self.engine, "device_memory_size_v2"):
                total += int(self.engine.device_memory_size_v2)
            if hasattr(self.engine, "get_engine_stat") and hasattr(self.trt, "EngineStat"):
                total += int(self.engine.get_engine_stat(self.trt.EngineStat.TOTAL_WEIGHTS_SIZE))
        return total

    def peak_memory_bytes(self) -> int | None:
        """Device memory: torch's peak (I/O buffers) plus what TensorRT holds itself. None under the emulator with
        host memory: nothing there is device memory, and the process RSS (what the bench then takes) is the figure."""
        if not self._mem.cuda:
            return None
        import torch

        return int(torch.cuda.max_memory_allocated()) + self.engine_bytes()

    def describe(self) -> dict:
        out = {"name": self.name, "device": self.device, "engine": str(self.path),
               "tensorrt": str(self.trt.__version__), "precision": self.metadata.get("precision"),
               "profile": self.metadata.get("profile"), "profiles": len(self._profiles),
               "cuda_graph": self.use_cuda_graph, "emulated": self.emulated}
        if self.cuda_graph_skipped:
            out["cuda_graph_skipped"] = self.cuda_graph_skipped
        if self.emulated:
            out["memory"] = "device" if self._mem.cuda else "host"
            if os.environ.get("TRT_EMULATOR_PERTURB"):
                out["perturbed"] = os.environ["TRT_EMULATOR_PERTURB"]  # the test-only switch: not the ONNX's numbers
        return out
