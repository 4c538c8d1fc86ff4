"""Tiny ONNX models with the metadata twins-export writes, made with onnx.helper (no export module needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_onnx(path: Path, batch: int | str = "batch", hw: tuple[int | str, int | str] = (32, 32),
              meta: dict[str, str] | None = None) -> Path:
    """input [batch,3,H,W] -> Conv 1x1 -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch,5]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(5, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["c"], name="conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, *hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


DYNAMIC_META = {"twins_trt.variant": "svt_s", "twins_trt.precision": "fp16", "twins_trt.batch_profile": "1:8:64"}
