"""FP16 overflow check: every tensor's max |activation| over real images, against the FP16 range.

The FP32 graph runs on ONNX Runtime CPU with every intermediate tensor exposed as an output; the
largest magnitude each tensor reaches over the calibration images is compared with FP16's largest
finite value (65504). Tensors above it overflow; tensors within the margin (a factor of
`OVERFLOW_MARGIN`, i.e. above 65504 / 8 = 8188) have too little headroom for images a little
brighter than the calibration set. Each is reported with whether ModelOpt AutoCast kept it in FP32.
AutoCast itself is given the same images (`calibration_data`), so its data_max rule (keep a node in
FP32 when its I/O exceeds `data_max`) sees real activations rather than random inputs in (-1, 1).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from twins_trt.export.shapes import infer_types
from twins_trt.runners.ort_runner import cpu_session, padded_batches, session_infer

FP16_MAX = 65504.0
OVERFLOW_MARGIN = 8.0  # flag tensors above FP16_MAX / 8 (3 bits of headroom) as near the limit


@dataclass
class TensorRange:
    tensor: str
    node: str  # the node that produces it
    op_type: str
    absmax: float
    status: str  # "overflow" (> 65504) or "near" (within the margin)
    kept_fp32: bool | None = None  # in the FP16 artifact; None when the tensor no longer exists there

    def to_dict(self) -> dict:
        return asdict(self)


def activation_absmax(model: onnx.ModelProto, images: np.ndarray) -> dict[str, tuple[str, str, float]]:
    """tensor -> (producer node, op type, max |x| over `images`) for every float tensor the graph computes."""

    inferred = infer_types(model)
    floats = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
              if vi.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    producer = {o: (n.name, n.op_type) for n in model.graph.node for o in n.output if o in floats}
    sess = cpu_session(model, optimization="none", expose=set(producer))  # every tensor as the graph has it
    infer, batch = session_infer(sess)
    step = batch or len(images)
    names = [o.name for o in sess.get_outputs()]
    peak = dict.fromkeys(names, 0.0)
    # a padded chunk repeats its last image, which leaves every max as it is: nothing to drop
    for got, _ in padded_batches(infer, images, step, step):
        for name, out in got.items():
            out = np.asarray(out)
            if out.size and out.dtype.kind == "f":
                peak[name] = max(peak[name], float(np.max(np.abs(out.astype(np.float64)))))
    return {t: (*producer[t], peak[t]) for t in names if t in producer}


def fp32_tensors(fp16_model: onnx.ModelProto) -> set[str]:
    """Tensors that stay float32 in an AutoCast graph (value_info after type inference)."""
    inferred = infer_types(fp16_model)
    vis = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {vi.name for vi in vis if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def check_overflow(ranges: dict[str, tuple[str, str, float]], fp16_model: onnx.ModelProto | None = None,
                   margin: float = OVERFLOW_MARGIN) -> list[TensorRange]:
    """Tensors above FP16's range or within `margin` of it, largest first, with AutoCast's choice if given."""
    limit = FP16_MAX / margin
    kept = fp32_tensors(fp16_model) if fp16_model is not None else None
    present = ({o for n in fp16_model.graph.node for o in n.output} if fp16_model is not None else set())
    flagged = []
    for tensor, (node, op, absmax) in ranges.items():
        if absmax > limit or not np.isfinite(absmax):
            status = "overflow" if absmax > FP16_MAX or not np.isfinite(absmax) else "near"
            k = None if kept is None or tensor not in present else tensor in kept
            flagged.append(TensorRange(tensor, node, op, absmax, status, k))
    return sorted(flagged, key=lambda r: -r.absmax)


def format_overflow(flagged: list[TensorRange], margin: float = OVERFLOW_MARGIN) -> str:
    if not flagged:
        return f"fp16 overflow check: no tensor above {FP16_MAX / margin:.0f} (FP16 max {FP16_MAX:.0f} / {margin:g})"
    lines = [f"fp16 overflow check: {len(flagged)} tensor(s) above {FP16_MAX / margin:.0f} "
             f"(FP16 max {FP16_MAX:.0f} / margin {margin:g}):"]
    for r in flagged:
        kept = {True: "kept FP32 by AutoCast", False: "FP16 in the artifact (!)", None: "not in the FP16 graph"}
        lines.append(f"  {r.status:8s} {r.absmax:12.4g}  {r.tensor} ({r.op_type} {r.node}): {kept[r.kept_fp32]}")
    return "\n".join(lines)


def fp32_nodes_and_reasons(fp16_model: onnx.ModelProto, ranges: dict[str, tuple[str, str, float]],
                           data_max: float, init_max: float = FP16_MAX) -> list[dict]:
    """Nodes AutoCast left in FP32 (their outputs are float32), each with the reason our figures give."""
    kept = fp32_tensors(fp16_model)
    inits = {i.name: i for i in fp16_model.graph.initializer}
    peak = {t: v[2] for t, v in ranges.items()}
    out = []
    for n in fp16_model.graph.node:
        if n.op_type == "Cast" or not any(o in kept for o in n.output):
            continue
        io = [peak[t] for t in list(n.input) + list(n.output) if t in peak]
        big_init = [i for i in n.input if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT
                    and np.abs(onnx.numpy_helper.to_array(inits[i])).max(initial=0) > init_max]
        if io and max(io) > data_max:
            why = f"I/O reaches |x| = {max(io):.4g} > data_max {data_max:g} on the calibration images"
        elif big_init:
            why = f"initializer {big_init[0]} exceeds init_max {init_max:g}"
        else:
            why = "AutoCast rule (op type or reduction depth kept in FP32)"
        out.append({"node": n.name, "op_type": n.op_type, "reason": why})
    return out


@contextlib.contextmanager
def npz_inputs(input_name: str, images: np.ndarray, batch: int) -> Iterator[str]:
    """The images as an .npz AutoCast's reference runner reads (split in batches of the graph's size)."""
    fd, path = tempfile.mkstemp(suffix=".npz", prefix="twins-autocast-")
    os.close(fd)
    try:
        n = len(images) - len(images) % batch or batch
        x = images[:n] if len(images) >= batch else np.resize(images, (batch, *images.shape[1:]))
        np.savez(path, **{input_name: x.astype(np.float32)})
        yield path
    finally:
        Path(path).unlink(missing_ok=True)
