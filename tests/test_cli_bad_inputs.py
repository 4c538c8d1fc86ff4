"""Every command x bad input: one `error:` line naming the problem, the right exit code, no traceback,
and nothing written under a final name. Ctrl-C is raised at a real point mid-run and must exit 130.

All cases run in-process (each command's `main(argv)`), on a small workspace of deliberately broken
files. Tests run as root here, where file modes do not stop reads: the "unreadable" cases use a
FIFO (not a regular file) and a path under a file; the chmod 000 cases run only as another user.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from twins_trt import artifacts

COMMANDS = {c: f"twins_trt.cli.{c}" for c in ("export", "build", "verify", "eval", "bench", "triton")}


def _tiny_onnx(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((5, 3), np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({"kind": "onnx", "precision": "fp32", "batch": {"static": 1}}))
    return path


@pytest.fixture
def ws(tmp_path) -> dict[str, str]:
    """Paths to broken things, by name; `out` is where outputs would go."""
    from PIL import Image

    w = tmp_path / "ws"
    (w / "folder").mkdir(parents=True)
    os.mkfifo(w / "pipe")
    (w / "file.txt").write_text("just text")
    (w / "bad.json").write_text('{"kind": "twins-bench-baseline", ')
    (w / "array.json").write_text("[1, 2, 3]")
    (w / "bad.onnx").write_bytes(b"\x08\x07 this is not protobuf" + bytes(32))
    (w / "bad.pth").write_bytes(b"PK\x03\x04 truncated zip, not a checkpoint")
    for name, meta in [("badmeta", "{not json"), ("nokeys", json.dumps({"tensorrt": "10.16"})),
                       ("arraymeta", "[]")]:
        (w / f"{name}.plan").write_bytes(b"engine bytes")
        (w / f"{name}.plan.json").write_text(meta)  # engine metadata: <stem>.plan.json
    _tiny_onnx(w / "tiny.onnx")
    (w / "data" / "cat").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(w / "data" / "cat" / "a.png")
    paths = {"missing": w / "nope", "folder": w / "folder", "pipe": w / "pipe", "file": w / "file.txt",
             "under": w / "file.txt" / "sub", "bad_json": w / "bad.json", "array_json": w / "array.json",
             "bad_onnx": w / "bad.onnx", "bad_pth": w / "bad.pth", "badmeta_plan": w / "badmeta.plan",
             "nokeys_plan": w / "nokeys.plan", "arraymeta_plan": w / "arraymeta.plan", "tiny": w / "tiny.onnx",
             "data": w / "data", "out": w / "out"}
    return {k: str(v) for k, v in paths.items()}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_fifo()}


def run_case(command: str, argv: list[str], ws: dict[str, str], capsys) -> tuple[int, str, str]:
    main = importlib.import_module(COMMANDS[command]).main
    root = Path(ws["folder"]).parent
    before = files_under(root)
    code = main([a.format(**ws) for a in argv])
    out, err = capsys.readouterr()
    assert files_under(root) == before, f"files appeared: {sorted(files_under(root) - before)}"
    return code, out, err


def check_one_line(err: str, code: int, want_code: int, message: str, prefix: str = "error: ") -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "interrupted:"))]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]
    assert code == want_code, (code, err)


# (command, case id, argv, exit code, what the one line must say)
CASES = [
    # twins-export
    ("export", "weights missing", ["--variant", "svt_s", "--weights", "{missing}", "-o", "{out}"], 2,
     "--weights: {missing} does not exist"),
    ("export", "weights is a folder", ["--variant", "svt_s", "--weights", "{folder}", "-o", "{out}"], 2,
     "{folder} is a folder; expected a regular file"),
    ("export", "weights is a FIFO", ["--variant", "svt_s", "--weights", "{pipe}", "-o", "{out}"], 2,
     "{pipe} is a pipe (FIFO); expected a regular file"),
    ("export", "weights under a file", ["--variant", "svt_s", "--weights", "{under}", "-o", "{out}"], 2,
     "cannot exist: {file} is a file, not a folder"),
    ("export", "corrupt checkpoint", ["--variant", "svt_s", "--weights", "{bad_pth}", "-o", "{out}"], 2,
     "cannot read {bad_pth} as a .pth checkpoint"),
    ("export", "wrong kind of weights file", ["--variant", "svt_s", "--weights", "{bad_json}", "-o", "{out}"], 2,
     "has suffix '.json'; expected .pth, .pt or .safetensors"),
    ("export", "calib-data missing", ["--variant", "svt_s", "--int8", "--calib-data", "{missing}", "-o", "{out}"], 2,
     "--calib-data: {missing} does not exist; give the path of an existing folder"),
    ("export", "calib-data is a file", ["--variant", "svt_s", "--int8", "--calib-data", "{file}", "-o", "{out}"], 2,
     "{file} is a file; expected a folder"),
    ("export", "calib-size 0", ["--variant", "svt_s", "--calib-size", "0"], 2,
     "--calib-size: 0 is out of range; give a whole number >= 1"),
    ("export", "calib-size -1", ["--variant", "svt_s", "--calib-size", "-1"], 2,
     "--calib-size: -1 is out of range"),
    ("export", "img-size 0", ["--variant", "svt_s", "--img-size", "0"], 2, "--img-size: '0' is not a size"),
    ("export", "batch 0", ["--variant", "svt_s", "--batch", "0"], 2, "--batch: 0 is out of range"),
    ("export", "verify-samples 0", ["--variant", "svt_s", "--verify-samples", "0"], 2, "--verify-samples: 0 is out"),
    ("export", "dynamic-batch out of order", ["--variant", "svt_s", "--dynamic-batch", "8:1:4"], 2,
     "need 1 <= MIN <= OPT <= MAX"),
    ("export", "unwritable -o", ["--variant", "svt_s", "-o", "{under}"], 2,
     "output folder {under} is not writable: {file} is a file, not a folder"),
    ("export", "unknown variant", ["--variant", "svt_xl", "-o", "{out}"], 2, "unknown Twins variant 'svt_xl'"),
    # twins-build (input checks come before TensorRT is looked for)
    ("build", "onnx missing", ["{missing}"], 2, "{missing} does not exist"),
    ("build", "onnx is a folder", ["{folder}"], 2, "{folder} is a folder; expected a regular file"),
    ("build", "onnx is a FIFO", ["{pipe}"], 2, "{pipe} is a pipe (FIFO)"),
    ("build", "corrupt onnx", ["{bad_onnx}", "-o", "{out}"], 2, "{bad_onnx} is not a readable ONNX model"),
    ("build", "wrong kind: JSON as ONNX", ["{bad_json}", "-o", "{out}"], 2, "{bad_json} is not a readable ONNX model"),
    ("build", "timing cache is a folder", ["{tiny}", "--timing-cache", "{folder}"], 2,
     "--timing-cache: {folder} is a folder; expected a file name to write"),
    ("build", "timing cache is a FIFO", ["{tiny}", "--timing-cache", "{pipe}"], 2, "{pipe} is a pipe (FIFO)"),
    ("build", "timing cache under a file", ["{tiny}", "--timing-cache", "{under}/t.cache"], 2,
     "is a file, not a folder"),
    ("build", "workspace 0", ["{tiny}", "--workspace", "0"], 2, "--workspace: 0 is out of range; give a finite"),
    ("build", "batch 0", ["{tiny}", "--batch", "0"], 2, "--batch: 0 is out of range"),
    ("build", "profile out of order", ["{tiny}", "--profile", "8:1:4"], 2, "need 1 <= MIN <= OPT <= MAX"),
    ("build", "unwritable -o", ["{tiny}", "-o", "{under}"], 2, "output folder {under} is not writable"),
    # twins-verify (metadata is checked before TensorRT is looked for)
    ("verify", "engine missing", ["{missing}"], 2, "{missing} does not exist"),
    ("verify", "engine is a folder", ["{folder}"], 2, "{folder} is a folder"),
    ("verify", "corrupt plan metadata", ["{badmeta_plan}"], 2, "is not valid JSON"),
    ("verify", "metadata without onnx/profile", ["{nokeys_plan}"], 2, "lacks 'profile' and 'onnx'"),
    ("verify", "metadata is a JSON array", ["{arraymeta_plan}"], 2, "holds a JSON list, not an object"),
    ("verify", "onnx missing", ["{nokeys_plan}", "--onnx", "{missing}"], 2, "--onnx: {missing} does not exist"),
    ("verify", "batch 0", ["{nokeys_plan}", "--batch", "0"], 2, "--batch: 0 is out of range"),
    ("verify", "seed -1", ["{nokeys_plan}", "--seed", "-1"], 2, "--seed: -1 is out of range; give a whole number >= 0"),
    ("verify", "weights is a folder", ["{nokeys_plan}", "--weights", "{folder}"], 2, "{folder} is a folder"),
    # twins-eval
    ("eval", "data missing", ["--variant", "svt_s", "--data", "{missing}", "-o", "{out}"], 2,
     "evaluation folder {missing} does not exist"),
    ("eval", "data is a file", ["--variant", "svt_s", "--data", "{file}", "-o", "{out}"], 2,
     "--data {file} is a file; expected a folder"),
    ("eval", "class map missing", ["--variant", "svt_s", "--data", "{data}", "--class-map", "{missing}"], 2,
     "--class-map: {missing} does not exist"),
    ("eval", "class map is a folder", ["--variant", "svt_s", "--data", "{data}", "--class-map", "{folder}"], 2,
     "{folder} is a folder"),
    ("eval", "class map is a FIFO", ["--variant", "svt_s", "--data", "{data}", "--class-map", "{pipe}"], 2,
     "{pipe} is a pipe (FIFO)"),
    ("eval", "corrupt class map JSON", ["--variant", "svt_s", "--data", "{data}", "--class-map", "{bad_json}",
                                        "-o", "{out}"], 2, "class map {bad_json} is not valid JSON"),
    ("eval", "corrupt checkpoint", ["--variant", "svt_s", "--data", "{data}", "--weights", "{bad_pth}",
                                    "--backends", "torch", "-o", "{out}"], 2, "cannot read {bad_pth} as a .pth"),
    ("eval", "threads -1", ["--variant", "svt_s", "--data", "{data}", "--threads", "-1"], 2,
     "--threads: -1 is out of range; give a whole number >= 1"),
    ("eval", "limit 0", ["--variant", "svt_s", "--data", "{data}", "--limit", "0"], 2, "--limit: 0 is out of range"),
    ("eval", "calib-size 0", ["--variant", "svt_s", "--data", "{data}", "--calib-size", "0"], 2, "--calib-size: 0"),
    ("eval", "unwritable -o", ["--variant", "svt_s", "--data", "{data}", "-o", "{under}"], 2,
     "output folder {under} is not writable"),
    ("eval", "unknown backend", ["--variant", "svt_s", "--data", "{data}", "--backends", "ort-int4", "-o", "{out}"],
     2, "unknown backend(s) 'ort-int4'"),
    # twins-bench
    ("bench", "baseline missing", ["--baseline", "{missing}", "-o", "{out}"], 2, "--baseline: {missing} does not exist"),
    ("bench", "baseline is a folder", ["--baseline", "{folder}", "-o", "{out}"], 2, "{folder} is a folder"),
    ("bench", "baseline is a FIFO", ["--baseline", "{pipe}", "-o", "{out}"], 2, "{pipe} is a pipe (FIFO)"),
    ("bench", "corrupt baseline JSON", ["--backends", "torch", "--baseline", "{bad_json}", "-o", "{out}"], 2,
     "baseline {bad_json} is not valid JSON"),
    ("bench", "baseline holds a JSON array", ["--backends", "torch", "--baseline", "{array_json}", "-o", "{out}"], 2,
     "{array_json} is not a twins-bench baseline"),
    ("bench", "img-size 0", ["--img-size", "0"], 2, "--img-size: '0' is not a size: write H or HxW with positive"),
    ("bench", "img-size -224", ["--img-size=-224x224"], 2, "--img-size: '-224x224' is not a size"),
    ("bench", "unwritable -o", ["-o", "{under}"], 2, "output folder {under} is not writable"),
    ("bench", "write-baseline is a folder", ["--write-baseline", "{folder}"], 2,
     "--write-baseline: {folder} is a folder; expected a file name to write"),
    ("bench", "write-baseline under a file", ["--write-baseline", "{under}/b.json"], 2,
     "cannot write {under}/b.json: output folder {under} is not writable"),
    ("bench", "iters 0", ["--iters", "0"], 2, "--iters: 0 is out of range"),
    ("bench", "threads 0", ["--threads", "0"], 2, "--threads: 0 is out of range"),
    ("bench", "warmup -1", ["--warmup", "-1"], 2, "--warmup: -1 is out of range; give a whole number >= 0"),
    ("bench", "min-seconds 0", ["--min-seconds", "0"], 2, "--min-seconds: 0 is out of range; give a finite number > 0"),
    ("bench", "calib-data missing", ["--calib-data", "{missing}"], 2, "--calib-data: {missing} does not exist"),
    # twins-triton
    ("triton", "artifact missing", ["{missing}", "-o", "{out}"], 2, "{missing} does not exist"),
    ("triton", "artifact is a folder", ["{folder}", "-o", "{out}"], 2, "{folder} is a folder"),
    ("triton", "artifact is a FIFO", ["{pipe}", "-o", "{out}"], 2, "{pipe} is a pipe (FIFO)"),
    ("triton", "corrupt onnx", ["{bad_onnx}", "-o", "{out}"], 2, "{bad_onnx} is not a readable ONNX file"),
    ("triton", "wrong kind of file", ["{file}", "-o", "{out}"], 2, "expected an exported .onnx or a TensorRT .plan"),
    ("triton", "corrupt plan metadata", ["{badmeta_plan}", "-o", "{out}"], 2, "is not valid JSON"),
    ("triton", "plan metadata is a JSON array", ["{arraymeta_plan}", "-o", "{out}"], 2, "must be a JSON object"),
    ("triton", "instances 0", ["{tiny}", "--instances", "0", "-o", "{out}"], 2, "--instances: 0 is out of range"),
    ("triton", "version 0", ["{tiny}", "--version", "0", "-o", "{out}"], 2, "--version: 0 is out of range"),
    ("triton", "unwritable -o", ["{tiny}", "-o", "{under}"], 2, "output folder {under} is not writable"),
]


@pytest.mark.parametrize("command, case, argv, code, message", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input(command, case, argv, code, message, ws, capsys):
    rc, _, err = run_case(command, argv, ws, capsys)
    check_one_line(err, rc, code, message.format(**ws))


def test_the_table_covers_every_command_with_enough_pairs():
    assert {c[0] for c in CASES} | set(INTERRUPTS) == set(COMMANDS)
    assert len(CASES) + len(INTERRUPTS) >= 40


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway; the FIFO and path-under-a-file "
                                              "cases stand in for an unreadable file")
@pytest.mark.parametrize("command, argv", [
    ("export", ["--variant", "svt_s", "--weights", "{locked}"]),
    ("build", ["{locked}"]),
    ("eval", ["--variant", "svt_s", "--data", "{data}", "--class-map", "{locked}"]),
])
def test_unreadable_file(command, argv, ws, capsys):
    locked = Path(ws["folder"]).parent / "locked.pth"
    locked.write_bytes(b"x")
    locked.chmod(0)
    rc, _, err = run_case(command, argv, {**ws, "locked": str(locked)}, capsys)
    check_one_line(err, rc, 2, f"{locked} cannot be read (permission denied)")


# ---------------------------------------------------------------------------------------------- Ctrl-C


def _interrupt_export(monkeypatch, ws):
    import twins_trt.export.pipeline as pipeline

    def half_written_export(model, path, opts, *step):
        Path(path).write_bytes(b"half an ONNX file")  # the temporary file has content when Ctrl-C arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "torch_to_onnx", half_written_export)
    return ["--variant", "svt_s", "-q", "-o", ws["out"]]


def _interrupt_build(monkeypatch, ws):
    import twins_trt.trt as trt
    import twins_trt.trt.build as build

    def half_written_build(onnx_path, out_dir, **kw):
        with artifacts.atomic_path(Path(out_dir) / "tiny.plan") as tmp:
            tmp.write_bytes(b"half an engine")
            raise KeyboardInterrupt

    monkeypatch.setattr(trt, "tensorrt_status", lambda trt=None: (True, "TensorRT (faked for this test)"))
    monkeypatch.setattr(build, "build_engine", half_written_build)
    return [ws["tiny"], "-o", ws["out"]]


def _interrupt_verify(monkeypatch, ws):
    import twins_trt.trt as trt
    import twins_trt.trt.verify as verify

    meta = Path(ws["nokeys_plan"]).with_suffix(".plan.json")
    meta.write_text(json.dumps({"onnx": ws["tiny"], "profile": {"input": {"min": [1], "opt": [1], "max": [1]}}}))

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trt, "tensorrt_status", lambda trt=None: (True, "TensorRT (faked for this test)"))
    monkeypatch.setattr(verify, "verify_engine", interrupted)
    return [ws["nokeys_plan"]]


def _interrupt_eval(monkeypatch, ws):
    import twins_trt.eval.dataset as dataset

    def interrupted(*a, **kw):  # the model is built and the runners are open: Ctrl-C while images load
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "load_images", interrupted)
    return ["--variant", "svt_s", "--data", ws["data"], "--backends", "torch", "-q", "-o", ws["out"]]


def _interrupt_triton(monkeypatch, ws):
    import shutil

    import twins_trt.triton as triton

    def half_copied(src, dst):
        with artifacts.atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
            raise KeyboardInterrupt

    monkeypatch.setattr(triton, "_copy_atomic", half_copied)
    return [ws["tiny"], "-o", ws["out"]]


def _interrupt_bench(monkeypatch, ws):
    import twins_trt.bench.measure as measure

    def interrupted(*a, **kw):  # model built, runner open, warm-up done: Ctrl-C while timing
        raise KeyboardInterrupt

    monkeypatch.setattr(measure, "time_iterations", interrupted)
    return ["--backends", "torch", "--batch", "1", "--warmup", "0", "--iters", "1", "--rounds", "1", "-q",
            "-o", ws["out"], "--write-baseline", ws["out"] + "/b.json"]


INTERRUPTS = {"bench": _interrupt_bench, "export": _interrupt_export, "build": _interrupt_build, "verify": _interrupt_verify,
              "eval": _interrupt_eval, "triton": _interrupt_triton}


@pytest.mark.parametrize("command", list(INTERRUPTS))
def test_ctrl_c_mid_run(command, ws, monkeypatch, capsys):
    argv = INTERRUPTS[command](monkeypatch, ws)
    rc, _, err = run_case(command, argv, ws, capsys)
    check_one_line(err, rc, 130, "nothing was written under a final name", prefix="interrupted: ")
    assert not [p for p in Path(ws["folder"]).parent.rglob("*") if p.is_file() and ".partial" in p.name]
    if command == "export":  # the model was built with random weights before the interrupt: one clean line
        assert err.splitlines()[0].startswith("warning: svt_s has RANDOM weights; its outputs are meaningless")
        assert "RandomWeightsWarning" not in err and ".py:" not in err


def test_unexpected_errors_are_one_line_with_a_hint(ws, monkeypatch, capsys):
    import twins_trt.triton as triton

    def bug(*a, **kw):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(triton, "write_triton_repo", bug)
    rc, _, err = run_case("triton", [ws["tiny"], "-o", ws["out"]], ws, capsys)
    check_one_line(err, rc, 2, "unexpected ZeroDivisionError: division by zero (run with -v for the traceback)")
    rc, _, err = run_case("triton", [ws["tiny"], "-o", ws["out"], "-v"], ws, capsys)
    assert rc == 2 and "Traceback" in err  # -v shows it


def test_os_error_on_a_user_path_names_the_path(ws, monkeypatch, capsys):
    import twins_trt.triton as triton

    def gone(*a, **kw):
        raise IsADirectoryError(21, "Is a directory", ws["folder"])

    monkeypatch.setattr(triton, "write_triton_repo", gone)
    rc, _, err = run_case("triton", [ws["tiny"], "-o", ws["out"]], ws, capsys)
    check_one_line(err, rc, 2, f"error: {ws['folder']}: is a directory")


def test_warnings_are_one_clean_line_from_the_cli(ws, capsys):
    import warnings

    from twins_trt.cli.common import one_line_warnings, warning_line
    from twins_trt.models import RandomWeightsWarning

    with one_line_warnings():
        warnings.warn("twins_trt: svt_s has RANDOM weights; its outputs are meaningless", RandomWeightsWarning,
                      stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: svt_s has RANDOM weights; its outputs are meaningless\n"
    assert warning_line("twins_trt: a\n  b") == "warning: a b"
    with pytest.warns(RandomWeightsWarning):  # library callers keep Python's warnings
        warnings.warn("twins_trt: x", RandomWeightsWarning, stacklevel=1)
