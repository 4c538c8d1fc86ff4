"""Small artifacts for the Triton tests (a unique module name, so pytest's sys.path never confuses it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_tiny_onnx(path: Path, batch: int | str = "batch", profile: tuple[int, int, int] | None = (1, 8, 64)) -> Path:
    """input [batch,3,32,32] float32 -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch,5], with a manifest."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((5, 3), np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [batch, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    shape = ["batch" if isinstance(batch, str) else batch, 3, 32, 32]
    manifest = {"kind": "onnx", "variant": "tiny", "precision": "fp32", "features": False,
                "inputs": [{"name": "input", "shape": shape, "dtype": "float32"}], "outputs": ["logits"],
                "batch": ({"min": profile[0], "opt": profile[1], "max": profile[2]} if isinstance(batch, str)
                          else {"static": batch}), "img_size": [32, 32]}
    path.with_suffix(".json").write_text(json.dumps(manifest))
    return path
