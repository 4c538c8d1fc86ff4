"""twins-export / twins-bench / twins-eval --task seg on one dynamic-H/W segmentor export.

The export (a minute or two of tracing on 2 cores) is made once for the module: svt_s with the FPN
head at a small H x W profile, in FP32, FP16 and INT8 (calibrated on scikit-image photographs at the
profile's OPT size, judged on held-out ones at every size of the profile). The FP16-fallback search
under a budget is tested on a static segmentor in test_seg_int8.py.
UPerNet's pyramid pooling, the part a fixed-size export would get wrong, is exported with a dynamic
H x W on its own in test_segmentor.py.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest
from PIL import Image

from twins_trt.cli import bench as bench_cli
from twins_trt.cli import eval as eval_cli
from twins_trt.cli import export as export_cli

PROFILE = "96:128x128:160x192"  # min 96x96, opt 128x128, max 160x192 (multiples of 32)
CLASSES = 7


BUDGET = "cosine>=0.99"


@pytest.fixture(scope="module")
def seg_export(tmp_path_factory, calib_photos):
    out = tmp_path_factory.mktemp("seg_export")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = export_cli.main(["--variant", "svt_s", "--task", "seg", "--seg-head", "fpn", "--num-classes", str(CLASSES),
                              "--dynamic-shape", PROFILE, "--fp16", "--int8", "--calib-data", str(calib_photos),
                              "--calib-size", "12", "--calib-method", "max", "--int8-regions", "kind",
                              "--int8-budget", BUDGET, "--no-build", "-q", "-o", str(out),
                              "--triton-repo", str(out / "triton")])
    assert rc == 0, err.getvalue()[-2000:]
    return out


def _manifest(seg_export, precision: str) -> dict:
    return json.loads((seg_export / f"svt_s_segfpn_dynhw.{precision}.json").read_text())


def test_dynamic_export_verifies_at_min_opt_max_and_a_padded_size(seg_export):
    onnx_path = seg_export / "svt_s_segfpn_dynhw.fp32.onnx"
    manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    ver = manifest["verification"]
    assert ver["passed"] and ver["worst"] <= 1e-4
    shapes = [tuple(s) for s in ver["shapes"]]
    assert {(1, 96, 96), (1, 128, 128), (1, 160, 192)} <= set(shapes)
    assert any((h // 4) % 7 and (w // 4) % 7 for _, h, w in shapes)  # mmseg's mask active at one of them
    assert manifest["segmentation"] == {"head": "fpn", "num_classes": CLASSES, "output": "input"}
    graph = manifest["graph"]
    assert graph["attention_chains"] == graph["expected_attention_layers"] == 18
    assert graph["forbidden"]["cyclic_shift(Slice->Concat)"] == 0
    assert graph["ops"]["Pad"] > 0  # window padding in the graph, taken only where the run-time size needs it
    assert graph["trt_support"]["ok"], graph["trt_support"]["issues"]  # the padded-window mask is no BOOL Equal/Where
    model = onnx.load(str(onnx_path), load_external_data=False)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded at export
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[1] == CLASSES and isinstance(out_dims[2], str) and isinstance(out_dims[3], str)


def test_masked_windows_keep_the_fused_attention_layout(seg_export):
    """The padded-window mask is tiled to the scores' (B*G, 1, N, N), not added to reshaped scores: in FP16 every
    chain meets TensorRT's fused-MHA conditions, as in the classifier."""
    for precision in ("fp16", "int8"):
        graph = _manifest(seg_export, precision)["graph"]
        assert graph["trt_support"]["ok"], graph["trt_support"]["issues"]
        att = graph["attention"]
        assert not any("reshaped" in f for c in att["per_chain"] for f in c["fails"]), att["verdict"]
    assert _manifest(seg_export, "fp16")["graph"]["attention"]["fusable"] == 18


def test_fp16_segmentor_verifies_at_every_profile_size(seg_export):
    ver = _manifest(seg_export, "fp16")["verification"]
    assert ver["passed"] and ver["metric"] == "cosine" and ver["worst"] >= 0.999
    assert {(1, 96, 96), (1, 128, 128), (1, 160, 192)} <= {tuple(s) for s in ver["shapes"]}


def test_int8_segmentor_is_judged_on_held_out_images_at_every_profile_size(seg_export):
    m = _manifest(seg_export, "int8")
    i8, cal, ver = m["int8"], m["calibration"], m["verification"]
    assert cal["heldout_images"] == 3 and cal["samples"] == 9  # calibrated on 9 photographs, judged on 3 others
    assert ver["passed"] and ver["inputs"] == "held-out images" and (ver["metric"], ver["bound"]) == ("cosine", 0.99)
    shapes = [tuple(s) for s in ver["shapes"]]
    assert {(1, 96, 96), (1, 128, 128), (1, 160, 192)} <= set(shapes)
    assert ver["samples"] == 6 * len(shapes)  # the 3 held-out photographs and their mirrors, at every size
    assert i8["figures"]["samples"] == ver["samples"] and i8["figures"]["cosine"] >= 0.99
    assert 0.9 <= i8["int8_mac_share"] <= 1.0  # MACs counted at the OPT size (shape inference alone gives 1x1 maps)
    graph = onnx.load(str(seg_export / "svt_s_segfpn_dynhw.int8.onnx"), load_external_data=False)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
    assert [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim][2:] == ["height", "width"]


def test_held_out_scoring_feeds_only_weights_whose_bias_onnx_runtime_leaves_alone(seg_export):
    """HeldOut feeds the weights' dequantized values as graph inputs (test_int8_budget), except a Conv's: with its
    input and weight from DequantizeLinear, ONNX Runtime quantizes the Conv's bias to INT32, which a fed weight would
    not (the FPN's 3x3 convs moved the logits by 0.011). The segmentor's outputs stay the same, bit for bit."""
    from twins_trt.export.int8.budget import BIASED, run_onnx, with_weights_quantized

    graph = onnx.load(str(seg_export / "svt_s_segfpn_dynhw.int8.onnx"))
    dq = {n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
    biased = {n.input[1] for n in graph.graph.node if n.op_type in BIASED and len(n.input) > 2 and n.input[1] in dq}
    fed: dict = {}
    both = with_weights_quantized(graph, {}, dequantized=True, fed=fed)
    assert biased and fed and not biased & set(fed) and biased <= {n.output[0] for n in both.graph.node}
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    ref, got = run_onnx(graph, x), run_onnx(both, x, "all", fed)
    assert all(np.array_equal(ref[k], got[k]) for k in ref)


def test_triton_config_has_symbolic_height_and_width(seg_export):
    config = (seg_export / "triton" / "svt_s_segfpn_dynhw_fp32" / "config.pbtxt").read_text()
    assert "dims: [ 3, -1, -1 ]" in config or "dims: [ 1, 3, -1, -1 ]" in config
    assert f"{CLASSES}, -1, -1" in config


def test_bench_seg_reuses_the_dynamic_export(seg_export, tmp_path, capsys):
    rc = bench_cli.main(["--task", "seg", "--variant", "svt_s", "--backends", "torch,ort-cpu", "--seg-head", "fpn",
                         "--num-classes", str(CLASSES), "--seg-sizes", "96x128,160x192", "--iters", "1",
                         "--warmup", "0", "--threads", "2", "--export-dir", str(seg_export), "-o", str(tmp_path),
                         "--name", "seg", "-q"])
    assert rc == 0
    doc = json.loads((tmp_path / "seg.json").read_text())
    got = {(r["backend"], tuple(r["size"])) for r in doc["results"]}
    assert got == {(b, s) for b in ("torch", "ort-cpu") for s in ((96, 128), (160, 192))}
    assert all(r["fps"] > 0 for r in doc["results"])
    assert {r["artifact"] for r in doc["results"] if r["backend"] == "ort-cpu"} == {
        str(seg_export / "svt_s_segfpn_dynhw.fp32.onnx")}
    assert "fps" in capsys.readouterr().out


def test_eval_seg_agreement_and_miou_against_own_predictions(seg_export, tmp_path, capsys):
    """Masks made from PyTorch's own predictions: its mIoU must be exactly 1; ORT agrees on ~all pixels."""
    import torch

    from twins_trt.eval.seg import preprocess_seg
    from twins_trt.models.segmentor import create_segmentor

    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    model = create_segmentor("svt_s", "fpn", CLASSES, seed=0)
    for i in range(2):
        img = (rng.random((100, 120, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(images / f"im{i}.png")
        x = preprocess_seg(images / f"im{i}.png", (128, 128), model.cfg.mean, model.cfg.std)[None]
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(1)[0].numpy().astype(np.uint8)
        Image.fromarray(pred).save(masks / f"im{i}.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    rc = eval_cli.main(["--task", "seg", "--variant", "svt_s", "--data", str(images), "--masks", str(masks),
                        "--seg-head", "fpn", "--num-classes", str(CLASSES), "--seg-size", "128x128",
                        "--backends", "torch,ort-fp32,ort-int8", "--export-dir", str(seg_export),
                        "-o", str(tmp_path / "eval"), "--no-progress"])
    assert rc == 0
    doc = json.loads((tmp_path / "eval" / "svt_s_segfpn_128x128.eval.json").read_text())
    res = {r["name"]: r for r in doc["results"]}
    assert res["torch"]["miou"] == 1.0 and res["torch"]["agreement"] == 1.0
    assert res["ort-fp32"]["status"] == "ok" and res["ort-fp32"]["agreement"] >= 0.999
    assert res["ort-int8"]["status"] == "ok" and res["ort-int8"]["agreement"] >= 0.8
    assert doc["images"] == 2 and len(doc["skipped_images"]) == 1
    assert "pixel agreement" in capsys.readouterr().out
