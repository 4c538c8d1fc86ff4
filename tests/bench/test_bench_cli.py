"""twins-bench's command line: argument errors, and one small real run (torch + ort-cpu, batch 1, 2 iterations)."""

from __future__ import annotations

import json

import pytest

from twins_trt.cli import bench as cli


@pytest.mark.parametrize("argv, message", [
    (["--backends", "torch,onnx"], "unknown backend(s) 'onnx'"),
    (["--batch", "1,x"], "batch sizes must be positive integers"),
    (["--batch", "0"], "batch sizes must be >= 1"),
    (["--variant", "svt_xl"], "unknown Twins variant 'svt_xl'"),
    (["--max-regression", "abc"], "--max-regression takes a percentage"),
    (["--protocol", "paper", "--batch", "8"], "--protocol paper measures batch 64 only"),
    (["--iters", "3", "--min-seconds", "1"], "not allowed with argument"),
])
def test_argument_errors_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: twins-bench: ") and err.count("\n") == 1


def test_bad_iteration_count_exits_2(capsys, tmp_path):
    assert cli.main(["--iters", "0", "-o", str(tmp_path)]) == 2
    assert "--iters: 0 is out of range; give a whole number >= 1" in capsys.readouterr().err


def test_missing_baseline_exits_2(capsys, tmp_path):
    assert cli.main(["--baseline", str(tmp_path / "nope.json"), "-o", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_backends(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "ort-cpu-int8" in out and "trt-fp16" in out


def test_end_to_end_small_run(svt_export, tmp_path, capsys):
    out = tmp_path / "results"
    rc = cli.main(["--variant", "svt_s", "--backends", "torch,ort-cpu,trt-fp16", "--batch", "1", "--warmup", "1",
                   "--iters", "2", "--rounds", "1", "--threads", "1", "--export-dir", str(svt_export.parent),
                   "-o", str(out), "--name", "e2e", "-q", "--write-baseline", str(tmp_path / "base.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"reusing {svt_export}" in captured.err  # the module's export, not a new one
    doc = json.loads((out / "e2e.json").read_text())
    cells = {(r["backend"], r["batch"]): r for r in doc["results"]}
    assert set(cells) == {("torch", 1), ("ort-cpu", 1)}
    r = cells[("ort-cpu", 1)]
    assert r["iterations"] == 2 and r["warmup_iterations"] == 1 and r["img_s"] > 0
    assert r["runner"]["threads"] == 1 and doc["env"]["threads"] == {"torch": 1, "ort_intra_op": 1}
    assert {"p50", "p90", "p99", "stdev", "mean"} <= set(r["latency_ms"])
    assert r["speedup_vs_torch"] > 0 and r["artifact"] == str(svt_export)
    assert [s["backend"] for s in doc["skipped"]] == ["trt-fp16"]
    assert (out / "e2e.png").stat().st_size > 0 and (out / "e2e.md").is_file()
    base = json.loads((tmp_path / "base.json").read_text())
    assert list(base["gated"]) == ["svt_s/ort-cpu/b1"]
    assert "skipped: svt_s trt-fp16" in captured.out
