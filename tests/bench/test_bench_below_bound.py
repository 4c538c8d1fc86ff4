"""A backend fails only for its own reason, and speed does not depend on accuracy (issue 22, part 1).

An INT8 export held to a bound it cannot meet (cosine >= 0.99999): the export refuses it, but twins-bench
still times it, from a temporary file, on both runtimes, and flags its rows BELOW BOUND with the figures and
the twins-export command that makes one within the budget; FP32 and FP16 report as usual. The same for
--task seg and for the A/B worker. 64 px, batch 1: the property does not depend on the size.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import twins_trt
from twins_trt.cli.bench import main

UNREACHABLE = "cosine>=0.99999"
FAST = ["--img-size", "64", "--batch", "1", "--calib-synthetic", "--calib-size", "4", "--iters", "1", "--rounds", "1",
        "--warmup", "0", "--no-plot", "--quiet"]


def _bench(tmp: Path, *argv: str) -> dict:
    """twins-bench with the INT8 budget out of reach (every export in it uses the default budget)."""
    import twins_trt.export.int8.budget as budget

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(budget, "DEFAULT_INT8_BUDGET", UNREACHABLE)
        rc = main([*argv, "--export-dir", str(tmp / "export"), "-o", str(tmp / "out"), "--name", "run", *FAST])
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "export": tmp / "export",
            "doc": json.loads((tmp / "out" / "run.json").read_text()) if (tmp / "out" / "run.json").exists() else None}


def _check_flag(flag: dict, *hint: str) -> None:
    assert flag["metric"] == "cosine" and flag["bound"] == 0.99999 and flag["value"] < 0.99999
    assert "temporary" in flag["artifact"]
    assert flag["hint"].startswith("twins-export --variant svt_s") and '--int8-budget "cosine>=0.99999"' in flag["hint"]
    for part in hint:
        assert part in flag["hint"], flag["hint"]


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    return _bench(tmp_path_factory.mktemp("below"), "--variant", "svt_s", "--backends",
                  "torch,ort-cpu,ort-cpu-fp16,ort-cpu-int8,openvino,openvino-fp16,openvino-int8")


def test_int8_below_its_bound_is_timed_and_flagged_while_fp32_and_fp16_report(cls_run):
    r = cls_run
    assert r["rc"] == 0, r["err"][-3000:]
    rows = {x["backend"]: x for x in r["doc"]["results"]}
    assert set(rows) == {"torch", "ort-cpu", "ort-cpu-fp16", "ort-cpu-int8", "openvino", "openvino-fp16",
                         "openvino-int8"}, r["doc"]["skipped"]
    assert not r["doc"]["skipped"]  # no backend failed for another one's reason
    for name in ("ort-cpu", "ort-cpu-fp16", "openvino", "openvino-fp16"):
        assert rows[name]["status"] == "ok" and rows[name]["img_s"] > 0 and "below_bound" not in rows[name]
        assert Path(rows[name]["artifact"]).parent == r["export"]  # the verified exports, reused as usual
    for name in ("ort-cpu-int8", "openvino-int8"):
        row = rows[name]
        assert row["status"] == "ok" and row["img_s"] > 0
        _check_flag(row["below_bound"], "--img-size 64x64", "--int8 --calib-synthetic")
        # timed from a temporary file that is gone with the run, never from (or into) the export folder
        assert Path(row["artifact"]).name.endswith(".int8.BELOW-BOUND.onnx") and not Path(row["artifact"]).exists()
        assert Path(row["artifact"]).parent != r["export"]
    assert sorted(p.name for p in r["export"].glob("*int8*.onnx")) == []
    table = r["out"].splitlines()
    for name in rows:
        line = next(ln for ln in table if ln.split()[:2] == ["svt_s", name])
        assert ("BELOW BOUND" in line) == name.endswith("int8"), line
    flag = rows["ort-cpu-int8"]["below_bound"]
    assert f"svt_s int8 (ort-cpu-int8, openvino-int8): cosine {flag['value']:.4f} < bound 0.99999" in r["out"]
    assert f"an artifact within the budget: {flag['hint']}" in r["out"]


def test_seg_int8_below_its_bound_is_timed_and_flagged(tmp_path):
    r = _bench(tmp_path, "--task", "seg", "--seg-sizes", "64x64", "--variant", "svt_s", "--backends",
               "torch,ort-cpu,ort-cpu-int8")
    assert r["rc"] == 0, r["err"][-3000:]
    doc = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    rows = {x["backend"]: x for x in doc["results"]}
    assert set(rows) == {"torch", "ort-cpu", "ort-cpu-int8"} and not doc["skipped"], doc["skipped"]
    assert "below_bound" not in rows["ort-cpu"] and rows["ort-cpu"]["fps"] > 0
    _check_flag(rows["ort-cpu-int8"]["below_bound"], "--task seg --seg-head fpn", "--img-size 64x64")
    assert rows["ort-cpu-int8"]["fps"] > 0 and not Path(rows["ort-cpu-int8"]["artifact"]).exists()
    line = next(ln for ln in r["out"].splitlines() if "ort-cpu-int8" in ln and "fps" not in ln)
    assert "BELOW BOUND (64x64)" in line
    assert sorted(p.name for p in r["export"].glob("*int8*.onnx")) == []


def test_ab_worker_times_an_int8_below_its_bound(tmp_path):
    """The A/B worker (this revision as its own side) sets up, flags the INT8 and measures it."""
    import twins_trt.bench.ab as ab

    root = Path(twins_trt.__file__).resolve().parents[1]
    boot = ("import runpy, sys; import twins_trt.export.int8.budget as b; "
            f"b.DEFAULT_INT8_BUDGET = {UNREACHABLE!r}; runpy.run_path(sys.argv[1], run_name='__main__')")
    setup = {"cmd": "setup", "variants": ["svt_s"], "backends": ["ort-cpu", "ort-cpu-int8"], "batches": [1],
             "img_size": [64, 64], "threads": 1, "torch_attn": "sdpa", "device": "cpu", "seed": 0,
             "export_dir": str(tmp_path / "export"), "engines_dir": str(tmp_path / "engines")}
    measure = {"cmd": "measure", "variant": "svt_s", "backend": "ort-cpu-int8", "batch": 1, "warmup": 0, "iters": 2}
    lines = "\n".join(json.dumps(x) for x in (setup, measure, {"cmd": "quit"})) + "\n"
    env = {**os.environ, "TWINS_AB_ROOT": str(root), "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", boot, str(ab.WORKER)], input=lines, capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=900)
    replies = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(replies) == 2 and all(x["ok"] for x in replies), (replies, proc.stderr[-3000:])
    flag = replies[0]["below_bound"]["svt_s"]["int8"]
    _check_flag(flag, "--img-size 64x64")
    assert replies[0]["onnx"]["svt_s"]["int8"].endswith(".int8.BELOW-BOUND.onnx")
    assert len(replies[1]["latencies_s"]) == 2
    assert not list(tmp_path.glob("below-bound-*"))  # the worker's temporary folder is gone with it
