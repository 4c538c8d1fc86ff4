"""twins-export: every artifact verified against PyTorch, graphs free of shifts, pads and shape arithmetic."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from twins_trt import VARIANTS, artifacts
from twins_trt.export import ExportOptions, export_variant, get_metadata
from twins_trt.runners.ort_runner import OrtRunner


def export(tmp_path, variant="svt_s", **kw):
    kw.setdefault("verify_samples", 1)
    return export_variant(ExportOptions(variant=variant, out_dir=tmp_path, progress=False, **kw))


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in ("svt_s", "pcpvt_s")])  # those two: every test below
def test_fp32_export_of_every_variant(tmp_path, variant):
    res = export(tmp_path, variant)
    path, rep, ver = res.artifacts["fp32"], res.reports["fp32"], res.verdicts["fp32"]
    assert path.name == f"{variant}.fp32.onnx"
    assert ver.passed and ver.worst <= 1e-4
    assert rep.attention_chains == VARIANTS[variant].num_attention_layers
    assert rep.forbidden_total == 0, rep.forbidden
    assert rep.ops.get("Pad", 0) == 0 and rep.ops.get("Shape", 0) == 0
    assert rep.ops["LayerNormalization"] >= 2 * sum(VARIANTS[variant].depths)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 20
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]


REDUCED_SIZE = (96, 96)


@pytest.fixture(scope="module", params=["svt_s"])
def reduced(request, tmp_path_factory, photo_dir):
    """FP32 + FP16 + INT8 calibrated on real photographs, exported once (pcpvt_s: FP16 below, INT8 in
    test_int8_budget.py); at 96 px: precision, calibration and manifests do not depend on the size."""
    out = tmp_path_factory.mktemp(f"reduced_{request.param}")
    return export(out, request.param, precisions=("fp16", "int8"), calib_dir=photo_dir, calib_size=6,
                  verify_samples=4, int8_regions="kind", img_size=REDUCED_SIZE)


def test_fp16_and_int8_meet_their_bounds(reduced):
    fp16, int8 = reduced.verdicts["fp16"], reduced.verdicts["int8"]
    assert fp16.inputs == "images" and int8.inputs == "held-out images"  # INT8 never judged on calibrated images
    assert int8.samples == 4  # 2 of the 6 photos held out, each also mirrored
    assert fp16.worst >= 0.999 and int8.worst >= 0.99
    assert int8.comparisons[0].top1_agreement is not None
    assert reduced.skipped_images == 1  # the corrupt file, counted, not fatal


def test_pcpvt_fp16_meets_its_bound_on_photographs_with_pytorch_run_once_per_image(tmp_path, photo_dir, monkeypatch):
    import hashlib

    import torch

    import twins_trt.export.pipeline as pipeline
    from twins_trt.runners.openvino_runner import openvino_status

    seen: list[str] = []  # the images PyTorch ran on, eagerly (the trace runs on fake tensors: not counted)

    def count(module, inputs, output):
        if type(inputs[0]) is torch.Tensor:
            seen.append(hashlib.sha1(inputs[0].numpy().tobytes()).hexdigest())

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_hook(count)
        return model

    real = pipeline.create_model
    monkeypatch.setattr(pipeline, "create_model", create_model)
    res = export(tmp_path, "pcpvt_s", precisions=("fp16",), calib_dir=photo_dir, calib_size=2, verify_samples=2)
    ver = res.verdicts["fp16"]
    assert ver.inputs == "images" and ver.samples == 2 and ver.passed and ver.worst >= 0.999
    assert res.reports["fp16"].attention_chains == res.options.cfg.num_attention_layers == 16
    # FP32 and FP16, each on ONNX Runtime and on OpenVINO, verified on the same 2 images: PyTorch ran on each once
    assert openvino_status()[0] and "openvino" in json.loads(res.manifests["fp16"].read_text())
    assert len(seen) == len(set(seen)) == 2


def test_precision_lives_in_the_graph(reduced):
    fp16 = onnx.load(str(reduced.artifacts["fp16"]))
    int8 = onnx.load(str(reduced.artifacts["int8"]))
    floats = [i.data_type for i in fp16.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats.count(onnx.TensorProto.FLOAT16) > 0.9 * len(floats)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O by default
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert reduced.reports["int8"].attention_chains == reduced.options.cfg.num_attention_layers
    assert get_metadata(int8)["precision"] == "int8"


def test_manifests_describe_each_artifact(reduced):
    for precision, path in reduced.artifacts.items():
        manifest = json.loads(artifacts.manifest_path(path).read_text())
        assert manifest["precision"] == precision and manifest["variant"] == reduced.options.variant
        assert manifest["sha256"] == artifacts.sha256_file(path)
        assert manifest["verification"]["passed"] is True
        assert manifest["inputs"][0]["shape"] == [1, 3, *REDUCED_SIZE]
        assert {"torch", "onnx", "nvidia-modelopt"} <= set(manifest["versions"])
        assert manifest["graph"]["forbidden_total"] == 0
    cal = json.loads(artifacts.manifest_path(reduced.artifacts["int8"]).read_text())["calibration"]
    assert cal["samples"] == 4 and cal["heldout_images"] == 2


def test_calibration_cache_is_reused_when_inputs_match(reduced, photo_dir):
    if reduced.options.variant != "svt_s":
        pytest.skip("one variant is enough for the cache")
    out = reduced.options.out_dir
    cache = json.loads((out / "svt_s_96x96.int8.calib.json").read_text())
    again = export(out, precisions=("int8",), calib_dir=photo_dir, calib_size=6, verify_samples=4, int8_regions="kind",
                   img_size=REDUCED_SIZE)
    manifest = json.loads(artifacts.manifest_path(again.artifacts["int8"]).read_text())
    assert manifest["calibration"]["cache_reused"] is True
    int8 = onnx.load(str(again.artifacts["int8"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
    assert all(np.allclose(inits[k].reshape(-1)[0], v, rtol=1e-3) for k, v in cache["scales"].items())
    assert again.verdicts["int8"].worst >= 0.99


def test_dynamic_batch_is_verified_at_three_sizes_without_shape_ops(tmp_path):
    # 64 px: the batch's handling does not depend on the size, and the README bench test traces this same graph
    res = export(tmp_path, dynamic_batch=(1, 2, 4), img_size=(64, 64))
    ver, rep = res.verdicts["fp32"], res.reports["fp32"]
    assert [s[0] for s in ver.shapes] == [1, 2, 4] and ver.passed
    assert rep.ops.get("Shape", 0) == 0 and rep.forbidden_total == 0
    model = onnx.load(str(res.artifacts["fp32"]))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert get_metadata(model)["batch_profile"] == "1:2:4"
    with OrtRunner(res.artifacts["fp32"]) as r:
        assert r.infer({"input": np.zeros((3, 3, 64, 64), np.float32)})["logits"].shape == (3, 1000)


def test_static_features_export(tmp_path):
    res = export(tmp_path, features=True, img_size=(96, 96))  # strides 4, 8, 16, 32 at any size
    model = onnx.load(str(res.artifacts["fp32"]))
    dims = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert dims == [[1, 64, 24, 24], [1, 128, 12, 12], [1, 256, 6, 6], [1, 512, 3, 3]]
    assert res.reports["fp32"].forbidden_total == 0


def test_static_export_at_non_divisible_size_uses_static_pads(tmp_path):
    res = export(tmp_path, img_size=(96, 96))  # 24, 12, 6, 3 tokens a side: no stage divides into 7x7 windows
    rep = res.reports["fp32"]
    assert rep.ops.get("Pad", 0) > 0 and rep.ops.get("Shape", 0) == 0 and rep.forbidden_total == 0
    assert res.verdicts["fp32"].passed
