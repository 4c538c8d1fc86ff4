"""twins-export's OpenVINO check: every artifact verified on OpenVINO too, with the precision each layer ran in.

The runner's side of the report (what OpenVINO executed, per layer) is `twins_trt.runners.openvino_precision`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twins_trt.export.verify import verify_artifact
from twins_trt.runners.openvino_runner import OpenVinoRunner, int8_status, openvino_status


def check_export_artifact(onnx_path: Path, precision: str, model, opts, images,
                          say: Callable[[str], None], **verify_kwargs) -> dict | None:
    """Verify an artifact on OpenVINO against PyTorch (ONNX Runtime's tolerances) and report its precisions.

    Called by export_variant after the ONNX Runtime check, with the same images, sample count and
    tolerance (`verify_kwargs`, those of verify_artifact); None (and nothing said) when OpenVINO is
    not installed. When OpenVINO's outputs miss the tolerance it warns, and the returned manifest
    entry says so (`verification.passed` false), which keeps the artifact off OpenVINO.
    """
    ok, version = openvino_status()
    if not ok:
        return None
    say(f"verifying {precision} on {version} CPU (f32 hint) against PyTorch fp32")
    runner = OpenVinoRunner(onnx_path, "f32", name="openvino")
    try:
        ver = verify_artifact(onnx_path, precision, model, opts, images, runner=runner, **verify_kwargs)
        rep = runner.precision_report()
    finally:
        runner.deactivate()
    say(f"openvino {ver.line()}")
    say(f"openvino runtime precision: {rep.summary()}")
    if not ver.passed:
        # ONNX Runtime verified the artifact against PyTorch before this, so the graph is right and OpenVINO
        # computes it wrongly: the artifact stays (TensorRT and ONNX Runtime run it correctly), the manifest
        # records the miss, and OpenVinoRunner refuses the artifact from then on (see refusal()).
        exact, why = int8_status() if precision == "int8" else (True, "")
        say(f"WARNING: OpenVINO {version} computes this {precision} artifact wrongly ({ver.metric} {ver.worst:.3g}, "
            f"bound {ver.bound:g}) although ONNX Runtime matched PyTorch; it is written for TensorRT and ONNX Runtime, "
            "and the openvino backends will refuse it" + ("" if exact else f" (likely cause: {why})"))
    summary = rep.to_dict()
    summary.pop("layers")
    return {"openvino": {"version": version, "verification": ver.to_dict(), "precision_report": summary}}
