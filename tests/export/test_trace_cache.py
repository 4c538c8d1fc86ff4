"""The trace cache (export.trace_cache): a model traced once per model, code and shapes; what changes the key; a bad
entry traced again; the folder trimmed to its size, least recently used first."""

from __future__ import annotations

import os

import onnx
import pytest
import torch

from twins_trt.export import ExportOptions, export_variant, trace_cache
from twins_trt.models import create_model
from twins_trt.models.twins import LocallyGroupedAttn


def _graph_bytes(path) -> bytes:
    return onnx.load(str(path)).graph.SerializeToString()


def test_a_second_export_reuses_the_trace_and_verifies_it(tmp_path, monkeypatch):
    calls = []
    real = torch.onnx.export

    def counted(*args, **kwargs):  # the real exporter, counted
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", counted)
    cache = tmp_path / "cache"

    def export(name: str, lines: list):
        opts = ExportOptions("svt_s", out_dir=tmp_path / name, img_size=(64, 64), verify_samples=1, progress=False,
                             trace_cache=cache)
        return export_variant(opts, on_step=lines.append)

    first_lines: list[str] = []
    first = export("a", first_lines)
    assert len(calls) == 1 and not any("trace cache" in line for line in first_lines)
    lines: list[str] = []
    second = export("b", lines)
    assert len(calls) == 1 and any(line.startswith("traced graph reused from the trace cache") for line in lines)
    assert _graph_bytes(first.artifacts["fp32"]) == _graph_bytes(second.artifacts["fp32"])
    assert second.verdicts["fp32"].passed and second.verdicts["fp32"].worst <= 1e-4  # checked against PyTorch again
    assert len(list(cache.glob("*.onnx"))) == 1 and not list(cache.glob(".*partial"))


def test_an_entry_that_does_not_load_is_a_miss_and_is_replaced(tmp_path, caplog):
    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    (tmp_path / "k.onnx").write_bytes(b"half an ONNX file")  # an interrupted copy by hand, a full disk
    assert trace_cache.load(tmp_path, "k") is None and "does not load" in caplog.text
    trace_cache.store(tmp_path, "k", proto)  # the trace that follows a miss replaces it
    assert trace_cache.load(tmp_path, "k").SerializeToString() == proto.SerializeToString()
    assert trace_cache.load(tmp_path, "other") is None and trace_cache.load(None, "k") is None


def test_the_key_follows_the_weights_the_code_and_the_shapes_and_nothing_else(tmp_path, monkeypatch):
    model = create_model("svt_s", seed=0).eval().set_attn_impl("explicit")
    opts = ExportOptions("svt_s", out_dir=tmp_path, img_size=(64, 64))
    key = trace_cache.trace_key(model, opts)
    assert key == trace_cache.trace_key(create_model("svt_s", seed=0).eval().set_attn_impl("explicit"), opts)
    # what the trace does not depend on: the folder, the precisions, calibration, the cache setting
    same = ExportOptions("svt_s", out_dir=tmp_path / "other", img_size=(64, 64), precisions=("fp16",),
                         calib_method="max", trace_cache="off")
    assert trace_cache.trace_key(model, same) == key
    for changed in (ExportOptions("svt_s", out_dir=tmp_path, img_size=(96, 96)),
                    ExportOptions("svt_s", out_dir=tmp_path, img_size=(64, 64), opset=19),
                    ExportOptions("svt_s", out_dir=tmp_path, img_size=(64, 64), dynamic_batch=(1, 2, 4)),
                    ExportOptions("svt_s", out_dir=tmp_path, img_size=(64, 64), features=True)):
        assert trace_cache.trace_key(model, changed) != key
    # a batch profile does not shape the graph: every dynamic-batch export is traced over one range, so one key
    dyn = [ExportOptions("svt_s", out_dir=tmp_path, img_size=(64, 64), dynamic_batch=r)
           for r in ((1, 2, 4), (1, 8, 8), (4, 8, 16), (1, 1, 1))]
    assert len({trace_cache.trace_key(model, o) for o in dyn}) == 1
    assert {trace_cache.traced_batch(o) for o in dyn} == {(2, 1, trace_cache.TRACED_BATCH_MAX)}
    assert trace_cache.traced_batch(opts) is None
    bigger = ExportOptions("svt_s", out_dir=tmp_path, img_size=(64, 64), dynamic_batch=(1, 8, 1 << 17))
    assert trace_cache.traced_batch(bigger) == (2, 1, 1 << 17)  # traced over the whole profile, so its own key
    assert trace_cache.trace_key(model, bigger) != trace_cache.trace_key(model, dyn[0])
    with torch.no_grad():
        w = next(model.parameters())
        w[0].flatten()[0] += 1e-3
        assert trace_cache.trace_key(model, opts) != key
        w[0].flatten()[0] -= 1e-3
    assert trace_cache.trace_key(model, opts) == key
    plain = LocallyGroupedAttn.forward

    def patched(self, x, size):  # new code in a module's forward: a new key (test_graph_report patches one so)
        return plain(self, x, size)

    monkeypatch.setattr(LocallyGroupedAttn, "forward", patched)
    assert trace_cache.trace_key(model, opts) != key


def test_where_the_cache_lives_and_how_it_is_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv(trace_cache.ENV, str(tmp_path / "c"))
    assert trace_cache.cache_dir() == tmp_path / "c"
    assert trace_cache.cache_dir(tmp_path / "d") == tmp_path / "d"
    assert trace_cache.cache_dir("off") is None
    monkeypatch.setenv(trace_cache.ENV, "off")
    assert trace_cache.cache_dir() is None
    monkeypatch.delenv(trace_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert trace_cache.cache_dir() == tmp_path / "xdg" / "twins-trt" / "traces"
    from twins_trt.cli.export import build_parser

    args = build_parser().parse_args(["--variant", "svt_s", "--no-trace-cache"])
    assert args.trace_cache == "off" and build_parser().parse_args(["--variant", "svt_s"]).trace_cache is None


def test_the_folder_is_trimmed_least_recently_used_first(tmp_path):
    for i, name in enumerate(["old", "mid", "new"]):
        p = tmp_path / f"{name}.onnx"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    assert trace_cache.trim(tmp_path, max_bytes=5000) == []
    assert [p.name for p in trace_cache.trim(tmp_path, max_bytes=2000)] == ["old.onnx"]
    os.utime(tmp_path / "mid.onnx")  # used now: the newest
    assert [p.name for p in trace_cache.trim(tmp_path, max_bytes=1000)] == ["new.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["mid.onnx"]


def test_the_size_limit_comes_from_the_environment_and_a_bad_one_is_said_in_a_line(monkeypatch, caplog):
    monkeypatch.delenv(trace_cache.MAX_ENV, raising=False)
    assert trace_cache.max_gb() == trace_cache.DEFAULT_MAX_GB
    monkeypatch.setenv(trace_cache.MAX_ENV, "0.5")
    assert trace_cache.max_gb() == 0.5
    monkeypatch.setenv(trace_cache.MAX_ENV, "lots")
    assert trace_cache.max_gb() == trace_cache.DEFAULT_MAX_GB
    (line,) = [r.getMessage() for r in caplog.records]
    assert "TWINS_TRT_CACHE_MAX_GB='lots' is not a number of GB" in line and "\n" not in line


def test_an_unwritable_cache_costs_the_next_trace_not_this_artifact(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    trace_cache.store(blocked / "traces", "k", proto)  # no exception: a warning, nothing stored
    assert trace_cache.load(blocked / "traces", "k") is None
    with pytest.raises(NotADirectoryError):
        (blocked / "traces").mkdir(parents=True)


def test_a_read_only_entry_is_still_read(tmp_path, monkeypatch):
    proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    trace_cache.store(tmp_path, "k", proto)

    def refused(*args, **kwargs):  # a cache on a read-only mount: its times cannot be set
        raise PermissionError("read-only file system")

    monkeypatch.setattr(trace_cache.os, "utime", refused)
    assert trace_cache.load(tmp_path, "k").SerializeToString() == proto.SerializeToString()
