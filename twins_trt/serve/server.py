"""One artifact on a real Triton server: the options, the runner choice, the model repository, the lifecycle.

PyTriton ships `tritonserver` with its Python backend (no ONNX Runtime, OpenVINO or TensorRT backend), so
the served model is a Python-backend model (`python_model`) that runs one of our runners. Its config.pbtxt
is written by `triton.config_text` with `triton.batching`, the same function and the same batching choices
as the repository twins-triton writes for that artifact. PyTriton starts the server on that repository
(HTTP, gRPC and metrics on loopback by default; HTTP behind `http_guard`) and stops it: SIGINT, then
Triton waits up to `drain_s` for requests in flight.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sysconfig
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from twins_trt.artifacts.files import ensure_dir, write_bytes_atomic
from twins_trt.backends import BACKENDS, Backend, Capabilities, skip_reason
from twins_trt.errors import BackendUnavailableError, ServeError, TritonConfigError
from twins_trt.serve import python_model as pm
from twins_trt.serve.http_guard import HttpGuard
from twins_trt.triton import DEFAULT_QUEUE_DELAY_US, Batching, ModelSpec, batching, config_text, parse_config, spec_from_artifact

log = logging.getLogger(__name__)

RUNTIMES = ("openvino", "ort-cpu", "trt")  # --backend: the runtime; the precision is the artifact's
MODEL_PY = "from twins_trt.serve.python_model import TritonPythonModel  # noqa: F401  (twins-serve)\n"


@dataclass(frozen=True)
class ServeOptions:
    artifact: Path
    backend: str | None = None  # one of RUNTIMES; None: TensorRT for a plan, else OpenVINO (ONNX Runtime without it)
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    dynamic_batching: bool = True
    threads: int | None = None
    drain_s: int = 30  # Triton's exit timeout: how long a stop waits for requests in flight
    workdir: Path | None = None  # the repository, the server's workspace and its log; None: a temporary folder
    model_name: str | None = None

    def with_free_ports(self) -> ServeOptions:
        http, grpc, metrics = free_ports(3, self.host)
        return replace(self, http_port=http, grpc_port=grpc, metrics_port=metrics)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports nothing listens on now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def choose_backend(spec: ModelSpec, wanted: str | None, caps: Capabilities | None = None) -> Backend:
    """The runner for an artifact: TensorRT (or its emulator) for a plan; OpenVINO or ONNX Runtime for an ONNX."""
    precision = spec.precision or "fp32"
    if wanted is not None and wanted not in RUNTIMES:
        raise ValueError(f"unknown serving backend {wanted!r}; expected one of {', '.join(RUNTIMES)} (the precision "
                         "comes from the artifact)")
    caps = caps or Capabilities.detect()
    if spec.kind == "plan":
        if wanted not in (None, "trt"):
            raise ValueError(f"{spec.source} is a TensorRT plan: it is served by the trt backend, not {wanted}")
        name = f"trt-{precision}"
    else:
        if wanted == "trt":
            raise ValueError(f"{spec.source} is an ONNX file; serve its TensorRT plan (twins-build) for the trt "
                             "backend, or choose openvino or ort-cpu")
        runtime = wanted or ("openvino" if caps.openvino_ok else "ort-cpu")
        name = runtime if precision == "fp32" else f"{runtime}-{precision}"
    if name not in BACKENDS:
        raise ValueError(f"no backend {name!r} for {spec.source} (precision {precision})")
    b = BACKENDS[name]
    why = skip_reason(b, caps, "cpu")
    if why:
        raise BackendUnavailableError(f"cannot serve {spec.source.name} on {name}: {why}")
    return b


def signature(spec: ModelSpec, batch: Batching) -> list[str]:
    """One line per input and output: name, Triton type, shape with the batch as -1 when Triton batches."""
    def line(kind: str, t) -> str:
        dims = list(t.shape[1:]) if batch.max_batch_size else list(t.shape)
        shape = [-1, *dims] if batch.max_batch_size else dims
        return f"{kind:6s} {t.name}: {t.data_type.removeprefix('TYPE_')} {shape}"

    lines = [line("input", t) for t in spec.inputs] + [line("output", t) for t in spec.outputs]
    if batch.max_batch_size:
        lines.append(f"batch  1..{batch.max_batch_size} per request; dynamic batching "
                     + (f"on (preferred {list(batch.preferred)}, queue delay {batch.queue_delay_us} us)"
                        if batch.dynamic else "off"))
    else:
        lines.append("batch  static (the batch is part of the shape); Triton does not batch")
    return lines


class Server:
    """`with Server(opts) as s:` a ready Triton server on `opts`' ports serving the artifact; stopped on exit."""

    def __init__(self, opts: ServeOptions, caps: Capabilities | None = None):
        self.opts = opts
        self.spec = spec_from_artifact(opts.artifact)
        if len(self.spec.inputs) != 1:
            raise TritonConfigError(f"{opts.artifact}: twins-serve serves one-input models; this one has "
                                    f"{[t.name for t in self.spec.inputs]}")
        self.backend = choose_backend(self.spec, opts.backend, caps)
        self.batching = batching(self.spec, opts.queue_delay_us, opts.dynamic_batching)
        self.name = opts.model_name or self.spec.default_name()
        self._triton = None
        self._guard: HttpGuard | None = None
        self._triton_http_port: int | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.workdir: Path | None = None

    # ------------------------------------------------------------------------------------------ the repository

    def parameters(self) -> dict[str, str]:
        """What the Python-backend model needs to build its runner (config.pbtxt parameters)."""
        t = self.spec.inputs[0]
        sample = list(t.shape[1:] if self.batching.max_batch_size else t.shape)
        return {pm.P_ARTIFACT: str(Path(self.opts.artifact).resolve()), pm.P_BACKEND: self.backend.name,
                pm.P_THREADS: str(self.opts.threads or ""), pm.P_INPUT: t.name, pm.P_SAMPLE_SHAPE: json.dumps(sample)}

    def config_text(self) -> str:
        """The config.pbtxt served: twins-triton's config for the artifact, run by the Python backend."""
        text = config_text(self.spec, self.name, 1, "cpu", batch=self.batching, backend="python",
                           parameters=self.parameters())
        parse_config(text)  # Triton's own schema, when tritonclient is installed
        return text

    def write_repository(self, folder: Path) -> Path:
        model_dir = folder / self.name
        write_bytes_atomic(model_dir / "config.pbtxt", self.config_text().encode())
        write_bytes_atomic(model_dir / "1" / "model.py", MODEL_PY.encode())
        return model_dir

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def endpoints(self) -> dict[str, str]:
        o = self.opts
        return {"http": f"http://{o.host}:{o.http_port}", "grpc": f"{o.host}:{o.grpc_port}",
                "metrics": f"http://{o.host}:{o.metrics_port}/metrics",
                "infer": f"http://{o.host}:{o.http_port}/v2/models/{self.name}/infer"}

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def start(self) -> Server:
        from pytriton.triton import Triton, TritonConfig

        if self.opts.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="twins-serve-")
        self.workdir = ensure_dir(self.opts.workdir or self._tmp.name)
        repo = ensure_dir(self.workdir / "repository")
        self.write_repository(repo)
        _python_libdir_on_library_path()
        o = self.opts
        self._triton_http_port = free_ports(1, o.host)[0]  # Triton's own HTTP, behind the guard on o.http_port
        cfg = TritonConfig(model_repository=repo, http_address=o.host, http_port=self._triton_http_port,
                           grpc_address=o.host,
                           grpc_port=o.grpc_port, metrics_address=o.host, metrics_port=o.metrics_port,
                           allow_metrics=True, allow_gpu_metrics=False, exit_timeout_secs=o.drain_s,
                           log_file=self.log_path, log_verbose=0, strict_readiness=True)
        started = time.perf_counter()
        self._triton = Triton(config=cfg, workspace=self.workdir / "pytriton")
        try:
            self._triton.run()
            if not self._triton.is_alive() or not self._model_ready(timeout_s=30):
                raise ServeError(f"Triton did not start serving {self.name}: {self.log_problem()}")
            self._guard = HttpGuard(o.host, o.http_port, self._triton_http_port).start()
        except ServeError:
            self.stop()
            raise
        except Exception as e:
            problem = f"{e}" if isinstance(e, OSError) else self.log_problem()
            self.stop()
            raise ServeError(f"Triton did not start serving {self.name} ({type(e).__name__}): {problem}") from e
        except BaseException:  # Ctrl-C while the model loads: nothing left running
            self.stop()
            raise
        log.info("serving %s in %.1f s", self.name, time.perf_counter() - started)
        return self

    def _model_ready(self, timeout_s: float) -> bool:
        import tritonclient.http as http

        deadline = time.monotonic() + timeout_s
        with contextlib.closing(http.InferenceServerClient(f"{self.opts.host}:{self._triton_http_port}")) as c:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    if c.is_model_ready(self.name):
                        return True
                if not self._triton.is_alive():
                    return False
                time.sleep(0.2)
        return False

    def log_problem(self) -> str:
        """The server log's last error lines (why a model did not load), or where the log is."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "the server wrote no log"
        errors = [ln.split("] ", 1)[-1].strip() for ln in lines if ln[:1] == "E" or "failed to load" in ln]
        return " | ".join(errors[-3:])[:1200] if errors else f"see {self.log_path}"

    def is_alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def wait(self, poll_s: float = 1.0) -> None:
        """Block while the server is up (Ctrl-C raises KeyboardInterrupt here); returns when it died."""
        while self.is_alive():
            time.sleep(poll_s)

    def stop(self) -> None:
        """HTTP requests in flight are answered and the HTTP endpoint closes; then SIGINT to Triton, which waits
        up to `drain_s` for gRPC requests in flight; then the workspace goes."""
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _python_libdir_on_library_path() -> None:
    """The Python backend's stub must load this interpreter's libpython, not an older one the system has."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])
