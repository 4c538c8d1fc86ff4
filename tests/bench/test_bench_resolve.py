"""Which existing artifacts a run may reuse: manifest checks, and engines that are current (under the emulator)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from twins_trt.artifacts.resolve import candidate_stems, engine_covers, ensure_engine, manifest_mismatch, wanted_shape

TRT_TESTS = Path(__file__).resolve().parents[1] / "trt"


def _helper(name: str):
    """tests/trt's helpers (the tiny ONNX maker, the emulator loader), loaded by path under a unique name."""
    key = f"_trt_tests_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TRT_TESTS / f"{name}.py")
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]

MANIFEST = {"variant": "svt_s", "precision": "int8", "features": False, "img_size": [224, 224], "weights": None,
            "batch": {"min": 1, "opt": 8, "max": 64}, "calibration": {"source": "synthetic"}}


def check(manifest=MANIFEST, **kw):
    args = dict(variant="svt_s", precision="int8", img_size=(224, 224), batches=[1, 8], weights=None)
    args.update(kw)
    return manifest_mismatch(manifest, **args)


def test_matching_manifest_is_reused():
    assert check() is None
    assert check(manifest={**MANIFEST, "batch": {"static": 8}}, batches=[8]) is None


def test_mismatches_say_what_differs():
    assert "batch range 1..64" in check(batches=[1, 128])
    assert "precision" in check(precision="fp16")
    assert "img_size" in check(img_size=(256, 256))
    assert "weights" in check(weights="timm")
    assert "calibrated on 'synthetic'" in check(calib_dir="/data/imagenet")
    assert check({}) == "no manifest"


def test_shapes_and_stems():
    assert wanted_shape([8]) == {"batch": 8}
    assert wanted_shape([1, 8]) == {"dynamic_batch": (1, 8, 8)}
    assert candidate_stems("svt_s", (224, 224), [1]) == ["svt_s", "svt_s_bdyn"]
    assert candidate_stems("svt_s", (224, 224), [1, 8]) == ["svt_s_bdyn"]


def _prof(lo, opt, hi):
    return {"input": {"min": [lo, 3, 224, 224], "opt": [opt, 3, 224, 224], "max": [hi, 3, 224, 224]}}


def test_engine_profile_coverage():
    min_max_max = {"profile": _prof(1, 64, 64)}
    assert engine_covers(min_max_max, [64])
    assert not engine_covers(min_max_max, [1, 8, 64])  # takes batch 1, but tuned for 64: not reused for 1
    assert not engine_covers(min_max_max, [128])
    assert engine_covers({"profiles": [_prof(1, b, 64) for b in (1, 8, 64)]}, [1, 8, 64])
    assert engine_covers({"profile": _prof(8, 8, 8)}, [8])  # static
    assert not engine_covers({}, [1])


@pytest.fixture
def emu():
    return _helper("emulator").load()


@pytest.fixture
def tiny(tmp_path):
    tiny = _helper("onnx_tiny")
    return tiny.make_onnx(tmp_path / "export" / "tiny.fp32.onnx", meta={**tiny.DYNAMIC_META, "twins_trt.precision": "fp32"})


def test_an_engine_is_reused_only_while_it_is_current(emu, tiny, tmp_path, monkeypatch):
    engines = tmp_path / "engines"
    said: list[str] = []
    plan = ensure_engine(tiny, [1, 8], engines, say=said.append, trt=emu)
    meta_path = plan.with_name(plan.name + ".json")
    assert said[-1].startswith(f"building {plan}") and "OPT at each of 1,8" in said[-1]
    assert [p["input"]["opt"][0] for p in json.loads(meta_path.read_text())["profiles"]] == [1, 8]

    assert ensure_engine(tiny, [1, 8], engines, say=said.append, trt=emu) == plan
    assert said[-1].startswith(f"reusing {plan}")

    meta = json.loads(meta_path.read_text())  # built by another TensorRT
    meta_path.write_text(json.dumps({**meta, "tensorrt": "10.16.1.11"}))
    ensure_engine(tiny, [1, 8], engines, say=said.append, trt=emu)
    assert said[-1].startswith(f"rebuilding {plan}") and "built with TensorRT 10.16.1.11" in said[-1]

    monkeypatch.setenv("TRT_EMULATOR_DEVICE", "another device")  # for another device
    ensure_engine(tiny, [1, 8], engines, say=said.append, trt=emu)
    assert said[-1].startswith("rebuilding") and "this GPU is another device" in said[-1]

    _helper("onnx_tiny").make_onnx(tiny, meta={"twins_trt.batch_profile": "1:8:8"})  # re-exported
    ensure_engine(tiny, [1, 8], engines, say=said.append, trt=emu)
    assert said[-1].startswith("rebuilding") and "changed since the engine was built" in said[-1]

    ensure_engine(tiny, [1, 4], engines, say=said.append, trt=emu)  # other batches: not tuned for them
    assert said[-1].startswith("rebuilding") and "not tuned for batches [1, 4]" in said[-1]
    assert ensure_engine(tiny, [1, 4], engines, say=said.append, trt=emu) == plan and said[-1].startswith("reusing")


# ---------------------------------------------------------------------------------------------- the README's main job


def _readme_main_job() -> tuple[list[str], list[str]]:
    """(twins-export arguments, twins-bench arguments) of the README's first command, as a new user runs them."""
    import shlex

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "bin/twins-export" in ln and "bin/twins-bench" in ln)
    steps = [shlex.split(step) for step in line.split("&&")]
    export = next(s for s in steps if s[0].endswith("/twins-export"))
    bench = next(s for s in steps if s[0].endswith("/twins-bench"))
    return export[1:], bench[1:]


def test_the_readme_bench_reuses_what_the_readme_export_wrote(tmp_path, monkeypatch):
    """Each piece of work once (issue 22, part 6): the bench step finds every artifact the export step wrote and
    exports nothing (at 64 px; the size changes neither command's reasoning)."""
    import twins_trt.artifacts.resolve as resolve
    from twins_trt.artifacts import read_manifest
    from twins_trt.backends import plan_run
    from twins_trt.bench.run import BenchOptions
    from twins_trt.cli.bench import bench_settings, build_parser
    from twins_trt.cli.export import main as export_main
    from twins_trt.runners.openvino_runner import int8_status, openvino_status

    export_args, bench_args = _readme_main_job()
    small = ["--img-size", "64", "--export-dir", str(tmp_path / "export")]
    assert export_main([*export_args, *small[:2], "--out-dir", small[3], "--calib-size", "8", "--quiet"]) == 0
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "export").glob("*.onnx")}
    assert {n.split(".")[1] for n in written} == {"fp32", "fp16", "int8"}
    # each artifact passed its OpenVINO check too: a miss there makes the bench's openvino rows refuse it.
    # OpenVINO is a dependency of the package, so its absence is a failure here, not a reason to skip the check
    assert openvino_status()[0], openvino_status()[1]
    for name in written:
        p, ov = name.split(".")[1], read_manifest(tmp_path / "export" / name)["openvino"]
        assert ov["verification"]["passed"] or (p == "int8" and not int8_status()[0]), (p, ov["verification"])

    def export_again(*args, **kwargs):
        raise AssertionError(f"the bench exported again: {args}")

    monkeypatch.setattr(resolve, "export_variant", export_again)
    kwargs, caps = bench_settings(build_parser().parse_args([*bench_args, *small]))
    cfg = BenchOptions(**kwargs)
    said: list[str] = []
    resolver = cfg.resolver("svt_s", said.append)
    plan = plan_run(cfg.backends, caps, cfg.device, can_calibrate=resolver.calibration.possible,
                    int8_available=resolver.find("int8") is not None)
    assert plan.onnx_precisions == ["fp32", "fp16", "int8"]
    arts, failed = resolver.artifacts(plan.onnx_precisions)
    assert not failed and {p: a.path.name for p, a in arts.items()} == {
        p: f"svt_s_64x64_bdyn.{p}.onnx" for p in ("fp32", "fp16", "int8")}
    assert all(a.below_bound is None for a in arts.values())
    assert [m.split()[0] for m in said] == ["reusing"] * 3, said
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "export").glob("*.onnx")} == written
