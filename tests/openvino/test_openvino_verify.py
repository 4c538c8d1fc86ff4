"""twins-export verifies every svt_s artifact on OpenVINO against PyTorch, at ONNX Runtime's tolerances."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is a regular dependency; this install lacks it")

from twins_trt import artifacts  # noqa: E402
from twins_trt.export.openvino_check import check_export_artifact  # noqa: E402
from twins_trt.export.verify import TOLERANCES  # noqa: E402
from twins_trt.runners.openvino_runner import int8_status  # noqa: E402


@pytest.fixture(scope="module")
def svt(svt_s_224):
    """svt_s FP32 + FP16 + INT8 (synthetic calibration), batch 1: the run's shared export (tests/conftest.py)."""
    return svt_s_224, svt_s_224.said


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_artifact_passes_on_openvino(svt, precision):
    res, said = svt
    manifest = res.manifest(precision)
    ov, ort = manifest["openvino"], manifest["verification"]
    ver = ov["verification"]
    assert (ver["metric"], ver["bound"]) == TOLERANCES[precision] == (ort["metric"], ort["bound"]) and ort["passed"]
    # OpenVINO sees exactly the inputs ONNX Runtime was verified on
    assert (ver["samples"], ver["inputs"]) == (ort["samples"], ort["inputs"])
    assert ver["inputs"] == ("held-out images" if precision == "int8" else "random")
    worst = ver["worst"]
    exact, why = int8_status()
    if precision == "int8" and not exact and not ver["passed"]:
        # No VNNI (an AVX2-only EPYC, or ONEDNN_MAX_CPU_ISA=AVX2): OpenVINO's 16-bit pair sums saturate. The miss
        # is recorded and warned about with its likely cause, and the artifact kept for TensorRT and ONNX Runtime.
        assert worst < ver["bound"] and any("likely cause: " + why in s for s in said)
    else:
        assert ver["passed"]
        assert worst <= ver["bound"] if ver["metric"] == "max_abs" else worst >= ver["bound"]
    rep = ov["precision_report"]
    assert rep["layers_total"] == 133 and rep["macs_total"] > 2.5e9  # svt_s: about 2.9 GMAC
    if precision == "int8":  # Q/DQ became INT8 kernels: every layer with Q/DQ ran in INT8
        assert rep["meant_int8"] >= 130 and rep["int8_misses"] == []
        assert rep["by_precision"]["int8"]["mac_share"] > 0.99
    else:
        assert rep["meant_int8"] == 0 and "int8" not in rep["by_precision"]
    lines = [s for s in said if s.startswith("openvino runtime precision")]
    assert len(lines) == 3 and "MatMul/Conv layers" in lines[-1]  # twins-export says it for each artifact


@pytest.mark.slow
def test_a_mismatch_on_openvino_is_recorded_and_the_artifact_kept_off_openvino(svt, tmp_path):
    """OpenVINO missing the tolerance (here: the artifact checked against other weights) is warned about and
    recorded; from then on OpenVinoRunner refuses that artifact, with the figures, instead of running it."""
    import shutil

    from twins_trt.errors import BackendUnavailableError
    from twins_trt.models import create_model
    from twins_trt.runners.openvino_runner import OpenVinoRunner

    res, _ = svt
    other = create_model("svt_s", seed=1)  # other weights: the fp32 artifact cannot match them
    said: list[str] = []
    entry = check_export_artifact(res.artifacts["fp32"], "fp32", other, res.options, None, say=said.append)
    ver = entry["openvino"]["verification"]
    assert ver["passed"] is False and ver["metric"] == "max_abs" and ver["worst"] > ver["bound"]
    assert any(s.startswith("WARNING: OpenVINO") and "computes this fp32 artifact wrongly" in s for s in said)

    onnx_path = shutil.copy(res.artifacts["fp32"], tmp_path / "svt_s.fp32.onnx")
    manifest = json.loads(artifacts.manifest_path(res.artifacts["fp32"]).read_text())
    artifacts.write_json_atomic(artifacts.manifest_path(onnx_path), manifest)
    with OpenVinoRunner(onnx_path) as r:  # the export's own verdict: passed, so it runs
        assert r.infer(np.zeros((1, 3, 224, 224), np.float32))["logits"].shape == (1, 1000)
    artifacts.write_json_atomic(artifacts.manifest_path(onnx_path), {**manifest, **entry})
    with pytest.raises(BackendUnavailableError, match=r"computed svt_s.fp32.onnx wrongly .*max_abs .*openvino.verification"):
        OpenVinoRunner(onnx_path).activate()
