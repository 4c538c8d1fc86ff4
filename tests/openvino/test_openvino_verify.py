"""twins-export verifies every svt_s artifact on OpenVINO against PyTorch, at ONNX Runtime's tolerances."""

from __future__ import annotations

import json
import warnings

import pytest

pytest.importorskip("openvino", reason="openvino is a regular dependency; this install lacks it")

from twins_trt import artifacts  # noqa: E402
from twins_trt.errors import VerificationError  # noqa: E402
from twins_trt.export import ExportOptions, export_variant  # noqa: E402
from twins_trt.export.verify import TOLERANCES  # noqa: E402
from twins_trt.openvino_report import check_export_artifact  # noqa: E402


@pytest.fixture(scope="module")
def svt(tmp_path_factory):
    """svt_s FP32 + FP16 + INT8 (synthetic calibration), batch 1, exported once for the module (~1 min)."""
    out = tmp_path_factory.mktemp("ov_svt")
    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = export_variant(ExportOptions(variant="svt_s", out_dir=out, precisions=("fp16", "int8"),
                                           calib_synthetic=True, calib_size=4, verify_samples=2, progress=False),
                             on_step=said.append)
    return res, said


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_artifact_passes_on_openvino(svt, precision):
    res, said = svt
    ov = json.loads(artifacts.manifest_path(res.artifacts[precision]).read_text())["openvino"]
    ver = ov["verification"]
    assert (ver["metric"], ver["bound"]) == TOLERANCES[precision] == (res.verdicts[precision].metric,
                                                                      res.verdicts[precision].bound)
    ort = res.verdicts[precision]  # OpenVINO sees exactly the inputs ONNX Runtime was verified on
    assert ver["passed"] and (ver["samples"], ver["inputs"]) == (ort.samples, ort.inputs)
    assert ver["inputs"] == ("held-out images" if precision == "int8" else "random")
    worst = ver["worst"]
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
def test_a_mismatch_on_openvino_is_refused(svt):
    from twins_trt.models import create_model

    res, _ = svt
    other = create_model("svt_s", seed=1)  # other weights: the fp32 artifact cannot match them
    with pytest.raises(VerificationError, match="failed verification on OpenVINO.*max_abs"):
        check_export_artifact(res.artifacts["fp32"], "fp32", other, res.options, None, say=lambda _: None)
