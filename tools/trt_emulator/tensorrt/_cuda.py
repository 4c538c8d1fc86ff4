"""Device memory for the TensorRT emulator where CUDA is present (TRT_EMULATOR_MEMORY=device, or auto on a GPU).

I/O addresses are then CUDA device pointers and stream handles CUDA streams, as with TensorRT. An enqueue puts
three things on the caller's stream, where TensorRT would put its kernels:
  1. cudaMemcpyAsync of each input, device -> pinned host staging;
  2. cudaLaunchHostFunc: ONNX Runtime (CPU) reads the staged inputs and writes the staged outputs;
  3. cudaMemcpyAsync of each output, pinned host staging -> device.
So execute_async_v3 returns at once, the outputs are ready when the stream is, and an enqueue captured into a
CUDA graph replays for real (the host function is a host node of the graph; the copies are memcpy nodes).

The CUDA runtime is the one torch's wheels bring (libcudart, found among the libraries torch loaded, else in its
nvidia/*/lib folders), called through ctypes; pinned staging buffers are torch's. Nothing here is compiled.
Staging is kept per binding (tensor addresses and shapes), so a captured graph's host node always finds it.
ONNX Runtime runs on a CUDA host-callback thread, which takes the GIL: code that blocks on the stream while
holding the GIL would deadlock (torch's synchronize, copies and graph replay release it).
"""

from __future__ import annotations

import ctypes
import gc
import itertools
from pathlib import Path

import numpy as np

_MEMCPY_DEFAULT = 4  # cudaMemcpyDefault: the direction follows from the pointers (unified addressing)
_DEVICE_MEMORY = (2, 3)  # cudaMemoryTypeDevice, cudaMemoryTypeManaged
_HOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # cudaHostFn_t
_jobs: dict[int, _Job] = {}
_ids = itertools.count(1)
_lib = None


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # no torch, or a torch that cannot talk to a driver
        return False


def runtime_candidates() -> list[str]:
    """Paths of libcudart: the one this process has loaded first, then those torch's wheels ship."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            found += sorted({line.split()[-1] for line in f if "/libcudart.so" in line})
    except OSError:
        pass
    try:
        import torch

        nvidia = Path(torch.__file__).resolve().parent.parent / "nvidia"
        found += sorted(str(p) for p in nvidia.glob("*/lib/libcudart.so*"))
        found += sorted(str(p) for p in nvidia.glob("*/*/lib/libcudart.so*"))
    except ImportError:
        pass
    return list(dict.fromkeys(found))


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """The argument and result types of the runtime functions the emulator calls (AttributeError if one is missing)."""
    vp, c_int = ctypes.c_void_p, ctypes.c_int
    for name, args in (("cudaMemcpyAsync", [vp, vp, ctypes.c_size_t, c_int, vp]),
                       ("cudaLaunchHostFunc", [vp, _HOST_FN, vp]),
                       ("cudaPointerGetAttributes", [vp, vp]),
                       ("cudaGetLastError", [])):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, c_int
    lib.cudaGetErrorString.argtypes, lib.cudaGetErrorString.restype = [c_int], ctypes.c_char_p
    return lib


def libcudart() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        import torch

        torch.cuda.init()  # loads torch's libcudart, so the first candidate is the very library torch uses
        for path in runtime_candidates():
            try:
                _lib = declare(ctypes.CDLL(path))
                break
            except (OSError, AttributeError):
                continue
        else:
            raise RuntimeError("the CUDA runtime (libcudart) torch uses could not be found")
    return _lib


class _Job:
    """One binding's staging buffers and its computation, run by the host function on the stream."""

    def __init__(self, io, compute, logger):
        import torch

        self.id = next(_ids)
        self.inputs, self.outputs = [], []
        for name, is_input, addr, shape, dtype in io:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            host = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
            (self.inputs if is_input else self.outputs).append((name, addr, host, nbytes, shape, dtype))
        self.compute, self.logger, self.error = compute, logger, None
        _jobs[self.id] = self

    def run(self) -> None:
        # no cyclic GC on CUDA's callback thread: collecting a torch CUDA object here could call into CUDA, which a
        # host function must not do
        collecting = gc.isenabled()
        gc.disable()
        try:
            feed = {n: host.numpy()[:nbytes].view(dtype).reshape(shape)
                    for n, _, host, nbytes, shape, dtype in self.inputs}
            for (_, _, host, nbytes, _, _), value in zip(self.outputs, self.compute(feed)):
                host.numpy()[:nbytes] = value.reshape(-1).view(np.uint8)
        except Exception as e:  # nothing can propagate out of a host function: the next enqueue reports it
            self.error = f"the emulated engine failed on the stream ({type(e).__name__}: {e})"
            self.logger.log(1, f"IExecutionContext::enqueueV3: {self.error}")
        finally:
            if collecting:
                gc.enable()


def _run_job(user_data) -> None:
    job = _jobs.get(int(user_data or 0))
    if job is not None:
        job.run()


_CALLBACK = _HOST_FN(_run_job)  # one callback for the process: graphs may replay it at any time


class DeviceMemory:
    kind = "device"

    def __init__(self, logger):
        if not cuda_available():
            raise RuntimeError("TRT_EMULATOR_MEMORY=device needs a CUDA GPU, and torch sees none here "
                               "(use TRT_EMULATOR_MEMORY=host)")
        self._cuda = libcudart()
        self._logger = logger
        self._jobs: dict[tuple, _Job] = {}
        self._device_addresses: set[int] = set()

    def stream_problem(self, stream: int) -> str | None:
        return None  # CUDA itself reports a stream that does not exist, at the first copy

    def _failed(self, rc: int, what: str) -> str | None:
        if rc == 0:
            return None
        self._cuda.cudaGetLastError()  # clear it, as TensorRT does after reporting
        return f"Cuda Runtime ({self._cuda.cudaGetErrorString(rc).decode()}) in {what}"

    def _not_device(self, name: str, addr: int) -> str | None:
        if addr in self._device_addresses:
            return None
        attrs = (ctypes.c_byte * 256)()  # cudaPointerAttributes; its first field is the cudaMemoryType (an int)
        problem = self._failed(self._cuda.cudaPointerGetAttributes(attrs, addr), f"cudaPointerGetAttributes({name})")
        if problem:
            return problem
        kind = ctypes.c_int.from_buffer(attrs).value
        if kind not in _DEVICE_MEMORY:
            return (f"the address {addr:#x} of {name!r} is not device memory (cudaMemoryType {kind}); TensorRT reads "
                    "and writes I/O tensors on the GPU")
        self._device_addresses.add(addr)
        return None

    def enqueue(self, stream: int, io, compute) -> str | None:
        key = tuple((n, is_input, addr, shape, dtype.str) for n, is_input, addr, shape, dtype in io)
        job = self._jobs.get(key)
        if job is None:
            for name, _, addr, _, _ in io:
                problem = self._not_device(name, addr)
                if problem:
                    return problem
            job = self._jobs[key] = _Job(io, compute, self._logger)
        if job.error:
            return job.error
        copy = self._cuda.cudaMemcpyAsync
        for name, addr, host, nbytes, _, _ in job.inputs:
            problem = self._failed(copy(host.data_ptr(), addr, nbytes, _MEMCPY_DEFAULT, stream), f"copying {name!r}")
            if problem:
                return problem
        problem = self._failed(self._cuda.cudaLaunchHostFunc(stream, _CALLBACK, job.id), "cudaLaunchHostFunc")
        if problem:
            return problem
        for name, addr, host, nbytes, _, _ in job.outputs:
            problem = self._failed(copy(addr, host.data_ptr(), nbytes, _MEMCPY_DEFAULT, stream), f"copying {name!r}")
            if problem:
                return problem
        return None
