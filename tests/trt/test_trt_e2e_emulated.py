"""The whole TensorRT path, end to end on svt_s, under the TensorRT emulator (CPU, ONNX Runtime inside).

twins-build writes a plan and its metadata; twins-verify prints PASS for FP32, FP16 and INT8 engines and
for a backbone (--features) engine; the trt-* backends of twins-bench and twins-eval run and are labelled
emulated. One export of each artifact per run, shared with the triton and openvino tests (batch 1). INT8 is
calibrated on 16 synthetic inputs, the distribution twins-verify checks on: with random weights svt_s INT8 reaches
cosine ~0.990 against PyTorch, right at the INT8 bound (0.99); fewer samples, or photographs, fall just below it.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import pytest
from emulator import installed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    try:
        from image_folders import make_image_folder
    finally:
        sys.path.pop(0)
    return make_image_folder(tmp_path_factory.mktemp("photos"), corrupt=False)


@pytest.fixture(scope="module")
def exports(svt_s_224, tmp_path_factory):
    """The run's shared svt_s FP32/FP16/INT8 export (tests/conftest.py) and a backbone (--features) export at 96 px:
    the four feature maps are built and verified alike at any size, and test_export's static features export traces
    this same graph (one trace per run, from the run's trace cache)."""
    from twins_trt.export import ExportOptions, export_variant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = export_variant(ExportOptions(variant="svt_s", out_dir=tmp_path_factory.mktemp("export"),
                                                features=True, img_size=(96, 96), verify_samples=1,
                                                progress=False))
    return {**svt_s_224.artifacts, "features": backbone.artifacts["fp32"]}


@pytest.fixture(scope="module")
def emulator():
    with installed() as mod:
        yield mod


@pytest.fixture(scope="module")
def engines_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.mark.parametrize("artifact", ["fp32", "fp16", "int8", "features"])
def test_build_then_verify_passes(emulator, exports, engines_dir, artifact, capsys):
    from twins_trt.cli.build import main as build
    from twins_trt.cli.verify import main as verify

    onnx = exports[artifact]
    assert build([str(onnx), "-o", str(engines_dir)]) == 0
    plan = engines_dir / f"{onnx.stem}.plan"
    meta = json.loads(plan.with_name(plan.name + ".json").read_text())
    assert meta["emulated"] is True and meta["onnx"] == str(onnx)
    assert json.loads(onnx.with_suffix(".json").read_text())["kind"] == "onnx"  # the manifest is intact
    capsys.readouterr()

    assert verify([str(plan)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("PASS", "FAIL"))]
    outputs = [f"feat_s{s}" for s in (4, 8, 16, 32)] if artifact == "features" else ["logits"]
    assert len(lines) == 2 * len(outputs) and all(line.startswith("PASS trt (emulated) vs ") for line in lines), lines
    assert {o for o in outputs if any(f"[{o}]" in line for line in lines)} == set(outputs)
    if artifact in PERTURB:
        _verify_fails_on_a_perturbed_engine(plan, onnx, PERTURB[artifact], capsys)


# The emulator's test-only switch: fp16 perturbs the last LayerNormalization's output, int8 drops the last Q/DQ scale.
# (Early layers would not do: with random weights, perturbing svt_s's first MatMul moves the logits' cosine by 1e-6.)
PERTURB = {"fp16": "last-layernorm", "int8": "qdq-scale"}


def _verify_fails_on_a_perturbed_engine(plan, onnx_path, switch, capsys):
    """The same engine file, computing something else: twins-verify must FAIL, say by how much, and exit 1.
    (Without this, a verify that compares ONNX Runtime with ONNX Runtime could never fail.)"""
    import os

    import onnx

    from twins_trt.cli.verify import main as verify

    if switch == "last-layernorm":
        switch = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node
                  if n.op_type == "LayerNormalization"][-1]
    os.environ["TRT_EMULATOR_PERTURB"] = switch
    try:
        rc = verify([str(plan)])
    finally:
        del os.environ["TRT_EMULATOR_PERTURB"]
    captured = capsys.readouterr()
    print(captured.out, captured.err)  # the figures, for the record (pytest -s)
    fails = [line for line in captured.out.splitlines() if line.startswith("FAIL")]
    assert rc == 1, captured.out + captured.err
    assert fails and all(line.startswith(f"FAIL trt (emulated, perturbed: {switch}) vs ") for line in fails), fails
    assert "max |diff|" in fails[0] and "cosine" in fails[0] and "(need cosine >= " in fails[0]
    assert "comparisons failed" in captured.err  # the one-line error names each miss with its figure and bound
    assert re.search(r"\[logits\] cosine -?\d+\.\d+ < 0\.99", captured.err), captured.err


def test_twins_bench_runs_trt_labelled_emulated(emulator, exports, engines_dir, tmp_path, capsys):
    from twins_trt.cli.bench import main

    rc = main(["--variant", "svt_s", "--backends", "torch,trt-fp16", "--batch", "1", "--iters", "2", "--warmup", "1",
               "--rounds", "1", "--export-dir", str(exports["fp16"].parent), "--engines-dir", str(engines_dir),
               "-o", str(tmp_path), "--name", "emu", "--no-plot", "-q"])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads((tmp_path / "emu.json").read_text())
    trt = [r for r in doc["results"] if r["runtime"] == "trt"]
    assert [r["backend"] for r in trt] == ["trt-fp16 (emulated)"] and trt[0]["emulated"] is True
    assert trt[0]["runner"]["tensorrt"].endswith("+emulator") and trt[0]["img_s"] > 0
    assert "trt-fp16 (emulated)" in out

    from twins_trt.bench.gate import gated_figures

    assert not [k for k in gated_figures(doc) if "trt" in k]  # never a baseline or gate figure


def test_twins_eval_runs_trt_labelled_emulated(emulator, exports, engines_dir, photos, tmp_path, capsys):
    from twins_trt.cli.eval import main

    rc = main(["--variant", "svt_s", "--data", str(photos), "--backends", "torch,trt-fp16", "--limit", "4",
               "--export-dir", str(exports["fp16"].parent), "--engine-dir", str(engines_dir),
               "-o", str(tmp_path / "eval"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(next((tmp_path / "eval").glob("*.eval.json")).read_text())
    trt = [b for b in doc["backends"] if b["name"].startswith("trt-fp16")]
    assert len(trt) == 1 and trt[0]["name"] == "trt-fp16 (emulated)" and trt[0]["status"] == "ok", doc["backends"]
    assert trt[0]["images"] == 4 and trt[0]["cosine_min"] >= 0.999  # random weights: agreement means little
