"""A TensorRT emulator: the part of the `tensorrt` Python API twins-trt uses, runnable on a CPU.

    PYTHONPATH=tools/trt_emulator twins-build export/svt_s.fp16.onnx     # `import tensorrt` loads this

Why: no machine this project gets has TensorRT's runtime libraries, so the build -> run -> verify path
would otherwise never execute. This module is a fake that earns trust (fakeredis style):
- the real signatures: every class and method here carries the parameter names and defaults of the
  real 10.x/11.x bindings, checked in CI against them (tests/trt/api/test_emulator_signatures.py);
- TensorRT's documented refusals: parser errors on a bad ONNX; every dynamic input needs a profile
  with min <= opt <= max of the input's rank; `set_input_shape` returns False outside the active
  profile; `get_tensor_shape` shows -1 until the input shapes are set; `execute_async_v3` fails
  unless every I/O tensor has an address and every input a shape; `deserialize_cuda_engine` returns
  None, with a logged error, for a plan from another TensorRT version or device, or with a malformed
  header; strongly typed networks refuse precision builder flags (STRONGLY_TYPED on 10; always on 11,
  which has no FP16/INT8 flags at all), and on 10 a weakly typed network builds with a deprecation
  warning, as 10.x does; `set_tensor_address(name, 0)` resets the tensor (NvInferRuntime.h), an address
  not 256-byte aligned is refused, addresses and streams are size_t (negative: TypeError), and host
  memory has only the default stream; RuntimeError where the bindings raise it (pyCore.cpp): a failed
  `set_optimization_profile_async`, `IOptimizationProfile.set_shape` with inconsistent shapes,
  `set_input_shape` with more than 8 dimensions; a timing cache holds one entry per layer built, so a
  build logs (INFO) how many layers a loaded cache already had;
- real numbers: the serialized "engine" is a header (version, device, profiles, I/O) plus the ONNX;
  `execute_async_v3` reads the inputs from the bound addresses, runs the graph on ONNX Runtime's
  CPU provider and writes the outputs to the bound output addresses.

Environment: TRT_EMULATOR_VERSION=10|11 (or a full version such as 11.4.0.106; default 11) picks the API
emulated; TRT_EMULATOR_DEVICE names the emulated device (default "TensorRT emulator (host CPU)");
TRT_EMULATOR_THREADS sets ONNX Runtime's intra-op threads (default: its own);
TRT_EMULATOR_COMPUTE_CAPABILITY (MAJOR.MINOR, default 0.0: not a GPU) is the emulated device's compute
capability: below 8.9 the builder refuses a network with FP8 Q/DQ, as TensorRT does on GPUs without FP8;
TRT_EMULATOR_MEMORY=host|device|auto (default auto) says where I/O addresses point: "host" memory
(the addresses are read and written in place, on the calling thread), or CUDA "device" memory, where the
emulator copies through the CUDA runtime torch brings, on the caller's stream (_cuda.py: the copies and
the computation are stream work, so CUDA-graph capture works); auto is device when torch sees a GPU;
TRT_EMULATOR_PERTURB (test-only) makes engines deserialized while it is set compute something else:
`<layer name>` perturbs that layer's output, `qdq-scale[:<DequantizeLinear name>]` drops a Q/DQ scale
(sets it to 1), so checks downstream (twins-verify) are seen to fail; an unknown name fails the load.

Not TensorRT: there is no kernel selection and no fusion here, and the GPU, where one is used, only holds
the I/O. Figures measured under it are labelled *emulated* by twins-trt and never reported as TensorRT's.
`__emulator__` (True) is the one name the real module lacks; it is how twins-trt knows.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

_FULL = {"10": "10.16.1.11", "11": "11.4.0.106"}
_requested = os.environ.get("TRT_EMULATOR_VERSION", "11").strip()
_base = _FULL.get(_requested, _requested)
if _base.split(".")[0] not in _FULL:
    raise ImportError(f"TRT_EMULATOR_VERSION must be 10 or 11 (or a full 10.x/11.x version), got {_requested!r}")

__version__ = f"{_base}+emulator"
__emulator__ = True
_MAJOR = int(_base.split(".")[0])
_MAGIC = b"TWINS-TRT-EMULATED-PLAN\n"
_CACHE_MAGIC = b"TWINS-TRT-EMULATED-TIMING-CACHE\n"
DEFAULT_DEVICE = "TensorRT emulator (host CPU)"


FP8_MIN_COMPUTE_CAPABILITY = (8, 9)  # Ada, Hopper, Blackwell: TensorRT builds FP8 Q/DQ networks only there
_FP8_ONNX_TYPES = (17, 18, 19, 20)  # onnx.TensorProto FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ


def emulated_device() -> dict[str, str]:
    """The device plans are built for and loaded on: name and compute capability (TRT_EMULATOR_COMPUTE_CAPABILITY,
    MAJOR.MINOR; default 0.0: not a GPU)."""
    cc = os.environ.get("TRT_EMULATOR_COMPUTE_CAPABILITY", "0.0").strip() or "0.0"
    major, dot, minor = cc.partition(".")
    if not (major.isdigit() and dot and minor.isdigit()):
        raise ValueError(f"TRT_EMULATOR_COMPUTE_CAPABILITY must be MAJOR.MINOR (e.g. 9.0 for Hopper), got {cc!r}")
    return {"name": os.environ.get("TRT_EMULATOR_DEVICE", DEFAULT_DEVICE), "compute_capability": f"{int(major)}.{minor}"}


def _has_fp8_qdq(model) -> bool:
    """A QuantizeLinear/DequantizeLinear carries an FP8 type: its zero point's, its `output_dtype`, or the type of
    the quantized initializer a DequantizeLinear reads (how ModelOpt's FP8 PTQ writes them)."""
    types = {i.name: i.data_type for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(a.name == "output_dtype" and a.i in _FP8_ONNX_TYPES for a in n.attribute):
            return True
        if len(n.input) > 2 and types.get(n.input[2]) in _FP8_ONNX_TYPES:
            return True
        if n.op_type == "DequantizeLinear" and types.get(n.input[0]) in _FP8_ONNX_TYPES:
            return True
    return False


# ---------------------------------------------------------------------------------------------- enums


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8
    UNSUPPORTED_NODE_ATTR = 9
    UNSUPPORTED_NODE_INPUT = 10
    UNSUPPORTED_NODE_DATATYPE = 11


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    ACTIVATION = 3
    POOLING = 4
    SOFTMAX = 7
    CONCATENATION = 9
    ELEMENTWISE = 10
    UNARY = 12
    PADDING = 13
    SHUFFLE = 14
    REDUCE = 15
    GATHER = 17
    MATRIX_MULTIPLY = 18
    CONSTANT = 20
    IDENTITY = 21
    CAST = 22
    SLICE = 24
    SHAPE = 25
    QUANTIZE = 35
    DEQUANTIZE = 36
    NORMALIZATION = 45
    PLUGIN_V3 = 46


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class EngineStat(enum.IntEnum):
    TOTAL_WEIGHTS_SIZE = 0


class ExecutionContextAllocationStrategy(enum.IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


if _MAJOR == 10:
    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    class BuilderFlag(enum.IntEnum):  # FP16/INT8/BF16 exist on 10 (deprecated) and are refused on strongly typed networks
        FP16 = 0
        BF16 = 1
        INT8 = 2
        DEBUG = 3
        GPU_FALLBACK = 4
        REFIT = 5
        DISABLE_TIMING_CACHE = 6
        TF32 = 8
        OBEY_PRECISION_CONSTRAINTS = 12
        PREFER_PRECISION_CONSTRAINTS = 13
else:
    class NetworkDefinitionCreationFlag(enum.IntEnum):  # kept on 11, and ignored: every network is strongly typed
        STRONGLY_TYPED = 1

    class BuilderFlag(enum.IntEnum):
        DEBUG = 3
        GPU_FALLBACK = 4
        REFIT = 5
        DISABLE_TIMING_CACHE = 6
        TF32 = 8

_MAX_DIMS = 8  # Dims::MAX_DIMS
ADDRESS_ALIGNMENT = 256  # IExecutionContext::setTensorAddress: "The pointer must have at least 256-byte alignment"
_PRECISION_FLAGS = {"FP16", "BF16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}
_DEFAULT_FLAGS = {"TF32"}  # TensorRT enables TF32 by default


# ---------------------------------------------------------------------------------------------- logging


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def log(self, severity, msg):
        raise NotImplementedError


class Logger(ILogger):
    """Prints `[TRT] [E] ...` lines to stderr at or above `min_severity`, as the real trt.Logger does."""

    _TAGS = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        self.min_severity = ILogger.Severity(min_severity)

    def log(self, severity, msg):
        if int(severity) <= int(self.min_severity):
            print(f"[TRT] [{self._TAGS[int(severity)]}] {msg}", file=sys.stderr)


def _error(logger, msg: str) -> None:
    logger.log(ILogger.Severity.ERROR, msg)


def init_libnvinfer_plugins(logger, namespace):
    """TensorRT's standard plugins: none are emulated, so there is nothing to register; True as TensorRT returns."""
    _check_type(namespace, str, "init_libnvinfer_plugins namespace")
    return True


# ---------------------------------------------------------------------------------------------- basic types


class Dims(tuple):
    """A shape; -1 marks a dimension not known yet."""

    def __new__(cls, shape=()):
        return super().__new__(cls, (int(d) for d in shape))

    def __repr__(self) -> str:
        return f"({', '.join(map(str, self))})"


class IHostMemory(bytes):
    """Serialized data (an engine, a timing cache): the buffer protocol, `nbytes` and `dtype`."""

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self):
        return DataType.UINT8


def _to_dims(value, what: str) -> Dims:
    if not isinstance(value, (tuple, list, Dims)) or not all(hasattr(v, "__index__") for v in value):
        raise TypeError(f"{what}: incompatible function arguments; expected Dims (a sequence of ints), got {value!r}")
    return Dims(value)


def _check_size_t(value, what: str) -> int:
    """An address or a stream handle: pybind11 converts to size_t, so a negative int is refused like a wrong type."""
    _check_type(value, int, what)
    if value < 0:
        raise TypeError(f"{what}: incompatible function arguments; got {value!r}, which is not a size_t")
    return value


def _check_type(value, types, what: str):
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                                                   else (types,))):
        raise TypeError(f"{what}: incompatible function arguments; got {type(value).__name__} {value!r}")
    return value


# ONNX TensorProto element type -> (DataType, numpy dtype)
_ONNX_TYPES = {1: (DataType.FLOAT, np.float32), 10: (DataType.HALF, np.float16), 3: (DataType.INT8, np.int8),
               2: (DataType.UINT8, np.uint8), 6: (DataType.INT32, np.int32), 7: (DataType.INT64, np.int64),
               9: (DataType.BOOL, np.bool_)}
_NUMPY = {dt: np.dtype(npt) for dt, npt in _ONNX_TYPES.values()}


class ITensor:
    def __init__(self, name: str, shape: Dims, dtype: DataType, is_input: bool):
        self._name, self._shape, self._dtype, self._is_input = name, shape, dtype, is_input

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> Dims:
        return self._shape

    @property
    def dtype(self) -> DataType:
        return self._dtype

    @property
    def is_network_input(self) -> bool:
        return self._is_input

    @property
    def is_network_output(self) -> bool:
        return not self._is_input


# ---------------------------------------------------------------------------------------------- network and parser

# ONNX op -> the TensorRT layer its parser makes (approximately: one layer per node, no fusion, for tools such
# as ModelOpt that walk the network's layers); an op outside the default domain is a plugin.
_LAYER_OF_OP = {"Conv": "CONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "Softmax": "SOFTMAX",
                "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE",
                "Pow": "ELEMENTWISE", "Reshape": "SHUFFLE", "Transpose": "SHUFFLE", "Flatten": "SHUFFLE",
                "Concat": "CONCATENATION", "Split": "SLICE", "Slice": "SLICE", "Gather": "GATHER",
                "Cast": "CAST", "Constant": "CONSTANT", "Identity": "IDENTITY", "Shape": "SHAPE",
                "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "Pad": "PADDING",
                "LayerNormalization": "NORMALIZATION", "GlobalAveragePool": "POOLING", "AveragePool": "POOLING",
                "MaxPool": "POOLING", "ReduceMean": "REDUCE", "ReduceSum": "REDUCE", "Relu": "ACTIVATION",
                "Gelu": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION"}


class ILayer:
    def __init__(self, name: str, type_: LayerType, inputs: list[ITensor], outputs: list[ITensor]):
        self._name, self._type, self._inputs, self._outputs = name, type_, inputs, outputs

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> LayerType:
        return self._type

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index):
        return self._inputs[_check_type(index, int, "ILayer.get_input")]

    def get_output(self, index):
        return self._outputs[_check_type(index, int, "ILayer.get_output")]


def _layers(model) -> list[ILayer]:
    """One layer per node, its tensors typed and shaped by ONNX shape inference (-1 where unknown)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes are a courtesy here; the parse already succeeded
        inferred = model
    g = inferred.graph
    infos = {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}
    inits = {i.name: i for i in g.initializer}
    tensors: dict[str, ITensor] = {}

    def tensor(name: str) -> ITensor:
        if name not in tensors:
            if name in infos:
                t = _tensor(infos[name], False)
            elif name in inits:
                init = inits[name]
                t = ITensor(name, Dims(init.dims), _ONNX_TYPES.get(init.data_type, (DataType.FLOAT,))[0], False)
            else:
                t = ITensor(name, Dims(), DataType.FLOAT, False)
            tensors[name] = t
        return tensors[name]

    out = []
    for i, n in enumerate(model.graph.node):
        kind = "PLUGIN_V3" if n.domain not in ("", "ai.onnx") else _LAYER_OF_OP.get(n.op_type, "UNARY")
        out.append(ILayer(n.name or f"node_{i}", LayerType[kind], [tensor(x) for x in n.input if x],
                          [tensor(x) for x in n.output if x]))
    return out


class INetworkDefinition:
    def __init__(self, flags: int):
        self._flags = flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None
        self._layers: list[ILayer] = []
        self._weights_bytes = 0
        self._fp8 = False  # FP8 Q/DQ in the parsed graph (built only at compute capability >= 8.9)

    @property
    def flags(self) -> int:
        return self._flags

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index):
        return self._layers[_check_type(index, int, "INetworkDefinition.get_layer")]

    def get_input(self, index):
        return self._inputs[_check_type(index, int, "INetworkDefinition.get_input")]

    def get_output(self, index):
        return self._outputs[_check_type(index, int, "INetworkDefinition.get_output")]

    @property
    def _strongly_typed(self) -> bool:
        return _MAJOR >= 11 or bool(self._flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))


class ParserError:
    def __init__(self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "", node_operator: str = ""):
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, node_name, node_operator

    def code(self):
        return self._code

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


class OnnxParser:
    """Parses by loading the model with `onnx`, checking it, refusing every node TensorRT's ONNX parser refuses
    (onnx-tensorrt's 10.x operator table, through `twins_trt.export.trt_support`: one ParserError per node, with
    the ErrorCode TensorRT gives), and only then opening it in ONNX Runtime (CPU), which computes."""

    def __init__(self, network, logger):
        self._network = _check_type(network, INetworkDefinition, "OnnxParser.__init__ network")
        self._logger = _check_type(logger, ILogger, "OnnxParser.__init__ logger")
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index):
        return self._errors[_check_type(index, int, "OnnxParser.get_error")]

    def clear_errors(self):
        self._errors = []

    def parse_from_file(self, model):
        _check_type(model, str, "OnnxParser.parse_from_file model")
        try:
            data = Path(model).read_bytes()
        except OSError as e:
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"cannot read {model}: {e.strerror or e}")
        return self._parse(data, str(Path(model).parent))

    def parse(self, model, path=None):
        return self._parse(bytes(memoryview(model)), str(Path(path).parent) if path else None)

    def _fail(self, code: ErrorCode, desc: str, node: int = -1, name: str = "", op: str = "") -> bool:
        self._errors.append(ParserError(code, desc, node, name, op))
        _error(self._logger, f"ModelImporter: {desc}")
        return False

    def _table_accepts(self, model) -> bool:
        """TensorRT's operator table (docs/operators.md, 10.x; applied on 11 too): every refused node is an error."""
        from twins_trt.export.trt_support import check_model

        report = check_model(model)
        for issue in report.issues:
            self._fail(ErrorCode[issue.code], f"{issue.line()} (by {report.table}'s operator table)", issue.index,
                       issue.name, issue.op)
        return report.ok

    def _parse(self, data: bytes, base_dir: str | None) -> bool:
        import onnx

        try:
            model = onnx.load_from_string(data)
            if base_dir is not None:
                from onnx.external_data_helper import load_external_data_for_model

                if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
                    load_external_data_for_model(model, base_dir)
        except Exception as e:  # DecodeError and friends
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED, f"failed to parse the ONNX model ({e})")
        try:
            onnx.checker.check_model(model)
        except Exception as e:
            return self._fail(ErrorCode.INVALID_GRAPH, f"invalid ONNX graph: {str(e).splitlines()[0]}")
        if not self._table_accepts(model):
            return False
        data = model.SerializeToString()
        try:
            _session(data)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            idx, node = _node_named_in(model, msg)
            return self._fail(ErrorCode.UNSUPPORTED_NODE, msg, idx, node.name if node else "",
                              node.op_type if node else "")
        net = self._network
        inits = {i.name for i in model.graph.initializer}
        net._inputs = [_tensor(vi, True) for vi in model.graph.input if vi.name not in inits]
        net._outputs = [_tensor(vi, False) for vi in model.graph.output]
        bad = [t for t in net._inputs + net._outputs if t.dtype is None]
        if bad:
            return self._fail(ErrorCode.UNSUPPORTED_NODE_DATATYPE, f"unsupported I/O data type for {bad[0].name!r}")
        net._onnx = data
        net._layers = _layers(model)
        net._fp8 = _has_fp8_qdq(model)
        net._weights_bytes = sum(len(i.raw_data) for i in model.graph.initializer)
        return True


def _tensor(vi, is_input: bool) -> ITensor:
    t = vi.type.tensor_type
    dims = Dims(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
    dtype = _ONNX_TYPES.get(t.elem_type, (None, None))[0]
    return ITensor(vi.name, dims, dtype, is_input)


def _node_named_in(model, msg: str):
    for i, n in enumerate(model.graph.node):
        if n.name and n.name in msg:
            return i, n
    for i, n in enumerate(model.graph.node):  # ONNX Runtime often names the op type, not the node
        if f"{n.domain}:{n.op_type}" in msg or f" {n.op_type}(" in msg or f"'{n.op_type}'" in msg:
            return i, n
    return -1, None


def _session(onnx_bytes: bytes):
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if _has_fp8_qdq(onnx.load_from_string(onnx_bytes)):  # ONNX Runtime's default level fuses a Q/DQ MatMul into
        # MatMulIntegerToFloat, which has no FP8 type, and refuses the session: compute FP8 graphs at the basic level
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    threads = int(os.environ.get("TRT_EMULATOR_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------- builder


class IOptimizationProfile:
    def __init__(self):
        self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input, min, opt, max):  # noqa: A002 - the real parameter names
        """pyCore.cpp sets MIN, OPT, MAX in turn and raises RuntimeError at the first that setDimensions refuses
        ("inconsistent with other shapes": a negative dimension, another rank, or not min <= opt <= max)."""
        _check_type(input, str, "IOptimizationProfile.set_shape input")
        lo, mid, hi = (_to_dims(d, "IOptimizationProfile.set_shape") for d in (min, opt, max))
        for which, dims, below in (("min", lo, None), ("opt", mid, lo), ("max", hi, mid)):
            if any(d < 0 for d in dims) or (below is not None and (len(dims) != len(below) or
                                                                  any(a > b for a, b in zip(below, dims)))):
                raise RuntimeError(f"Shape provided for {which} is inconsistent with other shapes.")
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input):  # noqa: A002
        return list(self._shapes.get(input, (Dims(), Dims(), Dims())))


def _cache_tag() -> bytes:
    """What a timing cache is valid for: this TensorRT on this device."""
    return _CACHE_MAGIC + f"{__version__} {json.dumps(emulated_device(), sort_keys=True)}\n".encode()


class ITimingCache:
    """Tactic timings by layer: one entry per layer built, keyed by the layer, its tensors' types and shapes and the
    profile's shapes (what TensorRT's keys depend on). A build finds the entries a loaded cache holds and adds the
    layers it had to time, so a loaded cache is observable: the builder logs "timing cache: H of N layers found"
    (INFO), and the serialized cache grows with every new layer built."""

    def __init__(self, data: bytes):
        self._entries: dict[str, str] = {}
        self._foreign = False
        if data:
            tag = _cache_tag()
            try:
                if not data.startswith(tag):
                    raise ValueError("another TensorRT version or device")
                self._entries = dict(json.loads(data[len(tag):]))
            except ValueError:
                self._foreign, self._entries = True, {}  # tactics timed elsewhere are never reused

    def combine(self, input_cache, ignore_mismatch):
        _check_type(input_cache, ITimingCache, "ITimingCache.combine input_cache")
        _check_type(ignore_mismatch, bool, "ITimingCache.combine ignore_mismatch")
        if input_cache._foreign and not ignore_mismatch:
            return False
        self._entries.update(input_cache._entries)
        return True

    def serialize(self):
        return IHostMemory(_cache_tag() + json.dumps(self._entries, sort_keys=True).encode())

    def _lookup(self, keys: dict[str, str]) -> int:
        """How many of these layers were timed already; the others are added."""
        found = sum(k in self._entries for k in keys)
        self._entries.update(keys)
        return found


def _timing_keys(network: INetworkDefinition, config: IBuilderConfig) -> dict[str, str]:
    shapes = [{n: [list(d) for d in p._shapes.get(n, ())] for n in sorted(p._shapes)} for p in config._profiles]
    keys = {}
    for layer in network._layers:
        what = [layer.type.name, layer.name, [[t.name, list(t.shape), t.dtype.name] for t in layer._inputs],
                [[t.name, list(t.shape), t.dtype.name] for t in layer._outputs], shapes]
        keys[hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]] = f"{layer.type.name}:onnxruntime-cpu"
    return keys


class IBuilderConfig:
    def __init__(self):
        self._flags = {f for f in _DEFAULT_FLAGS if hasattr(BuilderFlag, f)}
        self._pools: dict[MemoryPoolType, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._opt_level = 3
        self._cache: ITimingCache | None = None

    def set_flag(self, flag):
        self._flags.add(_check_type(flag, BuilderFlag, "IBuilderConfig.set_flag").name)

    def clear_flag(self, flag):
        self._flags.discard(_check_type(flag, BuilderFlag, "IBuilderConfig.clear_flag").name)

    def get_flag(self, flag):
        return _check_type(flag, BuilderFlag, "IBuilderConfig.get_flag").name in self._flags

    def set_memory_pool_limit(self, pool, pool_size):
        _check_type(pool, MemoryPoolType, "IBuilderConfig.set_memory_pool_limit pool")
        self._pools[pool] = _check_type(pool_size, int, "IBuilderConfig.set_memory_pool_limit pool_size")

    @property
    def builder_optimization_level(self) -> int:
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, value) -> None:
        self._opt_level = _check_type(value, int, "IBuilderConfig.builder_optimization_level")

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def add_optimization_profile(self, profile):
        _check_type(profile, IOptimizationProfile, "IBuilderConfig.add_optimization_profile")
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        return ITimingCache(bytes(memoryview(serialized_timing_cache)))

    def set_timing_cache(self, cache, ignore_mismatch):
        _check_type(cache, ITimingCache, "IBuilderConfig.set_timing_cache cache")
        _check_type(ignore_mismatch, bool, "IBuilderConfig.set_timing_cache ignore_mismatch")
        if cache._foreign and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache


class Builder:
    def __init__(self, logger):
        self._logger = _check_type(logger, ILogger, "Builder.__init__ logger")

    def create_network(self, flags=0):
        return INetworkDefinition(_check_type(flags, int, "Builder.create_network flags"))

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        _check_type(network, INetworkDefinition, "Builder.build_serialized_network network")
        _check_type(config, IBuilderConfig, "Builder.build_serialized_network config")
        problems = _build_problems(network, config)
        for p in problems:
            _error(self._logger, p)
        if problems:
            return None
        if not network._strongly_typed:  # TensorRT 10 without STRONGLY_TYPED: built, as 10.x does
            hints = sorted(config._flags & _PRECISION_FLAGS)
            self._logger.log(ILogger.Severity.WARNING, "this network is weakly typed: weak typing is deprecated "
                             "since TensorRT 10.12 and removed in 11 (create the network with "
                             "NetworkDefinitionCreationFlag.STRONGLY_TYPED). Precision flags "
                             f"{hints or 'none'} are hints TensorRT may follow; the emulator computes in the ONNX's "
                             "own types.")
        if config._cache is not None and "DISABLE_TIMING_CACHE" not in config._flags:
            keys = _timing_keys(network, config)
            found = config._cache._lookup(keys)
            self._logger.log(ILogger.Severity.INFO, f"timing cache: {found} of {len(keys)} layers found "
                                                    f"({len(keys) - found} timed and added)")
        header = {
            "tensorrt": __version__,
            "device": emulated_device(),
            "strongly_typed": network._strongly_typed,
            "precision_flags": [] if network._strongly_typed else sorted(config._flags & _PRECISION_FLAGS),
            "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],
            "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs],
            "profiles": [{n: [list(d) for d in p._shapes[n]] for n in (t.name for t in network._inputs)}
                         for p in config._profiles],
            "weights_bytes": network._weights_bytes,
            "onnx_sha256": hashlib.sha256(network._onnx).hexdigest(),
        }
        head = json.dumps(header).encode()
        return IHostMemory(_MAGIC + struct.pack("<I", len(head)) + head + network._onnx)


def _build_problems(network: INetworkDefinition, config: IBuilderConfig) -> list[str]:
    if network._onnx is None:
        return ["Network must have at least one output (nothing was parsed into it)"]
    out = []
    cc = tuple(int(v) for v in emulated_device()["compute_capability"].split("."))
    if network._fp8 and cc < FP8_MIN_COMPUTE_CAPABILITY:  # TensorRT's own words (10.x, e.g. on an A6000, SM 8.6)
        out.append("IBuilder::buildSerializedNetwork: Error Code 9: API Usage Error (Networks with FP8 Q/DQ layers "
                   "require hardware with FP8 support.)")
    if network._strongly_typed:
        flags = sorted(config._flags & _PRECISION_FLAGS)
        if flags:
            out.append(f"BuilderFlag {', '.join(flags)} cannot be set for a strongly typed network: "
                       "precision comes from the network's types")
    dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
    if dynamic and not config._profiles:
        out.append("Network has dynamic or shape inputs, but no optimization profile has been defined.")
    for i, p in enumerate(config._profiles):
        for t in network._inputs:
            if t.name not in p._shapes:
                if any(d < 0 for d in t.shape):
                    out.append(f"optimization profile {i} has no dimensions for dynamic input {t.name!r}")
                else:
                    p._shapes[t.name] = (t.shape, t.shape, t.shape)
                continue
            for which, dims in zip(("min", "opt", "max"), p._shapes[t.name]):
                if len(dims) != len(t.shape):
                    out.append(f"optimization profile {i}: {which} {dims} of {t.name!r} has rank {len(dims)}, "
                               f"the input has rank {len(t.shape)}")
                elif any(s >= 0 and d != s for d, s in zip(dims, t.shape)):
                    out.append(f"optimization profile {i}: {which} {dims} of {t.name!r} contradicts its static "
                               f"dimensions {t.shape}")
    return out


# ---------------------------------------------------------------------------------------------- runtime


class Runtime:
    def __init__(self, logger):
        self._logger = _check_type(logger, ILogger, "Runtime.__init__ logger")

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(memoryview(serialized_engine))
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            _error(self._logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                                 "assertion plan magic tag does not match; this is not a plan)")
            return None
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        try:
            header = json.loads(data[start:start + n])
            if not isinstance(header, dict):
                raise ValueError(f"a JSON {type(header).__name__}, not an object")
        except ValueError as e:
            _error(self._logger, f"IRuntime::deserializeCudaEngine: Error Code 1: Serialization (corrupt plan header: "
                                 f"{e})")
            return None
        if header.get("tensorrt") != __version__:
            _error(self._logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                                 "assertion stdVersionRead == kSERIALIZATION_VERSION failed. The engine plan file is "
                                 f"not compatible with this version of TensorRT, expecting library version "
                                 f"{__version__} got {header.get('tensorrt')}, please rebuild.)")
            return None
        if header.get("device") != emulated_device():
            _error(self._logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (The engine plan file "
                                 f"is generated on an incompatible device, expecting {emulated_device()['name']} got "
                                 f"{(header.get('device') or {}).get('name')}, please rebuild.)")
            return None
        onnx_bytes = data[start + n:]
        if hashlib.sha256(onnx_bytes).hexdigest() != header.get("onnx_sha256"):
            _error(self._logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (truncated plan)")
            return None
        try:
            engine = ICudaEngine(header, onnx_bytes, self._logger)
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field missing or of the wrong kind
            _error(self._logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (corrupt plan header: "
                                 f"{type(e).__name__} {e})")
            return None
        perturb = os.environ.get("TRT_EMULATOR_PERTURB", "").strip()
        if perturb:
            try:
                engine._compute = _perturbed(onnx_bytes, perturb)
            except ValueError as e:
                _error(self._logger, f"IRuntime::deserializeCudaEngine: TRT_EMULATOR_PERTURB {e}")
                return None
        try:
            engine._memory = _memory_for(engine)
        except (RuntimeError, ValueError) as e:  # device memory without CUDA; a TRT_EMULATOR_MEMORY it does not know
            _error(self._logger, f"IRuntime::deserializeCudaEngine: {e}")
            return None
        return engine


class ICudaEngine:
    def __init__(self, header: dict, onnx_bytes: bytes, logger):
        self._header, self._onnx, self._logger = header, onnx_bytes, logger
        self._io = [(name, TensorIOMode.INPUT, Dims(shape), DataType[dt]) for name, shape, dt in header["inputs"]]
        self._io += [(name, TensorIOMode.OUTPUT, Dims(shape), DataType[dt]) for name, shape, dt in header["outputs"]]
        self._by_name = {t[0]: t for t in self._io}
        self._profiles = [{n: [Dims(d) for d in dims] for n, dims in p.items()} for p in header["profiles"]]
        if not all(len(self._profiles[i].get(n, ((),) * 3)) == 3 for i in range(len(self._profiles)) for n in
                   self._by_name):
            raise ValueError("a profile without min, opt and max")
        self._compute = onnx_bytes  # what execute_async_v3 runs: the ONNX, or its perturbed copy (test-only switch)
        self._memory = None  # _HostMemory or the CUDA module's DeviceMemory, chosen at deserialization
        self._sess = None
        self._out_dims: dict[tuple, dict[str, Dims]] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self._profiles))

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def device_memory_size_v2(self) -> int:
        return 0  # activations live in ONNX Runtime's host arena, not in emulated device memory

    def get_engine_stat(self, stat=EngineStat.TOTAL_WEIGHTS_SIZE):
        _check_type(stat, EngineStat, "ICudaEngine.get_engine_stat")
        return int(self._header.get("weights_bytes", 0))

    def get_tensor_name(self, index):
        return self._io[_check_type(index, int, "ICudaEngine.get_tensor_name")][0]

    def get_tensor_mode(self, name):
        t = self._by_name.get(_check_type(name, str, "ICudaEngine.get_tensor_mode"))
        return t[1] if t else TensorIOMode.NONE

    def get_tensor_dtype(self, name):
        t = self._by_name.get(_check_type(name, str, "ICudaEngine.get_tensor_dtype"))
        if t is None:
            _error(self._logger, f"ICudaEngine::getTensorDataType: no tensor named {name!r}")
            return DataType.FLOAT
        return t[3]

    def get_tensor_shape(self, name):
        t = self._by_name.get(_check_type(name, str, "ICudaEngine.get_tensor_shape"))
        if t is None:
            _error(self._logger, f"ICudaEngine::getTensorShape: no tensor named {name!r}")
            return Dims([-1])
        return t[2]

    def get_tensor_profile_shape(self, name, profile_index):
        _check_type(name, str, "ICudaEngine.get_tensor_profile_shape name")
        _check_type(profile_index, int, "ICudaEngine.get_tensor_profile_shape profile_index")
        t = self._by_name.get(name)
        if t is None or t[1] != TensorIOMode.INPUT or not 0 <= profile_index < self.num_optimization_profiles:
            _error(self._logger, f"ICudaEngine::getProfileShape: no input {name!r} in profile {profile_index}")
            return []
        if not self._profiles:
            return [t[2], t[2], t[2]]
        return list(self._profiles[profile_index][name])

    def create_execution_context(self, strategy=ExecutionContextAllocationStrategy.STATIC):
        _check_type(strategy, ExecutionContextAllocationStrategy, "ICudaEngine.create_execution_context")
        return IExecutionContext(self)

    # -- emulation

    def _session(self):
        if self._sess is None:
            self._sess = _session(self._compute)
        return self._sess

    def _output_dims(self, shapes: dict[str, Dims]) -> dict[str, Dims]:
        """Output shapes for these input shapes: from the graph's symbols, else by running it once on zeros."""
        key = tuple(sorted(shapes.items()))
        if key not in self._out_dims:
            sess = self._session()
            symbols = {}
            for i in sess.get_inputs():
                for d, v in zip(i.shape, shapes[i.name]):
                    if isinstance(d, str):
                        symbols[d] = v
            outs = {}
            for o in sess.get_outputs():
                dims = [d if isinstance(d, int) else symbols.get(d) for d in o.shape]
                outs[o.name] = dims
            if any(d is None for dims in outs.values() for d in dims):
                feed = {n: np.zeros(s, _NUMPY[self._by_name[n][3]]) for n, s in shapes.items()}
                res = sess.run(None, feed)
                outs = {o.name: list(r.shape) for o, r in zip(sess.get_outputs(), res)}
            self._out_dims[key] = {n: Dims(d) for n, d in outs.items()}
        return self._out_dims[key]


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self._engine = engine
        self._profile = 0
        self._shapes: dict[str, Dims] = {}
        self._addresses: dict[str, int] = {}

    @property
    def engine(self):
        return self._engine

    @property
    def active_optimization_profile(self) -> int:
        return self._profile

    @property
    def all_binding_shapes_specified(self) -> bool:
        return not self.infer_shapes()

    def set_optimization_profile_async(self, profile_index, stream_handle):
        """True, or RuntimeError as pyCore.cpp raises when setOptimizationProfileAsync returns false."""
        _check_type(profile_index, int, "IExecutionContext.set_optimization_profile_async profile_index")
        _check_size_t(stream_handle, "IExecutionContext.set_optimization_profile_async stream_handle")
        log = self._engine._logger
        bad_stream = self._engine._memory.stream_problem(stream_handle)
        if bad_stream:
            _error(log, f"IExecutionContext::setOptimizationProfileAsync: {bad_stream}")
            raise RuntimeError("Error in set optimization profile async.")
        if not 0 <= profile_index < self._engine.num_optimization_profiles:
            _error(log, f"IExecutionContext::setOptimizationProfileAsync: profile index {profile_index} is out of "
                        f"range [0, {self._engine.num_optimization_profiles})")
            raise RuntimeError("Error in set optimization profile async.")
        if profile_index != self._profile:
            self._profile = profile_index
            self._shapes = {}  # input shapes must be set again for the new profile
        return True

    def set_input_shape(self, name, shape):
        _check_type(name, str, "IExecutionContext.set_input_shape name")
        shape = _to_dims(_check_type(shape, (tuple, list), "IExecutionContext.set_input_shape shape"),
                         "IExecutionContext.set_input_shape")
        if len(shape) > _MAX_DIMS:  # pyCore.cpp castDimsFromPyIterable
            raise RuntimeError("The number of input dims exceeds the maximum allowed number of dimensions")
        eng = self._engine
        t = eng._by_name.get(name)
        log = eng._logger
        if t is None or t[1] != TensorIOMode.INPUT:
            _error(log, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name!r} is not an input)")
            return False
        lo, _, hi = eng.get_tensor_profile_shape(name, self._profile)
        if len(shape) != len(t[2]) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            _error(log, "IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, "
                        f"condition: engineDims.d[i] == dims.d[i] or within the profile. Shape {shape} of {name!r} is "
                        f"outside optimization profile {self._profile}: min {lo}, max {hi}.)")
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name):
        _check_type(name, str, "IExecutionContext.get_tensor_shape")
        eng = self._engine
        t = eng._by_name.get(name)
        if t is None:
            _error(eng._logger, f"IExecutionContext::getTensorShape: no tensor named {name!r}")
            return Dims([-1])
        if t[1] == TensorIOMode.INPUT:
            return self._shapes.get(name, t[2])
        if self.infer_shapes():
            return Dims(-1 if d < 0 else d for d in t[2])
        return eng._output_dims(self._shapes)[name]

    def infer_shapes(self):
        return [n for n, mode, dims, _ in self._engine._io
                if mode == TensorIOMode.INPUT and n not in self._shapes and any(d < 0 for d in dims)]

    def set_tensor_address(self, name, memory):
        """NvInferRuntime.h: "Pass data=nullptr to reset to the default state"; "The pointer must have at least
        256-byte alignment"; false if the name is not an I/O tensor."""
        _check_type(name, str, "IExecutionContext.set_tensor_address name")
        _check_size_t(memory, "IExecutionContext.set_tensor_address memory")
        log = self._engine._logger
        if name not in self._engine._by_name:
            _error(log, f"IExecutionContext::setTensorAddress: no tensor named {name!r}")
            return False
        if memory == 0:
            self._addresses.pop(name, None)
            return True
        if memory % ADDRESS_ALIGNMENT:
            _error(log, f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Parameter check failed, "
                        f"condition: the address {memory:#x} of {name!r} is aligned to {ADDRESS_ALIGNMENT} bytes; it is "
                        f"off by {memory % ADDRESS_ALIGNMENT})")
            return False
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name):
        return self._addresses.get(_check_type(name, str, "IExecutionContext.get_tensor_address"), 0)

    def execute_async_v3(self, stream_handle):
        _check_size_t(stream_handle, "IExecutionContext.execute_async_v3 stream_handle")
        eng, log = self._engine, self._engine._logger
        bad_stream = eng._memory.stream_problem(stream_handle)
        if bad_stream:
            _error(log, f"IExecutionContext::enqueueV3: {bad_stream}")
            return False
        unset = self.infer_shapes()
        if unset:
            _error(log, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (input shapes not specified "
                        f"for {unset})")
            return False
        missing = [n for n, *_ in eng._io if n not in self._addresses]
        if missing:
            _error(log, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check failed, "
                        f"condition: mContext.profileObliviousBindings.at(profileObliviousIndex) || "
                        f"getPtrOrNull(mOutputAllocators, profileObliviousIndex). Address is not set for "
                        f"{missing}.)")
            return False
        io = [(n, mode == TensorIOMode.INPUT, self._addresses[n], tuple(self.get_tensor_shape(n)), _NUMPY[dt])
              for n, mode, _, dt in eng._io]
        problem = eng._memory.enqueue(stream_handle, io, lambda feed: _compute(eng, feed, io))
        if problem:
            _error(log, f"IExecutionContext::enqueueV3: {problem}")
            return False
        return True


def _compute(engine: ICudaEngine, feed: dict[str, np.ndarray], io) -> list[np.ndarray]:
    """The outputs, in `io` order, as contiguous arrays of the engine's types and the context's shapes."""
    names = [n for n, is_input, *_ in io if not is_input]
    outs = engine._session().run(names, feed)
    result = []
    for (n, _, _, shape, dtype), value in zip([t for t in io if not t[1]], outs):
        value = np.ascontiguousarray(value, dtype=dtype)
        if tuple(value.shape) != shape:
            raise ValueError(f"output {n!r} has shape {value.shape}, expected {shape}")
        result.append(value)
    return result


class _HostMemory:
    """Device memory is host memory (TRT_EMULATOR_MEMORY=host, the default without a GPU): the enqueue runs at once
    on the calling thread, and the only stream is the default one (handle 0; 1 and 2 are CUDA's legacy and
    per-thread default streams)."""

    kind = "host"

    def stream_problem(self, stream: int) -> str | None:
        if stream in (0, 1, 2):
            return None
        return (f"Cuda Runtime (invalid resource handle): stream {stream:#x} does not exist; the emulator's host "
                "memory has only the default stream (0)")

    def enqueue(self, stream: int, io, compute) -> str | None:
        feed = {n: _read(addr, shape, dtype) for n, is_input, addr, shape, dtype in io if is_input}
        try:
            outs = compute(feed)
        except ValueError as e:
            return str(e)
        for (_, _, addr, _, _), value in zip([t for t in io if not t[1]], outs):
            ctypes.memmove(addr, value.ctypes.data, value.nbytes)
        return None


def _read(address: int, shape, dtype: np.dtype) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = (ctypes.c_char * n).from_address(address)
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape, dtype=np.int64))).reshape(shape).copy()


def emulated_memory() -> str:
    """Where engines' I/O addresses live: "device" (CUDA device pointers, through the CUDA runtime torch brings) or
    "host". TRT_EMULATOR_MEMORY=host|device|auto (default auto: device when torch sees a CUDA GPU)."""
    want = os.environ.get("TRT_EMULATOR_MEMORY", "auto").strip().lower() or "auto"
    if want not in ("host", "device", "auto"):
        raise ValueError(f"TRT_EMULATOR_MEMORY must be host, device or auto, got {want!r}")
    if want == "auto":
        return "device" if _cuda().cuda_available() else "host"
    return want


def _memory_for(engine: ICudaEngine):
    if emulated_memory() == "host":
        return _HostMemory()
    return _cuda().DeviceMemory(engine._logger)


def _cuda():
    """tools/trt_emulator/tensorrt/_cuda.py, loaded by path: this module is also loaded under private names (tests
    emulate 10 and 11 side by side), where a relative import would not resolve."""
    mod = sys.modules.get("_trt_emulator_cuda")
    if mod is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_trt_emulator_cuda", Path(__file__).with_name("_cuda.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["_trt_emulator_cuda"] = mod
    return mod


def _perturbed(onnx_bytes: bytes, spec: str) -> bytes:
    """The ONNX with one thing changed (TRT_EMULATOR_PERTURB, test-only), so a check downstream must notice:
    `qdq-scale[:<DequantizeLinear name>]` replaces that DequantizeLinear's constant scale with ones (default: the last
    one, nearest the output, where no normalization undoes it: on svt_s INT8, cosine 0.23 against the ONNX);
    `<layer name>` adds m/2 * sin(7y/m + 1) to that layer's first output y, m = mean(|y|) (computed in float32): not
    proportional to y, so neither a normalization nor a cosine can ignore it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    if spec == "qdq-scale" or spec.startswith("qdq-scale:"):
        want = spec.partition(":")[2]
        dqs = [n for n in g.node if n.op_type == "DequantizeLinear" and (not want or n.name == want)
               and len(n.input) > 1 and n.input[1] in inits]
        if not dqs:
            raise ValueError(f"names no DequantizeLinear with a constant scale{f' called {want!r}' if want else ''}")
        node = dqs[-1]
        scale = numpy_helper.to_array(inits[node.input[1]])
        g.initializer.append(numpy_helper.from_array(np.ones_like(scale), node.input[1] + "__emulator_dropped"))
        node.input[1] = node.input[1] + "__emulator_dropped"
        return model.SerializeToString()
    nodes = [n for n in g.node if n.name == spec]
    if not nodes or not nodes[0].output:
        raise ValueError(f"names no layer {spec!r} (give a node name of the ONNX, or qdq-scale[:<name>])")
    node = nodes[0]
    y = node.output[0]
    try:
        infos = {vi.name: vi for vi in (*onnx.shape_inference.infer_shapes(model).graph.value_info, *g.output)}
    except Exception:
        infos = {}
    elem = infos[y].type.tensor_type.elem_type if y in infos else TensorProto.FLOAT
    p = f"{y}__emulator_perturb"
    node.output[0] = f"{p}_in"
    g.initializer.extend([numpy_helper.from_array(np.float32(v), f"{p}_{k}")
                          for k, v in (("half", 0.5), ("seven", 7.0), ("one", 1.0), ("eps", 1e-12))])
    added = [
        helper.make_node("Cast", [f"{p}_in"], [f"{p}_x"], to=TensorProto.FLOAT),
        helper.make_node("Abs", [f"{p}_x"], [f"{p}_abs"]),
        helper.make_node("ReduceMean", [f"{p}_abs"], [f"{p}_m0"], keepdims=1),
        helper.make_node("Add", [f"{p}_m0", f"{p}_eps"], [f"{p}_mean"]),
        helper.make_node("Mul", [f"{p}_mean", f"{p}_half"], [f"{p}_amp"]),
        helper.make_node("Div", [f"{p}_x", f"{p}_mean"], [f"{p}_z"]),
        helper.make_node("Mul", [f"{p}_z", f"{p}_seven"], [f"{p}_7z"]),
        helper.make_node("Add", [f"{p}_7z", f"{p}_one"], [f"{p}_arg"]),
        helper.make_node("Sin", [f"{p}_arg"], [f"{p}_sin"]),
        helper.make_node("Mul", [f"{p}_amp", f"{p}_sin"], [f"{p}_delta"]),
        helper.make_node("Add", [f"{p}_x", f"{p}_delta"], [f"{p}_sum"]),
        helper.make_node("Cast", [f"{p}_sum"], [y], to=elem),
    ]
    nodes = list(g.node)
    at = nodes.index(node) + 1  # right after the layer, so the graph stays in topological order
    del g.node[:]
    g.node.extend(nodes[:at] + added + nodes[at:])
    return model.SerializeToString()
