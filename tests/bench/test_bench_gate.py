"""The regression gate: pure functions on result documents, plus its exit code through the CLI."""

from __future__ import annotations

import copy

import pytest
from bench_docs import make_doc

from twins_trt.bench import gate
from twins_trt.errors import RegressionError


def slow_down(doc: dict, backend: str, factor: float) -> dict:
    """The same run with `backend` `factor` times slower in every round (its ratio to torch drops)."""
    rounds = {(r["backend"], r["batch"]): [x * (factor if r["backend"] == backend else 1) for x in r["round_p50_ms"]]
              for r in doc["results"]}
    return make_doc(rounds)


def test_baseline_stores_exactly_the_gated_ratios(doc):
    base = gate.make_baseline(doc, command="twins-bench ...")
    assert base["gated"] == {"svt_s/ort-cpu/b1": pytest.approx(1.25), "svt_s/ort-cpu/b8": pytest.approx(1.4)}
    assert base["kind"] == gate.BASELINE_KIND and "torch" in base["figure"]
    assert base["context"]["env"]["cpu"] == "Test CPU"


def test_identical_run_passes(doc, tmp_path):
    path = gate.write_baseline(doc, tmp_path / "b.json")
    rep = gate.check_regression(gate.read_baseline(path), copy.deepcopy(doc), 0.15)
    assert rep.passed and len(rep.lines) == 2
    gate.enforce(rep)


def test_injected_30_percent_slowdown_fails_with_the_numbers(doc):
    base = gate.make_baseline(doc)
    slow = slow_down(doc, "ort-cpu", 1 / 0.7)  # ORT ratio to torch drops by 30%
    rep = gate.check_regression(base, slow, 0.15, baseline_name="bench/baselines/cpu_svt_s.json")
    assert not rep.passed and len(rep.failures) == 2
    with pytest.raises(RegressionError) as e:
        gate.enforce(rep)
    msg = str(e.value)
    assert "svt_s/ort-cpu/b1" in msg and "bench/baselines/cpu_svt_s.json" in msg
    assert "baseline 1.250, new 0.875 (-30.0%), allowed >= 1.062" in msg


def test_small_slowdown_within_bound_passes(doc):
    rep = gate.check_regression(gate.make_baseline(doc), slow_down(doc, "ort-cpu", 1.10), 0.15)
    assert rep.passed


def test_torch_getting_faster_is_a_regression_of_the_ratio_only_beyond_the_bound(doc):
    # a faster reference lowers every ratio: the gate is about the relative standing of the backends
    rep = gate.check_regression(gate.make_baseline(doc), slow_down(doc, "torch", 0.75), 0.15)
    assert not rep.passed


def test_missing_figure_fails_and_context_differences_are_noted(doc):
    base = gate.make_baseline(doc)
    only_b1 = make_doc({("torch", 1): [100.0], ("ort-cpu", 1): [80.0]}, threads=1)
    rep = gate.check_regression(base, only_b1, 0.15)
    assert not rep.passed and "svt_s/ort-cpu/b8: not measured in this run" in rep.failures[0]
    assert any("threads=2" in n for n in rep.notes)


def test_parse_fraction():
    assert gate.parse_fraction("15%") == pytest.approx(0.15)
    assert gate.parse_fraction("0.2") == pytest.approx(0.2)
    for bad in ("abc", "150%", "-5%", "1"):
        with pytest.raises(ValueError):
            gate.parse_fraction(bad)


def test_read_baseline_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--write-baseline"):
        gate.read_baseline(tmp_path / "none.json")
    (tmp_path / "x.json").write_text('{"kind": "something"}')
    with pytest.raises(ValueError, match="not a twins-bench baseline"):
        gate.read_baseline(tmp_path / "x.json")


def here(doc: dict) -> dict:
    """`doc` as if measured on this machine (a recorded baseline is only accepted where it was recorded)."""
    from twins_trt.bench.env import capture_environment

    out = copy.deepcopy(doc)
    out["env"] = capture_environment(2)
    return out


def test_cli_exit_code_3_on_regression(doc, tmp_path, monkeypatch, capsys):
    from twins_trt.bench import run
    from twins_trt.cli import bench as cli

    doc = here(doc)
    base = gate.write_baseline(doc, tmp_path / "base.json")
    monkeypatch.setattr(run, "run_benchmark", lambda cfg, caps=None, say=print: slow_down(doc, "ort-cpu", 1.5))
    rc = cli.main(["--backends", "torch,ort-cpu", "--batch", "1,8", "-o", str(tmp_path / "out"), "--no-plot", "-q",
                   "--baseline", str(base), "--max-regression", "15%"])
    err = capsys.readouterr().err
    assert rc == 3 and "regressed more than 15%" in err and "svt_s/ort-cpu/b8" in err
    monkeypatch.setattr(run, "run_benchmark", lambda cfg, caps=None, say=print: copy.deepcopy(doc))
    assert cli.main(["--backends", "torch,ort-cpu", "--batch", "1,8", "-o", str(tmp_path / "out"), "--no-plot",
                     "-q", "--baseline", str(base)]) == 0


def test_cli_retry_passes_when_the_slowdown_does_not_reproduce(doc, tmp_path, monkeypatch, capsys):
    from twins_trt.bench import run
    from twins_trt.cli import bench as cli

    doc = here(doc)
    base = gate.write_baseline(doc, tmp_path / "base.json")
    runs = iter([slow_down(doc, "ort-cpu", 1.5), copy.deepcopy(doc)])  # a noisy first try, then a clean one
    monkeypatch.setattr(run, "run_benchmark", lambda cfg, caps=None, say=print: next(runs))
    rc = cli.main(["--backends", "torch,ort-cpu", "--batch", "1,8", "-o", str(tmp_path / "out"), "--name", "g",
                   "--no-plot", "-q", "--baseline", str(base)])
    assert rc == 0 and "measuring again to confirm" in capsys.readouterr().err
    import json

    saved = json.loads((tmp_path / "out" / "g.json").read_text())["gate"]
    assert saved["passed"] and [t["passed"] for t in saved["tries"]] == [False, True]


def test_a_busy_machine_is_noted(doc):
    busy = copy.deepcopy(doc)
    busy["env"]["load_average_at_start"] = [3.2, 2.5, 2.0]
    rep = gate.check_regression(gate.make_baseline(doc), busy, 0.15)
    assert rep.passed and any("machine was busy" in n for n in rep.notes)
    assert not any("busy" in n for n in gate.check_regression(gate.make_baseline(doc), doc, 0.15).notes)


def test_baseline_records_the_machine_fingerprint(doc):
    fp = gate.make_baseline(doc)["fingerprint"]
    assert fp["cpu"] == "Test CPU" and fp["cores"] == 2 and fp["torch"] == "2.x"
    assert set(fp) == {"cpu", "isa", "cores", "gpu", "driver", "torch", "onnxruntime", "tensorrt"}


def test_a_baseline_from_another_machine_is_refused_with_what_differs(doc):
    base = gate.make_baseline(here(doc))
    gate.check_fingerprint(base, here(doc)["env"])  # same machine: accepted
    other = here(doc)
    other["env"]["cpu"] = "Intel(R) Xeon(R) Platinum 8480+"
    other["env"]["isa"] = ["avx2", "avx512f", "amx_tile"]
    other["env"]["versions"]["torch"] = "9.9.9"
    with pytest.raises(gate.FingerprintError) as e:
        gate.check_fingerprint(base, other["env"], "b.json")
    msg = str(e.value)
    assert "b.json was recorded on another machine" in msg and "-> Intel(R) Xeon(R) Platinum 8480+" in msg
    assert "-> 9.9.9" in msg and "amx_tile" in msg and "--against REV" in msg and "--write-baseline" in msg


def test_the_old_format_1_baseline_is_refused_here():
    """The ratio baseline CI used to gate on (AMD EPYC, torch 2.14.1, no ISA flags recorded)."""
    from pathlib import Path

    from twins_trt.bench.env import capture_environment

    old = gate.read_baseline(Path(__file__).parent / "data" / "format1_amd_epyc_torch2141.json")
    with pytest.raises(gate.FingerprintError, match="isa: not recorded"):
        gate.check_fingerprint(old, capture_environment(2))


def test_cli_refuses_a_foreign_baseline_before_measuring(doc, tmp_path, monkeypatch, capsys):
    from twins_trt.bench import run
    from twins_trt.cli import bench as cli

    base = gate.write_baseline(doc, tmp_path / "base.json")  # "Test CPU": not this machine

    def must_not_run(*a, **k):
        raise AssertionError("measured although the baseline was refused")

    monkeypatch.setattr(run, "run_benchmark", must_not_run)
    rc = cli.main(["--backends", "torch,ort-cpu", "--batch", "1,8", "-o", str(tmp_path / "out"), "-q",
                   "--baseline", str(base)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and "cpu: Test CPU -> " in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content, message", [("[1, 2]", "not a twins-bench baseline"),
                                              ("{not json", "not valid JSON")])
def test_read_baseline_bad_files(tmp_path, content, message):
    (tmp_path / "b.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        gate.read_baseline(tmp_path / "b.json")
    with pytest.raises(ValueError, match="is a directory"):
        gate.read_baseline(tmp_path)
