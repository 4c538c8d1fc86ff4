"""A/B speed gate: the code under test against a git revision, on the same machine, in the same run.

A ratio between two libraries (ONNX Runtime over PyTorch) moves with the CPU model and the library
versions, so a figure recorded on one machine says nothing on another. What does carry over is a
comparison of *our code* with *our code*: the same backend, batch and machine, measured by both
revisions side by side. The gated figure is new img/s / base img/s per (variant, backend, batch).

How a run goes (`run_ab`):

1. REV is resolved in the repository that holds the code under test and extracted (`git archive`)
   into a scratch folder. Each side runs in its own process (`ab_worker.py`) with its own checkout
   first on sys.path: its own PyTorch forward, its own exporter's ONNX, its own runners.
2. Graph gate (deterministic): every ONNX both sides exported is compared; node-count growth or an
   added Pad, Slice, Shape or Gather fails, whatever the timing noise.
3. Rounds: each cell is measured by both sides back to back, the order alternating between rounds.
   Both sides' processes are restarted every `restart_every` rounds (default: every round), which
   side starts first alternating too: two processes of identical code differ by a fixed few percent
   (memory layout, allocation order, warm caches), so the process pair, not the round, is the unit
   of replication. Per round the ratio base p50 / new p50 is taken; per pair, the median of its
   rounds; over pairs, the median and a distribution-free 99% interval of that median (order
   statistics, `bench.ab_stats`; 8 pairs at first, whose [min, max] is that interval), so a pair
   that a busy neighbour disturbed moves the interval's edge, not the verdict. A cell passes when
   the whole interval is at or above 1 - max_regression, fails when the whole interval is below
   it, and is inconclusive otherwise: inconclusive cells are measured again, round by round, up to
   `max_rounds`. One still inconclusive then is reported as
   such (a difference the noise does not resolve is not a demonstrated regression), never passed or
   failed on a lucky draw.

Here: the worker processes and the run. The decision is `bench.ab_stats`, the git plumbing
`bench.revisions`, the graph diff `export.graph_report.compare_graphs`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twins_trt.bench.ab_stats import MIN_PAIRS, CellVerdict, decide, document_confidence
from twins_trt.bench.revisions import checkout_revision, code_root, describe_revision, resolve_revision
from twins_trt.errors import WorkerError
from twins_trt.export.graph_report import compare_graphs, graph_summary

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("ab_worker.py")


# ---------------------------------------------------------------------------------------------- workers


class Worker:
    """One revision's process: setup once, then measure cells on request."""

    def __init__(self, label: str, root: Path, workdir: Path) -> None:
        self.label, self.root = label, root
        self.where: str | None = None  # the twins_trt this process imported, once set up
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "worker.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in close(); one log for all of a side's processes
        env = {**os.environ, "TWINS_AB_ROOT": str(root), "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], cwd=workdir, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)

    def call(self, cmd: str, **req) -> dict:
        self.send(cmd, **req)
        return self.receive(cmd)

    def send(self, cmd: str, **req) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **req}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # receive() reports the process's end with its log

    def receive(self, cmd: str) -> dict:
        try:
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise WorkerError(f"the {self.label} side's process ended during {cmd}: {self.log_tail()}")
        out = json.loads(line)
        if not out.pop("ok"):
            self._log.write(out.get("traceback", ""))
            self._log.flush()
            raise WorkerError(f"{self.label} side ({self.root}) failed in {cmd}: {out['error']} "
                              f"(log: {self.log_path})")
        return out

    def log_tail(self, n: int = 3) -> str:
        self._log.flush()
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return " | ".join(lines[-n:]) or "no output"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
        self._log.close()


# ---------------------------------------------------------------------------------------------- a run


@dataclass
class ABOptions:
    against: str
    variants: list[str]
    backends: list[str]
    batches: list[int]
    img_size: tuple[int, int] = (224, 224)
    threads: int = 1
    warmup: int = 10
    iters: int = 5
    rounds: int = MIN_PAIRS  # every cell, before any decision (a process pair per round)
    max_rounds: int = 15  # inconclusive cells are measured again up to this many rounds
    max_regression: float = 0.10
    restart_every: int = 1  # rounds per process pair: both sides' processes are restarted this often
    torch_attn: str = "sdpa"
    device: str = "cpu"
    seed: int = 0
    workdir: str | None = None  # scratch (checkout, exports, logs); a temporary folder when None

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(f"--rounds must be >= 2 for an A/B comparison (a spread needs two), got {self.rounds}")
        if self.max_rounds < self.rounds:
            raise ValueError(f"--max-rounds ({self.max_rounds}) must be >= --rounds ({self.rounds})")
        if self.restart_every < 1:
            raise ValueError(f"restart_every must be >= 1 round per process pair, got {self.restart_every}")
        if self.iters < 1 or self.warmup < 0:
            raise ValueError("--iters must be >= 1 and --warmup >= 0")


@dataclass
class ABCell:
    variant: str
    backend: str
    batch: int
    base_p50_ms: list[float] = field(default_factory=list)
    new_p50_ms: list[float] = field(default_factory=list)
    pairs: list[int] = field(default_factory=list)  # the process pair that measured each round
    verdict: CellVerdict | None = None

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.backend}/b{self.batch}"

    @property
    def ratios(self) -> list[float]:
        return [b / n for b, n in zip(self.base_p50_ms, self.new_p50_ms)]

    def to_dict(self) -> dict:
        med = statistics.median
        return {"key": self.key, "variant": self.variant, "backend": self.backend, "batch": self.batch,
                "base_img_s": self.batch / (med(self.base_p50_ms) / 1e3) if self.base_p50_ms else None,
                "new_img_s": self.batch / (med(self.new_p50_ms) / 1e3) if self.new_p50_ms else None,
                "base_p50_ms": self.base_p50_ms, "new_p50_ms": self.new_p50_ms, "ratios": self.ratios,
                "pairs": self.pairs,
                "verdict": self.verdict.to_dict() if self.verdict else None}


def _p50_ms(latencies_s: list[float]) -> float:
    return statistics.median(latencies_s) * 1e3


def run_ab(cfg: ABOptions, say: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Both revisions set up, graph-gated, measured round by round; returns the A/B document."""
    from twins_trt.bench.env import capture_environment

    root = code_root()
    sha = resolve_revision(cfg.against, root)
    scratch = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="twins-ab-"))
    doc: dict = {"kind": "twins-bench-ab", "format": 1, "against": cfg.against, "base_commit": sha,
                 "base_describe": describe_revision(sha, root), "new_root": str(root),
                 "config": {**asdict(cfg), "img_size": list(cfg.img_size)},
                 "env": capture_environment(cfg.threads), "sides": {}, "graphs": {}, "graph_failures": [], "cells": []}
    say(f"A/B: code under test ({root}) vs {doc['base_describe']} ({sha[:12]}), scratch {scratch}")
    cells = [ABCell(v, b, n) for v in cfg.variants for b in cfg.backends for n in cfg.batches]
    sides = None
    try:
        base_src = checkout_revision(sha, root, scratch / "base" / "src")
        sides = Sides({"new": root, "base": base_src}, scratch, cfg)
        say("setting up both sides (model, exports)")
        arts = sides.start()
        doc["sides"] = {side: w.where for side, w in sides.workers.items()}
        _graph_gate(arts, doc, say)
        _measure_rounds(cells, sides, cfg, say, progress)
    finally:
        if sides is not None:
            sides.close()
        if not cfg.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    doc["cells"] = [c.to_dict() for c in cells]
    doc["status"] = overall_status(doc)
    return doc


def _graph_gate(arts: dict[str, dict[str, dict[str, str]]], doc: dict, say: Callable[[str], None]) -> None:
    for variant, by_precision in arts["new"].items():
        for precision, new_path in by_precision.items():
            base_path = arts["base"].get(variant, {}).get(precision)
            if base_path is None:
                continue
            base, new = graph_summary(base_path), graph_summary(new_path)
            key = f"{variant}/{precision}"
            problems = compare_graphs(base, new)
            doc["graphs"][key] = {"base": base, "new": new, "problems": problems}
            doc["graph_failures"] += [f"{key}: {p}" for p in problems]
            say(f"graph {key}: base {base['nodes']} nodes, new {new['nodes']} nodes"
                + (f" -> FAIL {'; '.join(problems)}" if problems else " -> ok"))


class Sides:
    """Both revisions' processes, started afresh for each process pair; which side starts first alternates.

    The exports and engines of a side stay in its scratch folder, so a restarted process reuses them.
    """

    def __init__(self, roots: dict[str, Path], scratch: Path, cfg: ABOptions) -> None:
        self.roots, self.scratch, self.pair = roots, scratch, -1
        self.workers: dict[str, Worker] = {}
        self.setup = {"variants": cfg.variants, "backends": cfg.backends, "batches": cfg.batches,
                      "img_size": list(cfg.img_size), "threads": cfg.threads, "torch_attn": cfg.torch_attn,
                      "device": cfg.device, "seed": cfg.seed}

    def start(self) -> dict[str, dict[str, dict[str, str]]]:
        """A fresh process pair, set up side by side (nothing is timed meanwhile); returns each side's ONNX paths.

        The first pair sets up one side after the other: each may export, and two exports at once would
        only compete for the cores.
        """
        self.close()
        self.pair += 1
        order = ("new", "base") if (self.pair // 2) % 2 == 0 else ("base", "new")
        arts = {}
        for side in order:
            w = self.workers[side] = Worker(side, self.roots[side], self.scratch / side)
            w.send("setup", export_dir=str(self.scratch / side / "export"),
                   engines_dir=str(self.scratch / side / "engines"), **self.setup)
            if self.pair == 0:
                arts[side] = self._setup_done(w)
        for side in order if self.pair > 0 else ():
            arts[side] = self._setup_done(self.workers[side])
        return arts

    @staticmethod
    def _setup_done(w: Worker) -> dict[str, dict[str, str]]:
        out = w.receive("setup")
        w.where = out["twins_trt"]
        return out["onnx"]

    def close(self) -> None:
        while self.workers:
            self.workers.popitem()[1].close()


def _measure_rounds(cells: list[ABCell], sides: Sides, cfg: ABOptions, say, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=cfg.rounds * len(cells), desc="A/B", unit="cell", file=sys.stderr, disable=not progress,
               leave=False)
    try:
        for rnd in range(cfg.max_rounds):
            active = cells if rnd < cfg.rounds else [c for c in cells if c.verdict.status == "inconclusive"]
            if not active:
                break
            if rnd >= cfg.rounds:
                bar.total += len(active)
                bar.refresh()
            if rnd > 0 and rnd % cfg.restart_every == 0:
                bar.set_postfix_str(f"process pair {sides.pair + 2}")
                sides.start()
            order = ["new", "base"] if rnd % 2 == 0 else ["base", "new"]
            for cell in active:
                bar.set_postfix_str(f"{cell.key} round {rnd + 1}")
                cell.pairs.append(sides.pair)
                for side in order:
                    out = sides.workers[side].call("measure", variant=cell.variant, backend=cell.backend, batch=cell.batch,
                                             warmup=cfg.warmup, iters=cfg.iters)
                    (cell.new_p50_ms if side == "new" else cell.base_p50_ms).append(_p50_ms(out["latencies_s"]))
                bar.update(1)
            if rnd + 1 >= cfg.rounds:
                for cell in cells:
                    cell.verdict = decide(cell.ratios, cfg.max_regression, cell.pairs)
                undecided = [c.key for c in cells if c.verdict.status == "inconclusive"]
                if undecided and rnd + 1 < cfg.max_rounds:
                    say(f"inconclusive after {rnd + 1} rounds: {', '.join(undecided)}; measuring another round")
    finally:
        bar.close()


def overall_status(doc: dict) -> str:
    """regression (graph or timing) > inconclusive > pass."""
    statuses = {c["verdict"]["status"] for c in doc["cells"] if c.get("verdict")}
    if doc["graph_failures"] or "regression" in statuses:
        return "regression"
    return "inconclusive" if "inconclusive" in statuses else "pass"


def format_ab(doc: dict) -> str:
    """Console table: one line per cell, then the graph gate and the verdict."""
    cfg = doc["config"]
    bound = 1 - cfg["max_regression"]
    conf = document_confidence(doc)
    lines = [f"A/B vs {doc['base_describe']} ({doc['base_commit'][:12]}); gated: new img/s / base img/s "
             f">= {bound:.2f} ({conf:.0%} interval over process pairs, both sides restarted every "
             f"{cfg.get('restart_every', 1)} round(s))",
             f"{'cell':<22} {'base img/s':>10} {'new img/s':>10} {'new/base':>9} {f'{conf:.0%} interval':>15} "
             f"{'rounds':>6} {'pairs':>5} {'min..max':>13}  verdict"]
    for c in doc["cells"]:
        v = c["verdict"]
        if v is None:
            continue
        lines.append(f"{c['key']:<22} {c['base_img_s']:>10.1f} {c['new_img_s']:>10.1f} {v['ratio']:>9.3f} "
                     f"{v['low']:>7.3f}..{v['high']:<6.3f} {v['rounds']:>6} {v.get('pairs', 0):>5} "
                     f"{v['spread'][0]:>6.3f}..{v['spread'][1]:<6.3f} {v['status'].upper()}"
                     + (f" ({v['change']} than base)" if v.get("change", "none") != "none" else ""))
    for key, g in doc["graphs"].items():
        lines.append(f"graph {key}: {g['base']['nodes']} -> {g['new']['nodes']} nodes"
                     + (f"  FAIL: {'; '.join(g['problems'])}" if g["problems"] else "  ok"))
    return "\n".join(lines)
