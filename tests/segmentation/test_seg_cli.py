"""twins-export / twins-bench / twins-eval --task seg on one dynamic-H/W segmentor export.

The export (a minute or two of tracing on 2 cores) is made once for the module: UPerNet, whose
pyramid pooling is the part a fixed-size export would get wrong, at a small H x W profile.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from twins_trt.cli import bench as bench_cli
from twins_trt.cli import eval as eval_cli
from twins_trt.cli import export as export_cli

PROFILE = "128:160x192:224x256"  # min 128x128, opt 160x192, max 224x256 (multiples of 32)
CLASSES = 7


@pytest.fixture(scope="module")
def seg_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg_export")
    rc = export_cli.main(["--variant", "svt_s", "--task", "seg", "--seg-head", "uper", "--num-classes", str(CLASSES),
                          "--dynamic-shape", PROFILE, "--no-build", "-q", "-o", str(out),
                          "--triton-repo", str(out / "triton")])
    assert rc == 0
    return out


def test_dynamic_export_verifies_at_min_opt_max_and_a_padded_size(seg_export):
    onnx_path = seg_export / "svt_s_seguper_dynhw.fp32.onnx"
    manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    ver = manifest["verification"]
    assert ver["passed"] and ver["worst"] <= 1e-4
    shapes = [tuple(s) for s in ver["shapes"]]
    assert {(1, 128, 128), (1, 160, 192), (1, 224, 256)} <= set(shapes)
    assert any((h // 4) % 7 and (w // 4) % 7 for _, h, w in shapes)  # mmseg's mask active at one of them
    assert manifest["segmentation"] == {"head": "uper", "num_classes": CLASSES, "output": "input"}
    graph = manifest["graph"]
    assert graph["attention_chains"] == graph["expected_attention_layers"] == 18
    assert graph["forbidden"]["cyclic_shift(Slice->Concat)"] == 0
    model = onnx.load(str(onnx_path), load_external_data=False)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded at export
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[1] == CLASSES and isinstance(out_dims[2], str) and isinstance(out_dims[3], str)


def test_triton_config_has_symbolic_height_and_width(seg_export):
    config = (seg_export / "triton" / "svt_s_seguper_dynhw_fp32" / "config.pbtxt").read_text()
    assert "dims: [ 3, -1, -1 ]" in config or "dims: [ 1, 3, -1, -1 ]" in config
    assert f"{CLASSES}, -1, -1" in config


def test_bench_seg_reuses_the_dynamic_export(seg_export, tmp_path, capsys):
    rc = bench_cli.main(["--task", "seg", "--variant", "svt_s", "--backends", "torch,ort-cpu", "--seg-head", "uper",
                         "--num-classes", str(CLASSES), "--seg-sizes", "128x160,224x256", "--iters", "1",
                         "--warmup", "0", "--threads", "2", "--export-dir", str(seg_export), "-o", str(tmp_path),
                         "--name", "seg", "-q"])
    assert rc == 0
    doc = json.loads((tmp_path / "seg.json").read_text())
    got = {(r["backend"], tuple(r["size"])) for r in doc["results"]}
    assert got == {(b, s) for b in ("torch", "ort-cpu") for s in ((128, 160), (224, 256))}
    assert all(r["fps"] > 0 for r in doc["results"])
    assert {r["artifact"] for r in doc["results"] if r["backend"] == "ort-cpu"} == {
        str(seg_export / "svt_s_seguper_dynhw.fp32.onnx")}
    assert "fps" in capsys.readouterr().out


def test_eval_seg_agreement_and_miou_against_own_predictions(seg_export, tmp_path, capsys):
    """Masks made from PyTorch's own predictions: its mIoU must be exactly 1; ORT agrees on ~all pixels."""
    import torch

    from twins_trt.segmentation import create_segmentor
    from twins_trt.segmentation.eval import preprocess_seg

    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    model = create_segmentor("svt_s", "uper", CLASSES, seed=0)
    for i in range(2):
        img = (rng.random((100, 120, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(images / f"im{i}.png")
        x = preprocess_seg(images / f"im{i}.png", (160, 192), model.cfg.mean, model.cfg.std)[None]
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(1)[0].numpy().astype(np.uint8)
        Image.fromarray(pred).save(masks / f"im{i}.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    rc = eval_cli.main(["--task", "seg", "--variant", "svt_s", "--data", str(images), "--masks", str(masks),
                        "--seg-head", "uper", "--num-classes", str(CLASSES), "--seg-size", "160x192",
                        "--backends", "torch,ort-fp32,ort-int8", "--export-dir", str(seg_export),
                        "-o", str(tmp_path / "eval"), "--no-progress"])
    assert rc == 0
    doc = json.loads((tmp_path / "eval" / "svt_s_seguper_160x192.eval.json").read_text())
    res = {r["name"]: r for r in doc["results"]}
    assert res["torch"]["miou"] == 1.0 and res["torch"]["agreement"] == 1.0
    assert res["ort-fp32"]["status"] == "ok" and res["ort-fp32"]["agreement"] >= 0.999
    assert res["ort-int8"]["status"] == "skipped" and "--int8" in res["ort-int8"]["reason"]
    assert doc["images"] == 2 and len(doc["skipped_images"]) == 1
    assert "pixel agreement" in capsys.readouterr().out
