"""FP8 (E4M3) export: calibrated on the INT8 images (INT8's scales reused), judged on held-out ones against its own
budget, verified on both CPU runtimes, with the sensitivity report and the FP16 fallback of INT8's machinery.

timm's own twins_svt_small / twins_pcpvt_small state dicts (random init, seed 0) and scikit-image's photographs, some
held out of calibration; 96x96 inputs keep each export to a minute or two on two cores. The exports are
test_int8_budget's (`timm_int8_fp8` in conftest: one FP32 export and one calibration per variant for both files).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from twins_trt.cli import export as cli
from twins_trt.export import ExportOptions
from twins_trt.export.int8 import mac_share, node_macs
from twins_trt.qdq import formats_in, quantized_nodes

FP8_BUDGET = "cosine>=0.995"


@pytest.fixture(scope="module", params=["svt_s", "pcpvt_s"])  # test_int8_budget asks in the other order (conftest)
def exported(request, timm_int8_fp8):
    """INT8 under its budget (test_int8_budget's export: here for its calibration) then FP8 under cosine>=0.995, one
    call, as a user would. Regions ranked by the local method on svt_s, leave-one-out on pcpvt_s."""
    res = timm_int8_fp8(request.param).seen_as("fp8")
    assert str(res.options.budgets["fp8"]) == FP8_BUDGET
    return res


def test_fp8_artifact_carries_fp8_qdq_and_opens_only_at_the_basic_level(exported):
    import onnxruntime as ort

    from twins_trt.runners.ort_runner import OrtRunner, optimization_for

    path = exported.artifacts["fp8"]
    graph = onnx.load(str(path))
    assert formats_in(graph) == {"fp8"} and exported.manifest["precision"] == "fp8"
    assert optimization_for(graph) == "basic" and optimization_for(exported.artifacts["int8"]) == "all"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(Exception, match="float8e4m3fn"):  # why the one session helper picks the level by the graph
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    with OrtRunner(path) as r:
        assert np.isfinite(r.infer(np.zeros((1, 3, 96, 96), np.float32))["logits"]).all()


def test_fp8_is_verified_on_held_out_images_on_both_cpu_runtimes(exported):
    m = exported.manifest
    ort_ver, ov = m["verification"], m["openvino"]
    for ver in (ort_ver, ov["verification"]):
        assert ver["inputs"] == "held-out images" and ver["samples"] == 8 and ver["passed"]
        assert ver["metric"] == "cosine" and ver["bound"] == 0.995 and ver["worst"] >= 0.995
    held = set(m["calibration"]["heldout_files"])
    assert len(held) == 4 and not held & {p.rsplit("/", 1)[-1] for p in m["calibration"]["files"]}
    # OpenVINO's runtime-precision report names what it ran: FP8 emulated (f8e4m3 rounding, f32 kernels) on this CPU
    rep = ov["precision_report"]
    assert rep["meant_fp8"] > 50 and rep["meant_int8"] == 0 and rep["fp8_converts"] > 0
    assert "meant FP8 (FP8 Q/DQ in the ONNX)" in rep["summary"] and "FP8 emulated" in rep["summary"]


def test_fp8_budget_export_meets_cosine_0995_on_held_out_images(exported):
    fp8 = exported.manifest["fp8"]
    assert fp8["budget"] == FP8_BUDGET and fp8["figures"]["cosine"] >= 0.995
    assert fp8["all_fp8"]["samples"] == 8 and fp8["all_fp8"]["cosine_min"] <= fp8["all_fp8"]["cosine"]
    graph = onnx.load(str(exported.artifacts["fp8"]))
    # what the budget kept in FP16 really is out of FP8, and the rest is FP8
    assert not quantized_nodes(graph, "fp8") & set(fp8["fp16_nodes"])
    share = mac_share(graph, node_macs(onnx.load(str(exported.artifacts["fp32"]))), "fp8")
    assert 0.5 <= share <= 1.0 and share == pytest.approx(fp8["fp8_mac_share"])
    assert fp8["attention"] == "fp16"  # the default: FP8 on the linear layers and convolutions


def test_fp8_sensitivity_report_is_written_beside_the_artifact(exported):
    stem, out = exported.options.stem, exported.options.out_dir
    report = json.loads((out / f"{stem}.fp8.sensitivity.json").read_text())
    assert (out / f"{stem}.fp8.sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["precision"] == "fp8" and report["budget"] == FP8_BUDGET
    kinds = {r["kind"] for r in report["regions"]}
    assert {"patch_embed", "mlp.fc1", "mlp.fc2", "head"} <= kinds
    measured = [r for r in report["regions"] if "samples" in r]  # left out one at a time (all, or those confirmed)
    assert measured and all(r["samples"] == 8 for r in measured)
    assert exported.manifest["fp8"]["sensitivity_report"] == f"{stem}.fp8.sensitivity.json"


def test_fp8_trial_graphs_take_their_weights_computed_once_with_the_same_outputs(exported):
    """As for INT8 (test_int8_budget): HeldOut's FP8 graphs get their FP8 weights computed once by ONNX Runtime's own
    QuantizeLinear kernel (it hands FP8 back as bytes), then, at the basic level FP8 runs at (no Q/DQ fusion), their
    DequantizeLinear too, by its own kernel; every output is the same, bit for bit, at that level."""
    from twins_trt.export.int8.budget import HeldOut, run_onnx, with_weights_quantized
    from twins_trt.qdq import without_qdq

    graph = onnx.load(str(exported.artifacts["fp8"]))
    inits = {i.name for i in graph.graph.initializer}
    weights = [n.output[0] for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    dequantized = [n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    cache: dict = {}
    for g in (graph, without_qdq(graph, set(sorted(quantized_nodes(graph, "fp8"))[:20]))):
        folded = with_weights_quantized(g, cache)
        assert weights and not [n for n in folded.graph.node if n.op_type == "QuantizeLinear" and n.output[0] in weights]
        assert {i.data_type for i in folded.graph.initializer if i.name in weights} == {onnx.TensorProto.FLOAT8E4M3FN}
        both = with_weights_quantized(g, cache, dequantized=True)
        left = {n.output[0] for n in both.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
        assert dequantized and not left & set(weights + dequantized)
        assert {i.data_type for i in both.graph.initializer if i.name in dequantized} == {onnx.TensorProto.FLOAT16}
        ref = run_onnx(g, x, "basic")
        for got in (run_onnx(folded, x, "basic"), run_onnx(both, x, "basic")):
            assert all(np.array_equal(ref[k], got[k]) for k in ref)
    assert HeldOut(onnx.load(str(exported.artifacts["fp32"])), x[:1], "fp8").optimization == "basic"  # what scores FP8


def test_fp8_scales_come_from_the_int8_calibration(exported):
    """Same FP32 graph, images and method: ModelOpt's FP8 scales are INT8's times 448/127, so FP8 calibrates once."""
    from twins_trt.export.convert import activation_scales
    from twins_trt.export.fp8 import INT8_TO_FP8_SCALE

    cal = exported.manifest["calibration"]
    assert cal["scales_from"] == f"{exported.options.stem}.int8.calib.json" and cal["cache_reused"]
    int8 = json.loads((exported.options.out_dir / f"{exported.options.stem}.int8.calib.json").read_text())["scales"]
    fp8 = activation_scales(onnx.load(str(exported.artifacts["fp8"])))
    assert fp8 and set(fp8) <= set(int8)
    # the graph stores its scales in FP16 (ModelOpt's high-precision type): equal to FP16 rounding
    assert all(v == pytest.approx(int8[k] * INT8_TO_FP8_SCALE, rel=1e-3) for k, v in fp8.items())


def test_fp8_attention_is_a_choice(exported, tmp_path):
    """--fp8-attention: FP8 Q/DQ on the attention MatMuls (ModelOpt's fused-MHA placement); default: none there."""
    from twins_trt.export.convert import to_int8

    if exported.options.variant != "svt_s":
        pytest.skip("one variant shows the placement")
    opts = exported.options
    calib = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    attn_opts = ExportOptions(variant=opts.variant, out_dir=tmp_path, precisions=("fp8",), calib_synthetic=True,
                              img_size=(96, 96), calib_method="max", fp8_attention=True, progress=False)
    with_attn, _, _ = to_int8(exported.artifacts["fp32"], tmp_path / "attn.onnx", attn_opts, calib, None,
                              precision="fp8")
    linear_only = onnx.load(str(exported.artifacts["fp8"]))
    assert _fp8_attention_matmuls(with_attn) > 0 and _fp8_attention_matmuls(linear_only) == 0


def _fp8_attention_matmuls(model: onnx.ModelProto) -> int:
    """MatMuls that take a Softmax's output (the attention's second MatMul) and are FP8."""
    producer = {o: n for n in model.graph.node for o in n.output}
    fp8 = quantized_nodes(model, "fp8")

    def from_softmax(tensor: str, hops: int = 4) -> bool:
        n = producer.get(tensor)
        if n is None or hops < 0:
            return False
        return n.op_type == "Softmax" or (n.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast")
                                          and from_softmax(n.input[0], hops - 1))

    return sum(1 for n in model.graph.node if n.op_type == "MatMul" and n.name in fp8 and from_softmax(n.input[0]))


# ---------------------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv, message, code", [
    (["--fp8"], "--fp8 needs real calibration images", 2),
    (["--fp8", "--calib-synthetic", "--opset", "18"], "FP8 needs opset >= 19", 2),
    (["--fp8", "--calib-synthetic", "--fp8-budget", "cos>1"], "FP8 budget 'cos>1' is not understood", 1),
    (["--fp8", "--calib-synthetic", "--features", "--quant-budget", "agreement>=0.99"],
     "--fp8-budget agreement>=0.99: a backbone (--features) has no class logits", 1),
])
def test_bad_fp8_requests_fail_in_one_line(argv, message, code, tmp_path, capsys):
    """Bad input exits 2, a budget that cannot be judged 1 (the accuracy-budget code), each in one line."""
    assert cli.main(["--variant", "svt_s", "-o", str(tmp_path), *argv]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.onnx"))


def test_budget_flags_generalise_and_int8_budget_still_works():
    args = cli.build_parser().parse_args(["--variant", "svt_s", "--fp8", "--int8", "--calib-synthetic",
                                          "--quant-budget", "cosine>=0.995", "--int8-budget", "agreement>=0.99",
                                          "--fp8-attention"])
    assert (args.int8_budget, args.fp8_budget, args.quant_budget) == ("agreement>=0.99", None, "cosine>=0.995")
    opts = ExportOptions(variant="svt_s", precisions=("int8", "fp8"), calib_synthetic=True,
                         int8_budget=args.int8_budget or args.quant_budget,
                         fp8_budget=args.fp8_budget or args.quant_budget, fp8_attention=args.fp8_attention)
    assert str(opts.budgets["int8"]) == "agreement>=0.99" and str(opts.budgets["fp8"]) == "cosine>=0.995"
    assert opts.budget is opts.budgets["int8"] and opts.fp8_attention
