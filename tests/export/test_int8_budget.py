"""INT8 under an accuracy budget: held-out verdicts, the sensitivity report, the FP16 fallback, FP16 overflow.

timm's own twins_svt_small / twins_pcpvt_small state dicts (random init, fixed seed) and scikit-image's
photographs, some held out of calibration. 96x96 inputs keep the search to seconds on two cores.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from twins_trt.errors import AccuracyBudgetError
from twins_trt.export import ExportOptions
from twins_trt.export import int8 as bud
from twins_trt.export import overflow as ovf

BUDGET = "cosine>=0.999"


@pytest.fixture(scope="module", params=["pcpvt_s", "svt_s"])  # test_fp8 asks in the other order (conftest)
def budgeted(request, timm_int8_fp8):
    """An INT8 export under a budget that all-INT8 misses (max calibration: the quicker, cruder one). svt_s ranks its
    regions by the default (local) method, pcpvt_s leave-one-out. The same export as test_fp8's (it adds FP8)."""
    res = timm_int8_fp8(request.param).seen_as("int8")
    assert str(res.options.budgets["int8"]) == BUDGET
    return res


def test_all_int8_figures_are_on_held_out_images_with_their_spread(budgeted):
    cal, plain = budgeted.manifest["calibration"], budgeted.manifest["int8"]["all_int8"]
    assert cal["samples"] == 12 and cal["heldout_images"] == 4 and cal["heldout_samples"] == plain["samples"] == 8
    photos = {p.name for p in budgeted.options.calib_dir.iterdir()}
    assert len(set(cal["heldout_files"])) == 4 and set(cal["heldout_files"]) <= photos
    assert plain["cosine_min"] <= plain["cosine_p05"] <= plain["cosine_median"] <= 1.0
    lo, hi = plain["agreement_ci95"]
    assert lo <= plain["top1_agreement"] <= hi and hi - lo > 0.2  # 8 samples: a wide interval, and it says so


def test_budgeted_export_meets_a_budget_all_int8_misses(budgeted):
    m = budgeted.manifest["int8"]
    assert m["budget"] == BUDGET and m["all_int8"]["cosine"] < 0.999  # what the plain export would write
    ver = budgeted.manifest["verification"]
    assert ver["inputs"] == "held-out images" and ver["samples"] == 8
    assert ver["passed"] and ver["metric"] == "cosine" and ver["bound"] == 0.999 and ver["worst"] >= 0.999
    assert m["figures"]["cosine"] >= 0.999
    assert m["fp16_regions"] and m["fp16_nodes"]
    # the FP16 regions really are FP16 in the artifact: none of their compute nodes is fed through Q/DQ
    graph = onnx.load(str(budgeted.artifacts["int8"]))
    assert not bud.int8_nodes(graph) & set(m["fp16_nodes"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}


def test_budgeted_export_keeps_most_macs_in_int8(budgeted):
    graph = onnx.load(str(budgeted.artifacts["int8"]))
    fp32 = onnx.load(str(budgeted.artifacts["fp32"]))
    share = bud.mac_share(graph, bud.node_macs(fp32), "int8")
    assert 0.5 <= share < 1.0 and share == pytest.approx(budgeted.manifest["int8"]["int8_mac_share"])


def test_sensitivity_report_is_written_beside_the_artifact(budgeted):
    stem, out = budgeted.options.stem, budgeted.options.out_dir
    report = json.loads((out / f"{stem}.int8.sensitivity.json").read_text())
    assert (out / f"{stem}.int8.sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = {r["kind"] for r in report["regions"]}
    assert {"patch_embed", "gsa.q", "gsa.kv", "gsa.sr", "gsa.qk", "gsa.av", "gsa.proj", "mlp.fc1", "mlp.fc2", "peg",
            "head"} <= kinds
    if budgeted.options.variant == "svt_s":
        assert {"lsa.qkv", "lsa.qk", "lsa.av", "lsa.proj"} <= kinds
    method = "loo" if budgeted.options.variant == "pcpvt_s" else "local"
    assert report["sensitivity_method"] == method == budgeted.manifest["int8"]["search"]["method"]
    measured = [r for r in report["regions"] if "cosine" in r]  # left out of INT8 alone: every region, or the top 8
    assert len(measured) == (len(report["regions"]) if method == "loo" else 8)
    search = report["search"]
    assert search["met"] is True and report["ranking"][: len(search["forward"])] == search["forward"]
    assert search["fp16_regions"] == [r for r in search["forward"] if r not in search["returned"]]
    assert sum(r["mac_share"] for r in report["regions"]) == pytest.approx(1.0)
    assert "head" in budgeted.sensitivity_table and not list(out.glob(".*"))  # no temporary left behind


def test_trial_graphs_take_their_int8_weights_computed_once_with_the_same_outputs(budgeted):
    """ONNX Runtime's constant folding quantizes every weight again at each session start (0.45 s of an svt_s trial's
    0.8 s), and on x86 it fuses no signed-INT8 weight's DequantizeLinear, so that ran at every held-out sample
    (half of a pcpvt_s 96x96 INT8 sample's time). HeldOut scores a graph with its weights quantized once, by ONNX
    Runtime's own kernel, and their dequantized values fed as graph inputs (constants would get other kernels at
    the "all" level): every output the same, bit for bit, and so the same figures, for the calibrated graph and a
    trial graph with part of it out of INT8."""
    from twins_trt.export.int8.budget import HeldOut, figures, run_onnx, with_weights_quantized
    from twins_trt.qdq import int8_nodes, without_qdq

    graph = onnx.load(str(budgeted.artifacts["int8"]))
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)

    def weight_quantizers(g: onnx.ModelProto) -> list[str]:
        inits = {i.name for i in g.graph.initializer}
        return [n.output[0] for n in g.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]

    cache: dict = {}
    held = HeldOut(onnx.load(str(budgeted.artifacts["fp32"])), x)
    trial = without_qdq(graph, set(sorted(int8_nodes(graph))[:20]))
    for g in (graph, trial):
        folded = with_weights_quantized(g, cache)
        assert weight_quantizers(g) and not weight_quantizers(folded)
        assert {i.name for i in folded.graph.initializer} >= set(weight_quantizers(g))
        fed: dict = {}
        both = with_weights_quantized(g, cache, dequantized=True, fed=fed)
        quantized = set(weight_quantizers(g))
        weight_dq = {n.output[0] for n in g.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in quantized}
        assert fed and set(fed) <= weight_dq and set(fed) <= {i.name for i in both.graph.input}
        assert not {n.output[0] for n in both.graph.node} & set(fed)
        ref = run_onnx(g, x)
        for got in (run_onnx(folded, x), run_onnx(both, x, "all", fed)):
            assert all(np.array_equal(ref[k], got[k]) for k in ref)
        assert held.score(g) == figures(held.reference, [ref])
    # a weight that changed is quantized again, never served from the cache
    changed = onnx.ModelProto()
    changed.CopyFrom(graph)
    w = next(i for i in changed.graph.initializer if i.name == next(
        n.input[0] for n in changed.graph.node if n.output[0] == weight_quantizers(graph)[0]))
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * 2, w.name))
    first = weight_quantizers(graph)[0]

    def quantized(g: onnx.ModelProto, c: dict) -> np.ndarray:
        return next(onnx.numpy_helper.to_array(i) for i in with_weights_quantized(g, c).graph.initializer
                    if i.name == first)

    assert np.array_equal(quantized(changed, cache), quantized(changed, {}))
    assert not np.array_equal(quantized(changed, cache), quantized(graph, cache))


def test_unmet_budget_exits_1_and_writes_no_int8_artifact(budgeted, tmp_path, capsys):
    """twins-export with a budget no precision mix reaches (cosine 1: FP16 still rounds): one line, exit 1,
    the sensitivity report for the user to read, and nothing under the INT8 artifact's name."""
    from twins_trt.cli import export as export_cli

    if budgeted.options.variant != "svt_s":
        pytest.skip("one variant is enough for the failure path")
    opts = budgeted.options
    stem = "svt_s_64x64"  # any size fails a cosine of 1; the smallest keeps the 23 trials quick
    rc = export_cli.main(["--variant", "svt_s", "--weights", str(opts.weights), "--int8", "--calib-data",
                          str(opts.calib_dir), "--calib-size", "8", "--calib-method", "max", "--img-size", "64",
                          "--int8-regions", "kind", "--int8-budget", "cosine>=1", "--verify-samples", "1",
                          "--no-build", "-q", "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error: INT8 budget cosine>=1 cannot be met: the best reached is cosine")
    assert f"nothing written under {stem}.int8.onnx" in err[0]
    assert not (tmp_path / f"{stem}.int8.onnx").exists()
    assert not (tmp_path / f"{stem}.int8.json").exists()
    assert (tmp_path / f"{stem}.fp32.onnx").exists()  # what did verify is kept
    report = json.loads((tmp_path / f"{stem}.int8.sensitivity.json").read_text())
    assert report["search"]["met"] is False and report["search"]["figures"]["cosine"] < 1.0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def _two_matmuls(path, input_shape: list[int], out_features: int, output: str, scale: float = 1.0) -> onnx.ModelProto:
    """input -> MatMul by a weight scaled by `scale` (node "scaled") -> Relu -> MatMul (node "head") -> `output`."""
    from onnx import TensorProto, helper, numpy_helper

    width = input_shape[-1]
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((width, width)) * scale).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((width, out_features)) * 0.1).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w1"], ["big"], name="scaled"),
         helper.make_node("Relu", ["big"], ["act"], name="relu"),
         helper.make_node("MatMul", ["act", "w2"], [output], name="head")],
        "two_matmuls", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [*input_shape[:-1], out_features])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(path))
    return model


def test_search_returns_the_best_reached_when_the_budget_is_out_of_reach(tmp_path):
    from modelopt.onnx.quantization import quantize

    fp32 = _two_matmuls(tmp_path / "mlp.onnx", [1, 16, 32], 16, "logits")  # big enough for ModelOpt to quantize
    x = np.random.default_rng(2).standard_normal((4, 16, 32)).astype(np.float32)
    quantize(str(tmp_path / "mlp.onnx"), calibration_data=x[:1], calibration_method="max", calibration_eps=["cpu"],
             output_path=str(tmp_path / "q.onnx"), log_level="ERROR")
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    assert bud.int8_nodes(qdq) == {"scaled", "head"}
    regions = bud.find_regions(fp32, qdq)
    assert {r.kind for r in regions.values()} == {"matmul"} and len(regions) == 2
    heldout = bud.HeldOut(fp32, x)
    all_int8 = heldout.score(qdq)
    scores = bud.sensitivity(qdq, regions, heldout, progress=False)
    ranked = bud.rank(scores, bud.Budget("cosine", 1.0))
    # fp16 everywhere still rounds: a cosine of exactly 1 is out of reach, and the search says how close it got
    found = bud.search(qdq, ranked, regions, heldout, bud.Budget("cosine", 1.0), all_int8, progress=False)
    assert not found.met and found.figures.cosine > all_int8.cosine and len(found.fp16_regions) >= 1
    easy = bud.search(qdq, ranked, regions, heldout, bud.Budget("cosine", all_int8.cosine), all_int8, progress=False)
    assert easy.met and easy.fp16_regions == [] and easy.trials == []
    assert not bud.int8_nodes(bud.without_qdq(qdq, {"scaled"})) & {"scaled"}


@pytest.mark.parametrize("text, expected", [("cosine>=0.995", bud.Budget("cosine", 0.995)),
                                            ("agreement >= 99%", bud.Budget("agreement", 0.99))])
def test_budget_parses(text, expected):
    assert bud.parse_budget(text) == expected


@pytest.mark.parametrize("text", ["cosine>0.99", "top1>=0.9", "cosine>=1.5", ""])
def test_bad_budget_says_what_to_write(text):
    with pytest.raises(AccuracyBudgetError, match="cosine>=0.995 or agreement>=0.99|must lie in"):
        bud.parse_budget(text)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_agreement_budget_needs_logits(precision):
    with pytest.raises(AccuracyBudgetError, match=f"--{precision}-budget .*no class logits"):
        ExportOptions(variant="svt_s", features=True, precisions=(precision,), calib_synthetic=True,
                      **{f"{precision}_budget": "agreement>=0.99"})


def test_held_out_split_never_overlaps_calibration():
    cal, held = bud.split_holdout(24, 0.25)
    assert len(held) == 6 and len(cal) == 18 and not set(cal) & set(held)
    with pytest.raises(AccuracyBudgetError, match="at least 2"):
        bud.split_holdout(1, 0.25)


# ---------------------------------------------------------------------------------------------- fp16 overflow


def test_overflow_check_flags_a_scaled_weight_and_autocast_keeps_it_fp32(tmp_path):
    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = _two_matmuls(tmp_path / "m.onnx", [1, 8], 4, "output", scale=3e4)
    x = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    ranges = ovf.activation_absmax(model, x)
    assert ranges["big"][2] > ovf.FP16_MAX and ranges["big"][:2] == ("scaled", "MatMul")
    with ovf.npz_inputs("input", x, 1) as data:
        fp16 = convert_to_mixed_precision(str(tmp_path / "m.onnx"), low_precision_type="fp16", keep_io_types=True,
                                          data_max=512, calibration_data=data, providers=["cpu"])
    flagged = {r.tensor: r for r in ovf.check_overflow(ranges, fp16)}
    assert flagged["big"].status == "overflow" and flagged["big"].kept_fp32 is True
    kept = {k["node"]: k["reason"] for k in ovf.fp32_nodes_and_reasons(fp16, ranges, 512)}
    assert "data_max 512" in kept["scaled"]
    assert "overflow" in ovf.format_overflow(list(flagged.values()))


def test_overflow_check_is_quiet_on_a_tame_graph(tmp_path):
    model = _two_matmuls(tmp_path / "m.onnx", [1, 8], 4, "output")
    ranges = ovf.activation_absmax(model, np.ones((2, 8), np.float32))
    assert ovf.check_overflow(ranges) == []
    assert "no tensor above 8188" in ovf.format_overflow([])


def test_the_budget_machinery_takes_fp8_qdq(tmp_path):
    """The same held-out scoring, region finding, sensitivity and MAC share for an FP8 (FLOAT8E4M3FN) Q/DQ graph: its
    nodes are found as FP8 (not INT8) and it is scored at the ONNX Runtime level FP8 needs (ORT_ENABLE_ALL refuses it)."""
    from modelopt.onnx.quantization import quantize

    fp32 = _two_matmuls(tmp_path / "mlp.onnx", [1, 16, 32], 16, "logits")
    x = np.random.default_rng(2).standard_normal((4, 16, 32)).astype(np.float32)
    quantize(str(tmp_path / "mlp.onnx"), quantize_mode="fp8", calibration_data=x[:1], calibration_method="max",
             calibration_eps=["cpu"], output_path=str(tmp_path / "q8.onnx"), log_level="ERROR")
    qdq = onnx.load(str(tmp_path / "q8.onnx"))
    assert bud.quantized_nodes(qdq, "fp8") == {"scaled", "head"} and bud.int8_nodes(qdq) == set()
    assert bud.mac_share(qdq, bud.node_macs(fp32), "fp8") == 1.0 and bud.mac_share(qdq, bud.node_macs(fp32)) == 0.0
    heldout = bud.HeldOut(fp32, x, "fp8")
    assert heldout.optimization == "basic"
    all_fp8 = heldout.score(qdq)
    assert 0.9 < all_fp8.cosine < 1.0
    scores = bud.sensitivity(qdq, bud.find_regions(fp32, qdq), heldout, progress=False)
    assert len(scores) == 2 and max(s.figures.cosine for s in scores) > all_fp8.cosine


def _residual_with_outliers(path, outliers: list[float], width: int = 32) -> onnx.ModelProto:
    """A residual stack like a transformer's: x <- x + Relu(MatMul(x * m_k, W_k)) per k in `outliers` -> logits, where
    m_k scales one channel by k and W_k divides that row by k. The FP32 function ignores k; per-tensor activation
    quantization does not: the larger k, the coarser that layer's input grid, so the layers differ in sensitivity."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i, k in enumerate(outliers):
        m = np.ones(width, np.float32)
        m[i % width] = k
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        w[i % width] /= k
        inits += [numpy_helper.from_array(m, f"m{i}"), numpy_helper.from_array(w, f"w{i}")]
        out = f"x{i + 1}" if i < len(outliers) - 1 else "logits"
        nodes += [helper.make_node("Mul", [x, f"m{i}"], [f"s{i}"], name=f"scale{i}"),
                  helper.make_node("MatMul", [f"s{i}", f"w{i}"], [f"y{i}"], name=f"layer{i}"),
                  helper.make_node("Relu", [f"y{i}"], [f"a{i}"], name=f"relu{i}"),
                  helper.make_node("Add", [x, f"a{i}"], [out], name=f"add{i}")]
        x = out
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16, width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 16, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(path))
    return model


OUTLIERS = [3.0, 40.0, 1.0, 12.0, 80.0, 6.0, 25.0, 2.0]


def _quantized_chain(tmp_path):
    """The residual stack with OUTLIERS, max-calibrated by ModelOpt on one sample: (fp32, qdq, its 8 "layerK matmul"
    regions, 5 held-out samples)."""
    from modelopt.onnx.quantization import quantize

    fp32 = _residual_with_outliers(tmp_path / "chain.onnx", OUTLIERS)
    x = np.abs(np.random.default_rng(3).standard_normal((6, 1, 16, 32))).astype(np.float32)
    quantize(str(tmp_path / "chain.onnx"), calibration_data=x[0], calibration_method="max", calibration_eps=["cpu"],
             output_path=str(tmp_path / "q.onnx"), log_level="ERROR")
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    regions = {k: r for k, r in bud.find_regions(fp32, qdq).items() if k.startswith("layer")}
    return fp32, qdq, regions, bud.HeldOut(fp32, x[1:, 0])


def test_local_ranking_agrees_with_leave_one_out(tmp_path):
    """The quick ranking (one local-error pass) orders the layers as leave-one-out does: the same most sensitive
    layer and a rank correlation that a random order reaches about 1 time in 100 (8 layers)."""
    fp32, qdq, regions, heldout = _quantized_chain(tmp_path)
    assert len(regions) == len(OUTLIERS)
    budget = bud.Budget("cosine", 1.0)
    loo = [s.region for s in bud.rank(bud.sensitivity(qdq, regions, heldout, progress=False), budget)]
    local_scores = bud.local_sensitivity(qdq, regions, heldout, confirm=0, progress=False)
    local = [s.region for s in bud.rank(local_scores, budget)]
    assert all(s.figures is None and s.local_error > 0 for s in local_scores)  # no trial: the one pass alone
    # the same most sensitive layer (a random order finds it 1 time in 8) and a positive rank correlation (a random
    # order of 8 reaches 0.5 about 1 time in 10): both together, about 1 time in 100
    assert local[0] == loo[0]
    rho = bud.spearman(local, loo)
    assert rho >= 0.5, (rho, local, loo)
    # confirming the top of the local ranking leave-one-out keeps it and measures it
    confirmed = bud.local_sensitivity(qdq, regions, heldout, confirm=3, progress=False)
    assert sum(s.figures is not None for s in confirmed) == 3
    assert bud.rank(confirmed, budget)[0].region == loo[0]


def test_backward_pass_returns_unneeded_regions_to_int8_and_keeps_the_budget(tmp_path):
    """The greedy search takes a ranking's prefix; a poor ranking puts regions in it that the budget does not need.
    The backward pass puts each such region (largest MAC share first) back in INT8 on trial, keeps it there only
    when the budget still holds, and so never loses the budget and never lowers the MACs in INT8."""
    fp32, qdq, regions, heldout = _quantized_chain(tmp_path)
    all_int8 = heldout.score(qdq)
    scores = bud.sensitivity(qdq, regions, heldout, progress=False)
    best = bud.rank(scores, bud.Budget("cosine", 1.0))
    # a budget the two most sensitive layers meet, searched in the WORST order: the prefix reaches them last
    two = {n for s in best[:2] for n in regions[s.region].nodes}
    budget = bud.Budget("cosine", heldout.score(bud.without_qdq(qdq, two)).cosine)
    worst = best[::-1]
    shares = {s.region: s.mac_share for s in scores}
    assert all(v > 0 for v in shares.values())
    plain = bud.search(qdq, worst, regions, heldout, budget, all_int8, progress=False, backward=False)
    found = bud.search(qdq, worst, regions, heldout, budget, all_int8, progress=False)
    assert plain.met and plain.returned == [] and len(plain.forward) > 2
    assert plain.fp16_regions == plain.forward == [s.region for s in worst][: len(plain.forward)]
    assert found.met and found.forward == plain.forward and found.returned
    assert found.fp16_regions == [r for r in found.forward if r not in found.returned]
    backs = [t["returned"] for t in found.trials if "returned" in t]  # tried largest MAC share first
    assert backs == sorted(backs, key=lambda r: -shares[r])
    final = bud.without_qdq(qdq, {n for r in found.fp16_regions for n in regions[r].nodes})
    assert heldout.score(final).meets(budget) and heldout.score(final).cosine == pytest.approx(found.figures.cosine)
    macs = bud.node_macs(fp32)
    before = bud.mac_share(bud.without_qdq(qdq, {n for r in plain.fp16_regions for n in regions[r].nodes}), macs)
    assert bud.mac_share(final, macs) > before


def test_unconfirmed_regions_follow_by_local_error_per_mac_share():
    """After the regions measured left out: those without MACs (free for the MAC share) by local error, then the
    others by local error per MAC share, so a small layer with a moderate error goes before a big one."""
    fig = bud.Figures(samples=4, cosine=0.99, cosine_min=0.98, cosine_p05=0.98, cosine_median=0.99)
    scores = [bud.RegionScore("big", "mlp.fc1", 1, 0.30, None, 9.0), bud.RegionScore("small", "lsa.av", 1, 0.01, None, 1.0),
              bud.RegionScore("res", "residual", 1, 0.0, None, 0.5), bud.RegionScore("res2", "residual", 1, 0.0, None, 2.0),
              bud.RegionScore("measured", "peg", 1, 0.02, fig, 0.1)]
    assert [s.region for s in bud.rank(scores, bud.Budget("cosine", 0.995))] == ["measured", "res2", "res", "small", "big"]


def test_padded_batches_run_side_by_side_in_order():
    """`workers` chunks run at once (a barrier only two concurrent calls pass), and come back in the samples' order,
    the short last chunk padded and its padding dropped."""
    import threading

    from twins_trt.runners.ort_runner import padded_batches, run_in_batches

    both = threading.Barrier(2, timeout=30)
    x = np.arange(5, dtype=np.float32).reshape(5, 1)

    def infer(xb: np.ndarray) -> dict[str, np.ndarray]:
        if xb[0, 0] < 4:  # the first two chunks wait for each other: run one after the other, they would time out
            both.wait()
        return {"y": xb * 10}

    got = list(padded_batches(infer, x, 2, 2, workers=2))
    assert [n for _, n in got] == [2, 2, 1] and got[-1][0]["y"].tolist() == [[40.0], [40.0]]
    assert run_in_batches(lambda xb: {"y": xb * 10}, x, 2, 2, workers=2)["y"].ravel().tolist() == [0, 10, 20, 30, 40]


def test_held_out_samples_run_on_one_thread_sessions_side_by_side_with_the_same_outputs(budgeted, monkeypatch):
    """A batch-1 graph's held-out samples run two at a time on one-thread sessions (ONNX Runtime spreads one batch-1
    inference over two threads poorly): every output the same, bit for bit, as one two-thread session's, in order."""
    from twins_trt.export.int8 import budget as budget_module
    from twins_trt.runners.ort_runner import cpu_session

    graph = onnx.load(str(budgeted.artifacts["int8"]))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = np.random.default_rng(1).standard_normal((4, 3, 96, 96)).astype(np.float32)
    monkeypatch.setattr(budget_module, "cpu_threads", lambda: 2)
    got = budget_module.run_onnx(graph, x)
    session = cpu_session(graph, threads=2)
    name = session.get_inputs()[0].name
    ref = [dict(zip([o.name for o in session.get_outputs()], session.run(None, {name: x[i:i + 1]})))
           for i in range(len(x))]
    for k in got:
        assert np.array_equal(got[k], np.concatenate([r[k] for r in ref]).astype(np.float32))


def test_search_takes_k1_from_the_first_regions_leave_one_out_figures(tmp_path):
    """k=1 is the most sensitive region left out alone: the graph sensitivity already scored. The search takes its
    figures instead of scoring it again, and ends where a search that scores it ends."""
    import dataclasses

    fp32, qdq, regions, heldout = _quantized_chain(tmp_path)
    all_int8 = heldout.score(qdq)
    ranked = bud.rank(bud.sensitivity(qdq, regions, heldout, progress=False), bud.Budget("cosine", 1.0))
    three = {n for s in ranked[:3] for n in regions[s.region].nodes}
    budget = bud.Budget("cosine", heldout.score(bud.without_qdq(qdq, three)).cosine)
    found = bud.search(qdq, ranked, regions, heldout, budget, all_int8, progress=False, backward=False)
    unmeasured = [dataclasses.replace(ranked[0], figures=None), *ranked[1:]]
    again = bud.search(qdq, unmeasured, regions, heldout, budget, all_int8, progress=False, backward=False)
    assert found.met and 1 not in [t["fp16_regions"] for t in found.trials]
    k1 = next(t for t in again.trials if t["fp16_regions"] == 1)
    assert k1["cosine"] == ranked[0].figures.cosine and len(again.trials) == len(found.trials) + 1
    assert found.fp16_regions == again.fp16_regions and found.figures == again.figures
