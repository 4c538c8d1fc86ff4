"""The runtime-precision report: Q/DQ MatMuls must run in INT8; a layer left in FP32 is named."""

from __future__ import annotations

import onnx
import pytest

pytest.importorskip("openvino", reason="openvino is a regular dependency; this install lacks it")

from ov_graphs import DIM, TOKENS, make_qdq_mlp  # noqa: E402  (beside this file)

from twins_trt.bench.report import format_markdown, format_table  # noqa: E402
from twins_trt.runners.openvino_precision import quantized_layers  # noqa: E402
from twins_trt.runners.openvino_runner import OpenVinoRunner  # noqa: E402


def report_of(path):
    with OpenVinoRunner(path, threads=1) as r:
        r.infer(r_input())
        return r.precision_report()


def r_input():
    import numpy as np

    return np.random.default_rng(0).standard_normal((1, TOKENS, DIM)).astype(np.float32)


def test_quantized_layers_are_read_from_the_onnx(tmp_path):
    both = make_qdq_mlp(tmp_path / "both.onnx", second_quantized=True)
    assert {"mm_int8", "mm_second"} <= quantized_layers(both)
    model = onnx.load(str(make_qdq_mlp(tmp_path / "half.onnx", second_quantized=False)))
    assert "mm_second" in quantized_layers(model)  # Q/DQ on its activation only: still meant to be INT8
    for n in model.graph.node:  # no DequantizeLinear in front of either input: not meant to be INT8
        if n.name == "mm_second":
            n.input[0] = "hr"
    assert "mm_second" not in quantized_layers(model) and "mm_int8" in quantized_layers(model)


def test_quantized_matmuls_run_in_int8(tmp_path):
    rep = report_of(make_qdq_mlp(tmp_path / "both.onnx", second_quantized=True))
    layers = {x.name: x for x in rep.layers}
    assert set(layers) == {"mm_int8", "mm_second"}
    for x in layers.values():
        assert x.precision == "int8" and x.runtime_precision in ("i8", "u8") and x.meant_int8
        assert x.macs == TOKENS * DIM * DIM
    assert rep.by_precision()["int8"]["mac_share"] == pytest.approx(1.0)
    assert rep.int8_misses == []
    assert "int8 2 (100.0% of MACs)" in rep.summary() and "but ran" not in rep.summary()


def test_a_layer_left_in_fp32_is_named(tmp_path):
    rep = report_of(make_qdq_mlp(tmp_path / "half.onnx", second_quantized=False))
    layers = {x.name: x for x in rep.layers}
    assert layers["mm_int8"].precision == "int8"
    assert layers["mm_second"].precision == "fp32" and layers["mm_second"].meant_int8
    assert [x.name for x in rep.int8_misses] == ["mm_second"]
    assert rep.by_precision()["fp32"]["mac_share"] == pytest.approx(0.5)
    assert "meant INT8 but ran FP32: mm_second" in rep.summary()
    d = rep.to_dict()
    assert d["int8_misses"] == ["mm_second"] and d["meant_int8"] == 2 and d["layers_total"] == 2


def bench_doc(cells: dict[tuple[str, int], dict | None]) -> dict:
    """A two-backend result document; `cells` maps (backend, batch) to its runner's precision report."""
    from twins_trt.bench.measure import add_speedups, latency_stats

    results = [{"variant": "svt_s", "backend": b, "runtime": b.split("-")[0], "precision": "fp32", "batch": n,
                "status": "ok", **latency_stats([0.05, 0.05], n), "rounds": 1, "round_p50_ms": [50.0],
                "runner": {"name": b, "precision_report": rep}, "artifact": None}
               for (b, n), rep in cells.items()]
    add_speedups(results)
    return {"config": {"variants": ["svt_s"], "warmup": 1, "iters": 2, "rounds": 1, "threads": 2},
            "method": {"throughput": "t", "speedup": "s"}, "env": {"date": "2026-11-22", "threads": {"torch": 2,
            "ort_intra_op": 2}}, "results": results, "skipped": []}


def test_bench_report_prints_the_summary(tmp_path):
    rep = report_of(make_qdq_mlp(tmp_path / "half.onnx", second_quantized=False)).to_dict()
    doc = bench_doc({("torch", 1): None, ("torch", 8): None, ("openvino-int8", 1): rep, ("openvino-int8", 8): rep})
    text = format_table(doc)
    assert "runtime precision" in text and "svt_s openvino-int8: 2 MatMul/Conv layers" in text
    assert text.count("meant INT8 but ran FP32: mm_second") == 1  # once per backend, not per batch
    assert "- svt_s openvino-int8: 2 MatMul/Conv layers" in format_markdown(doc)
    assert "runtime precision" not in format_table(bench_doc({("torch", 1): None}))
