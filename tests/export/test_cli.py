"""twins-export as a user meets it: one clear line and a non-zero exit for bad input, nothing half-written."""

from __future__ import annotations

import pytest
import timm
import torch

import twins_trt.export.pipeline as core  # export_variant looks its conversions up here
import twins_trt.export.quantized as quantized
import twins_trt.export.verify as verify
from twins_trt.cli.export import main
from twins_trt.errors import CalibrationDataError, VerificationError


def run(capsys, *argv):
    code = main(["-q", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("argv,message", [
    (["--variant", "swin_t"], "unknown Twins variant 'swin_t'; expected one of pcpvt_s"),
    (["--variant", "svt_s", "--img-size", "225"], "--img-size size 225x225 is not a multiple of 32; nearest valid"),
    (["--variant", "svt_s", "--int8"], "--int8 needs real calibration images: pass --calib-data DIR"),
    (["--variant", "svt_s", "--opset", "17"], "opset 17 is too old"),
    (["--variant", "svt_s", "--int8", "--calib-synthetic", "--opset", "18"], "INT8 needs opset >= 19"),
])
def test_bad_arguments_fail_fast_with_one_line(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, *argv, "-o", tmp_path / "out")
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "--variant", "svt_s", "-o", blocker / "export")
    assert code == 2 and "output folder" in err and "not writable" in err and "-o/--out-dir" in err


@pytest.mark.parametrize("kind,message", [("missing", "does not exist"), ("empty", "no images under"),
                                          ("corrupt", "none of the 2 image file(s) could be read")])
def test_calibration_folder_problems(tmp_path, capsys, kind, message):
    calib = tmp_path / "calib"
    if kind != "missing":
        calib.mkdir()
    if kind == "corrupt":
        (calib / "a.jpg").write_bytes(b"junk")
        (calib / "sub").mkdir()
        (calib / "sub" / "b.png").write_bytes(b"junk")
    out = tmp_path / "out"
    code, _, err = run(capsys, "--variant", "svt_s", "--int8", "--calib-data", calib, "-o", out)
    assert code == 2 and message in err
    assert leftovers(out) == []  # calibration data is read before anything is exported


def test_checkpoint_for_another_variant(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "pcpvt.pth"
    torch.save(timm.create_model("twins_pcpvt_small").state_dict(), path)
    code, _, err = run(capsys, "--variant", "svt_s", "--weights", path, "-o", tmp_path / "out")
    assert code == 2 and "looks like variant 'pcpvt_s'" in err and err.count("\n") == 1
    assert leftovers(tmp_path / "out") == []


def test_failed_verification_leaves_no_artifact(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(verify.TOLERANCES, "fp32", ("max_abs", -1.0))  # nothing can pass
    code, _, err = run(capsys, "--variant", "svt_s", "-o", tmp_path)
    assert code == 1 and "failed verification, nothing written" in err and "max_abs" in err
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_calibration_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    def interrupted(src, dst, opts, calib, cache, *args, **kwargs):
        dst.write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(quantized, "to_int8", interrupted)  # the quantized stage's conversion
    code, _, err = run(capsys, "--variant", "svt_s", "--int8", "--calib-synthetic", "-o", tmp_path)
    assert code == 130 and "interrupted" in err
    names = leftovers(tmp_path)
    assert "svt_s.int8.onnx" not in names and not any("partial" in n for n in names)
    assert "svt_s.fp32.onnx" in names  # what finished before the interrupt stays, whole and verified


def test_success_prints_report_and_engine_hint(tmp_path, capsys, monkeypatch):
    import onnx

    def fp32_as_fp16(src, dst, opts, images=None):  # skip ModelOpt: this test is about the CLI around it
        dst.write_bytes(src.read_bytes())
        return onnx.load(str(dst))

    monkeypatch.setattr(core, "to_fp16", fp32_as_fp16)
    code, out, err = run(capsys, "--variant", "svt_s", "--fp16", "-o", tmp_path, "--engines-dir", tmp_path / "eng")
    assert code == 0, err
    assert "attention chains" in out and "18/18" in out and "PASS" in out
    assert f"twins-build {tmp_path / 'svt_s.fp16.onnx'} -o {tmp_path / 'eng'}" in out
    assert {"svt_s.fp32.onnx", "svt_s.fp32.json", "svt_s.fp16.onnx", "svt_s.report.json"} <= set(leftovers(tmp_path))


def test_library_errors_are_typed():
    with pytest.raises(CalibrationDataError):
        core.ExportOptions("svt_s", precisions=("int8",))
    assert issubclass(VerificationError, ValueError)
