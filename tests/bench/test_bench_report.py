"""Console table, Markdown, JSON and PNG from a result document; written atomically."""

from __future__ import annotations

import json

import matplotlib.figure
import pytest
from bench_docs import make_doc

from twins_trt.bench.report import format_markdown, format_table, write_reports
from twins_trt.bench.run import PAPER_FIGURES


def test_table_has_speedups_and_skips(doc):
    text = format_table(doc)
    assert "ort-cpu" in text and "1.25x" in text and "1.40x" in text
    assert "skipped: svt_s trt-fp16: TensorRT is not importable here" in text
    md = format_markdown(doc)
    assert md.startswith("# twins-bench: svt_s") and "| svt_s | ort-cpu | 8 |" in md and "Test CPU" in md


def test_paper_figures_beside_ours():
    d = make_doc({("torch", 64): [640.0], ("ort-cpu", 64): [320.0]})
    d["paper"] = {"svt_s": PAPER_FIGURES["svt_s"]}
    text = format_table(d)
    assert "PyTorch 1059 img/s, TensorRT 1732 img/s (1.64x)" in text
    assert "ours  (CPU Test CPU, batch 64): svt_s PyTorch 100 img/s, ort-cpu 200 img/s (2.00x)" in text


def test_reports_written(doc, tmp_path):
    paths = write_reports(doc, tmp_path / "out", stem="run")
    assert set(paths) == {"json", "md", "png"}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = json.loads(paths["json"].read_text())
    assert back["results"][0]["img_s"] == pytest.approx(doc["results"][0]["img_s"])
    assert back["outputs"]["png"].endswith("run.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.json", "run.md", "run.png"]


def test_a_failed_write_leaves_nothing_behind(doc, tmp_path, monkeypatch):
    def broken_savefig(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        write_reports(doc, tmp_path, stem="run")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "run.png" not in left and not [n for n in left if n.endswith(".partial")]
