"""Triton model repositories: every config.pbtxt is parsed with Triton's own ModelConfig schema and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from triton_helpers import make_tiny_onnx

from twins_trt.cli.triton import main
from twins_trt.errors import TritonConfigError
from twins_trt.triton import spec_from_plan, write_triton_repo


def plan_with_metadata(folder: Path, *, profile_form: str = "flat", dynamic: bool = True, drop: tuple = (),
                       name: str = "svt_s_bdyn.fp16") -> Path:
    """A stand-in engine (no GPU here to build one) and the metadata JSON twins-build writes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / f"{name}.plan"
    plan.write_bytes(b"not a real engine, only copied" * 10)
    b = -1 if dynamic else 1
    prof = {"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [64, 3, 224, 224]} if dynamic else \
        {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [1, 3, 224, 224]}
    trt_names = profile_form == "trt"  # twins-build writes TensorRT DataType names and one profile per input
    meta = {
        "precision": "fp16",
        "variant": "svt_s",
        "inputs": [{"name": "input", "shape": [b, 3, 224, 224], "dtype": "FLOAT" if trt_names else "float32"}],
        "outputs": [{"name": "logits", "shape": [b, 1000], "dtype": "HALF" if trt_names else "float16"}],
        "profile": {"input": prof} if trt_names else prof,
    }
    for key in drop:
        meta.pop(key)
    plan.with_name(plan.name + ".json").write_text(json.dumps(meta))
    return plan


def io(cfg, which: str) -> dict:
    return {t.name: (t.data_type, list(t.dims)) for t in getattr(cfg, which)}


# ---------------------------------------------------------------------------------------------- svt_s ONNX


@pytest.mark.parametrize("instances", [1, 3])
def test_svt_s_onnx_all_precisions(svt_s_onnx, pb2, parse, tmp_path, instances):
    repo = tmp_path / "triton"
    dirs = write_triton_repo(list(svt_s_onnx.values()), repo, instances=instances)
    assert [d.name for d in dirs] == ["svt_s_fp32", "svt_s_fp16", "svt_s_int8"]
    for (precision, src), d in zip(svt_s_onnx.items(), dirs, strict=True):
        cfg = parse(d / "config.pbtxt")
        assert cfg.name == d.name == f"svt_s_{precision}"
        assert cfg.platform == "onnxruntime_onnx"
        assert cfg.max_batch_size == 0  # static batch 1: full dims, no batching by Triton
        assert io(cfg, "input") == {"input": (pb2.TYPE_FP32, [1, 3, 224, 224])}
        assert io(cfg, "output") == {"logits": (pb2.TYPE_FP32, [1, 1000])}
        assert not cfg.HasField("dynamic_batching")
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(instances, pb2.ModelInstanceGroup.KIND_GPU)]
        assert not cfg.HasField("optimization")
        assert (d / "1" / "model.onnx").read_bytes() == src.read_bytes()
    assert not list(repo.rglob("*.partial"))


@pytest.mark.parametrize("precision, mode", [("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")])
def test_onnx_tensorrt_accelerator(svt_s_onnx, parse, tmp_path, precision, mode):
    (d,) = write_triton_repo([svt_s_onnx[precision]], tmp_path, trt_accelerator=True)
    acc = parse(d / "config.pbtxt").optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in acc] == ["tensorrt"]
    assert acc[0].parameters["precision_mode"] == mode
    assert int(acc[0].parameters["max_workspace_size_bytes"]) > 0


def test_onnx_on_cpu_instances(svt_s_onnx, pb2, parse, tmp_path):
    (d,) = write_triton_repo([svt_s_onnx["fp32"]], tmp_path, kind="cpu", instances=2)
    assert [(g.count, g.kind) for g in parse(d / "config.pbtxt").instance_group] == \
        [(2, pb2.ModelInstanceGroup.KIND_CPU)]


# ---------------------------------------------------------------------------------------------- dynamic batch


def test_dynamic_batch_onnx(pb2, parse, tmp_path):
    src = make_tiny_onnx(tmp_path / "export" / "tiny_bdyn.fp32.onnx")
    (d,) = write_triton_repo([src], tmp_path / "repo")
    cfg = parse(d / "config.pbtxt")
    assert d.name == "tiny_bdyn_fp32"
    assert cfg.max_batch_size == 64
    assert io(cfg, "input") == {"input": (pb2.TYPE_FP32, [3, 32, 32])}  # batch left out
    assert io(cfg, "output") == {"logits": (pb2.TYPE_FP32, [5])}
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 64]


def test_dynamic_batch_from_onnx_metadata_without_manifest(parse, tmp_path):
    import onnx

    from twins_trt.export.options import set_metadata

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    src.with_suffix(".json").unlink()
    model = onnx.load(str(src))
    set_metadata(model, {"precision": "fp16", "batch_profile": "1:4:16"})
    onnx.save(model, str(src))
    (d,) = write_triton_repo([src], tmp_path / "repo")
    cfg = parse(d / "config.pbtxt")
    assert d.name == "tiny_fp16" and cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]


def test_dynamic_batch_without_profile_is_an_error(tmp_path):
    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    src.with_suffix(".json").unlink()
    with pytest.raises(TritonConfigError, match="no batch profile"):
        write_triton_repo([src], tmp_path / "repo")


# ---------------------------------------------------------------------------------------------- batching policy


def test_one_batching_decision_for_twins_triton_and_twins_serve(pb2, tmp_path):
    """`batching()` is what config_text writes, for an ONNX platform and for twins-serve's Python backend alike."""
    from twins_trt.triton import Batching, batching, config_text, parse_config, spec_from_onnx

    spec = spec_from_onnx(make_tiny_onnx(tmp_path / "tiny_bdyn.fp32.onnx"))
    assert batching(spec) == Batching(64, (8, 64), 100, True)
    assert batching(spec, 2000, dynamic=False) == Batching(64, (8, 64), 0, False)
    repo_cfg = parse_config(config_text(spec, "m"))
    for b in (batching(spec, 2000), batching(spec, dynamic=False)):
        cfg = parse_config(config_text(spec, "m", 1, "cpu", batch=b, backend="python",
                                       parameters={"artifact": "/x/tiny.onnx"}))
        assert cfg.backend == "python" and not cfg.platform and cfg.parameters["artifact"].string_value == "/x/tiny.onnx"
        assert cfg.max_batch_size == repo_cfg.max_batch_size == 64
        assert list(cfg.input[0].dims) == list(repo_cfg.input[0].dims) == [3, 32, 32]
        assert cfg.HasField("dynamic_batching") == b.dynamic
        if b.dynamic:
            assert list(cfg.dynamic_batching.preferred_batch_size) == list(repo_cfg.dynamic_batching.preferred_batch_size)
            assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    static = spec_from_onnx(make_tiny_onnx(tmp_path / "tiny_b1.fp32.onnx", batch=1))
    assert batching(static) == Batching(0, (), 0, False)
    with pytest.raises(ValueError, match="queue delay must be >= 0"):
        batching(spec, -1)


# ---------------------------------------------------------------------------------------------- plans


@pytest.mark.parametrize("form", ["flat", "trt"])
def test_fp16_plan_from_metadata(pb2, parse, tmp_path, form):
    plan = plan_with_metadata(tmp_path / "engines", profile_form=form)
    (d,) = write_triton_repo([plan], tmp_path / "triton", instances=2)
    cfg = parse(d / "config.pbtxt")
    assert d.name == "svt_s_bdyn_fp16_trt"
    assert cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 64
    assert io(cfg, "input") == {"input": (pb2.TYPE_FP32, [3, 224, 224])}
    assert io(cfg, "output") == {"logits": (pb2.TYPE_FP16, [1000])}
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 64]
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, pb2.ModelInstanceGroup.KIND_GPU)]
    assert (d / "1" / "model.plan").read_bytes() == plan.read_bytes()


def test_static_plan(pb2, parse, tmp_path):
    plan = plan_with_metadata(tmp_path / "engines", dynamic=False, name="svt_s.fp16")
    (d,) = write_triton_repo([plan], tmp_path / "triton")
    cfg = parse(d / "config.pbtxt")
    assert d.name == "svt_s_fp16_trt"
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert io(cfg, "input") == {"input": (pb2.TYPE_FP32, [1, 3, 224, 224])}


def test_onnx_and_plan_side_by_side(svt_s_onnx, parse, tmp_path):
    plan = plan_with_metadata(tmp_path / "engines", dynamic=False, name="svt_s.fp16")
    dirs = write_triton_repo([svt_s_onnx["fp16"], plan], tmp_path / "triton")
    assert [d.name for d in dirs] == ["svt_s_fp16", "svt_s_fp16_trt"]
    assert [parse(d / "config.pbtxt").platform for d in dirs] == ["onnxruntime_onnx", "tensorrt_plan"]


@pytest.mark.parametrize("drop, named", [
    (("inputs",), "'inputs'"),
    (("profile",), "'profile'"),
    (("precision", "outputs"), "'outputs'"),
])
def test_plan_metadata_missing_keys_are_named(tmp_path, drop, named):
    plan = plan_with_metadata(tmp_path, drop=drop)
    with pytest.raises(TritonConfigError, match=named) as e:
        spec_from_plan(plan)
    assert "lacks" in str(e.value) and "it has keys" in str(e.value)


def test_plan_metadata_incomplete_tensor(tmp_path):
    plan = plan_with_metadata(tmp_path)
    meta = json.loads(plan.with_name(plan.name + ".json").read_text())
    del meta["inputs"][0]["dtype"]
    plan.with_name(plan.name + ".json").write_text(json.dumps(meta))
    with pytest.raises(TritonConfigError, match=r"inputs\[0\]\.dtype"):
        spec_from_plan(plan)


def test_plan_without_metadata(tmp_path):
    plan = plan_with_metadata(tmp_path)
    plan.with_name(plan.name + ".json").unlink()
    with pytest.raises(TritonConfigError, match="no metadata file"):
        write_triton_repo([plan], tmp_path / "repo")


def test_plan_unknown_dtype(tmp_path):
    plan = plan_with_metadata(tmp_path)
    meta = json.loads(plan.with_name(plan.name + ".json").read_text())
    meta["inputs"][0]["dtype"] = "FP4X"
    plan.with_name(plan.name + ".json").write_text(json.dumps(meta))
    with pytest.raises(TritonConfigError, match="FP4X"):
        spec_from_plan(plan)


def test_plan_on_cpu_or_with_accelerator_refused(tmp_path):
    plan = plan_with_metadata(tmp_path)
    with pytest.raises(ValueError, match="GPU only"):
        write_triton_repo([plan], tmp_path / "repo", kind="cpu")
    with pytest.raises(ValueError, match="accelerator"):
        write_triton_repo([plan], tmp_path / "repo", trt_accelerator=True)
    assert not (tmp_path / "repo").exists()  # nothing written when a config cannot be made


# ---------------------------------------------------------------------------------------------- names, CLI


def test_names_override_and_duplicates(tmp_path):
    a = make_tiny_onnx(tmp_path / "a" / "tiny.fp32.onnx")
    b = make_tiny_onnx(tmp_path / "b" / "tiny.fp32.onnx")
    with pytest.raises(ValueError, match="both be model 'tiny_fp32'"):
        write_triton_repo([a, b], tmp_path / "repo")
    dirs = write_triton_repo([a, b], tmp_path / "repo", names=["one", "two"])
    assert [d.name for d in dirs] == ["one", "two"]
    with pytest.raises(ValueError, match="one per artifact"):
        write_triton_repo([a, b], tmp_path / "repo", names=["one"])
    with pytest.raises(ValueError, match="not valid folder names"):
        write_triton_repo([a], tmp_path / "repo", names=["../evil"])


def test_rewrite_replaces_in_place(parse, tmp_path):
    src = make_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    write_triton_repo([src], tmp_path / "repo", instances=1)
    (d,) = write_triton_repo([src], tmp_path / "repo", instances=4)
    assert parse(d / "config.pbtxt").instance_group[0].count == 4
    assert sorted(p.name for p in d.rglob("*")) == ["1", "config.pbtxt", "model.onnx"]


def test_cli(tmp_path, parse, capsys):
    src = make_tiny_onnx(tmp_path / "tiny_bdyn.fp32.onnx")
    plan = plan_with_metadata(tmp_path / "engines")
    rc = main([str(src), str(plan), "-o", str(tmp_path / "triton"), "--instances", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "max_batch_size 64" in out and "tritonserver --model-repository=/models" in out
    assert parse(tmp_path / "triton" / "svt_s_bdyn_fp16_trt" / "config.pbtxt").instance_group[0].count == 2


@pytest.mark.parametrize("args, match", [
    (["missing.onnx"], "does not exist"),
    (["model.pt"], "expected an exported .onnx"),
    (["--instances", "0", "X.onnx"], "--instances: 0 is out of range; give a whole number >= 1"),
])
def test_cli_errors(tmp_path, capsys, args, match):
    if "model.pt" in args:
        args = [str(tmp_path / "model.pt")]
        (tmp_path / "model.pt").write_bytes(b"a torch checkpoint, not an artifact")
    if "X.onnx" in args:
        args = [str(make_tiny_onnx(tmp_path / "X.onnx")) if a == "X.onnx" else a for a in args]
    rc = main([*args, "-o", str(tmp_path / "repo")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and match in err
