"""Recorded-baseline regression gate (`--baseline FILE`), for users' fixed runners.

The project's own CI gates with `--against REV` instead (bench/ab.py): both revisions measured on
the same machine in one run. A recorded baseline holds only on the machine it was recorded on, so it
carries that machine's fingerprint (CPU model and ISA flags, cores, GPU and driver, torch, ONNX
Runtime and TensorRT versions) and is refused anywhere else, never turned into a false regression.

The gated figure of a (variant, backend, batch) cell is its `speedup_vs_torch`: the median over
alternating rounds of PyTorch fp32 p50 / backend p50, both measured in the same process. Raw
latency moves with the machine (and with whoever else shares it); a ratio measured side by side
moves only when one side really changed, such as ONNX Runtime left with fewer threads than torch,
or a graph that got slower. The baseline stores exactly the gated ratios, plus context.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from twins_trt.artifacts import write_json_atomic
from twins_trt.backends import REFERENCE
from twins_trt.bench.env import fingerprint, fingerprint_differences
from twins_trt.errors import FingerprintError, RegressionError

BASELINE_KIND = "twins-bench-baseline"
FIGURE = ("speedup_vs_torch: backend img/s / PyTorch eager fp32 img/s at the same batch in the same run "
          "(median over rounds of the ratio of p50 latencies)")


def parse_fraction(text: str | float) -> float:
    """`"15%"` or `"0.15"` -> 0.15. ValueError outside [0, 1)."""
    s = str(text).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%?)", s)
    if not m:
        raise ValueError(f"--max-regression takes a percentage like 15% or a fraction like 0.15, got {s!r}")
    value = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 <= value < 1:
        raise ValueError(f"--max-regression must be between 0% and 100%, got {s!r}")
    return value


def figure_key(variant: str, backend: str, batch: int) -> str:
    return f"{variant}/{backend}/b{batch}"


def gated_figures(doc: dict) -> dict[str, float]:
    """key -> speedup_vs_torch for every measured cell other than the reference itself."""
    return {figure_key(r["variant"], r["backend"], r["batch"]): float(r["speedup_vs_torch"])
            for r in doc["results"]
            if r.get("status") == "ok" and r["backend"] != REFERENCE and r.get("speedup_vs_torch") is not None
            and not r.get("emulated")}  # TensorRT-emulator figures are not TensorRT's: never gated or baselined


def make_baseline(doc: dict, command: str | None = None) -> dict:
    figures = gated_figures(doc)
    if not figures:
        raise ValueError("nothing to gate: the run measured no backend beside the PyTorch reference")
    cfg = doc["config"]
    return {
        "kind": BASELINE_KIND,
        "format": 2,
        "figure": FIGURE,
        "fingerprint": fingerprint(doc["env"]),
        "gated": figures,
        "command": command,
        "context": {
            "env": doc["env"],
            "config": {k: cfg.get(k) for k in ("variants", "backends", "batches", "img_size", "warmup", "iters",
                                               "min_seconds", "rounds", "threads", "torch_device", "torch_attn")},
            "img_s": {figure_key(r["variant"], r["backend"], r["batch"]): round(r["img_s"], 2)
                      for r in doc["results"] if r.get("status") == "ok"},
        },
    }


def write_baseline(doc: dict, path: str | os.PathLike, command: str | None = None) -> Path:
    return write_json_atomic(path, make_baseline(doc, command))


def read_baseline(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"baseline {path} does not exist; write one with --write-baseline {path}") from None
    except IsADirectoryError:
        raise ValueError(f"baseline {path} is a directory; give the JSON file --write-baseline wrote") from None
    except OSError as e:
        raise ValueError(f"baseline {path} cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"baseline {path} is not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND or not isinstance(data.get("gated"), dict):
        kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a twins-bench baseline (kind {kind!r}); write one with --write-baseline")
    return data


def recorded_fingerprint(baseline: dict) -> dict:
    """The baseline's machine; format 1 (no fingerprint) falls back on the environment it stored."""
    return baseline.get("fingerprint") or fingerprint((baseline.get("context") or {}).get("env") or {})


def check_fingerprint(baseline: dict, env: dict, name: str = "baseline") -> None:
    """FingerprintError naming what differs when `baseline` was not recorded on a machine like this one."""
    diffs = fingerprint_differences(recorded_fingerprint(baseline), fingerprint(env))
    if diffs:
        raise FingerprintError(
            f"{name} was recorded on another machine or with other libraries ({'; '.join(diffs)}), so its ratios "
            "cannot be compared here: gate with --against REV (both revisions measured here, in one run), "
            "or record a baseline on this machine with --write-baseline FILE")


@dataclass
class GateReport:
    baseline: str
    max_regression: float
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "max_regression": self.max_regression, "passed": self.passed,
                "lines": self.lines, "failures": self.failures, "notes": self.notes}


def check_regression(baseline: dict, doc: dict, max_regression: float, baseline_name: str = "baseline") -> GateReport:
    """Compare every gated figure of `baseline` with this run's; pure (dicts in, report out)."""
    rep = GateReport(baseline_name, max_regression)
    new = gated_figures(doc)
    for key, base in baseline["gated"].items():
        bound = base * (1 - max_regression)
        if key not in new:
            msg = f"{key}: not measured in this run (baseline {base:.3f}); run the baseline's command"
            rep.failures.append(msg)
            rep.lines.append("FAIL " + msg)
            continue
        value = new[key]
        change = value / base - 1
        status = "ok  " if value >= bound else "FAIL"
        line = (f"{status} {key} speedup vs torch: baseline {base:.3f}, new {value:.3f} ({change:+.1%}), "
                f"allowed >= {bound:.3f}")
        rep.lines.append(line)
        if value < bound:
            rep.failures.append(line[5:])
        elif change > max_regression:
            rep.notes.append(f"{key} improved by {change:.0%}: consider --write-baseline to lock it in")
    env = doc.get("env") or {}
    load, cores = env.get("load_average_at_start"), env.get("usable_cores")
    if load and cores and load[0] > 0.5 * cores:
        rep.notes.append(f"the machine was busy when this run started (1-min load {load[0]} on {cores} cores): "
                         "contention slows multi-threaded PyTorch most, so ratios read high and a pass says less")
    ctx = (baseline.get("context") or {}).get("config") or {}
    for k in ("threads", "batches", "iters", "rounds", "torch_attn"):
        if k in ctx and ctx[k] != doc["config"].get(k):
            rep.notes.append(f"baseline measured with {k}={ctx[k]!r}, this run {k}={doc['config'].get(k)!r}")
    return rep


def enforce(rep: GateReport) -> None:
    """RegressionError naming every figure that fell below its bound."""
    if not rep.passed:
        raise RegressionError(
            f"{len(rep.failures)} figure(s) regressed more than {rep.max_regression:.0%} against {rep.baseline}: "
            + "; ".join(rep.failures))
