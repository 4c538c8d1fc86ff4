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
   Per round the ratio base p50 / new p50 is taken; over rounds, its median and a distribution-free
   95% interval of that median (order statistics), so a round that a busy neighbour disturbed
   moves the interval's edge, not the verdict. A cell passes when the whole interval is at or above
   1 - max_regression, fails when the whole interval is below it, and is inconclusive otherwise:
   inconclusive cells are measured again, round by round, up to `max_rounds`. One still
   inconclusive then is reported as such (a difference the noise does not resolve is not a
   demonstrated regression), never passed or failed on a lucky draw.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twins_trt.errors import RevisionError, WorkerError

log = logging.getLogger(__name__)

WATCHED_OPS = ("Pad", "Slice", "Shape", "Gather")  # the ops a clean Twins graph never needs
WORKER = Path(__file__).with_name("ab_worker.py")




# ---------------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Verdict:
    status: str  # pass | regression | inconclusive
    ratio: float  # median over rounds of new img/s / base img/s
    low: float  # distribution-free 95% interval of that median
    high: float
    rounds: int
    spread: tuple[float, float]  # min and max of the per-round ratios

    def to_dict(self) -> dict:
        return asdict(self)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic interval for the median (sign-test inversion): robust to rounds a neighbour disturbed.

    With n values sorted, [x(k), x(n-k+1)] covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k);
    k is the largest that keeps this >= `confidence`, or 1 (the whole range) when none does (n < 6).
    """
    xs = sorted(values)
    n = len(xs)
    tail, k, below = (1 - confidence) / 2, 1, 0.0
    for j in range(1, n // 2 + 1):  # P(B < j+1) = P(B <= j)
        below += math.comb(n, j - 1) / 2**n
        if below > tail:
            break
        k = j
    return xs[k - 1], xs[n - k]


def decide(ratios: list[float], max_regression: float) -> Verdict:
    """pass / regression / inconclusive from per-round speed ratios (new / base); pure.

    pass: the whole 95% interval of the median ratio is at or above 1 - max_regression; regression: the
    whole interval is below it; inconclusive: the interval straddles it (more rounds narrow it).
    """
    if not ratios or any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"speed ratios must be positive numbers, got {ratios}")
    bound = 1.0 - max_regression
    low, high = median_interval(ratios) if len(ratios) >= 2 else (0.0, math.inf)
    status = "pass" if low >= bound else "regression" if high < bound else "inconclusive"
    return Verdict(status, statistics.median(ratios), low, high, len(ratios), (min(ratios), max(ratios)))


def graph_summary(onnx_path: str | os.PathLike) -> dict:
    """Node count and op histogram of an ONNX file (weights not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"nodes": len(model.graph.node), "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))}


def compare_graphs(base: dict, new: dict, watched: tuple[str, ...] = WATCHED_OPS) -> list[str]:
    """What the new graph adds that fails the gate: node-count growth, or more of a watched op. Pure."""
    diff = {op: new["ops"].get(op, 0) - base["ops"].get(op, 0) for op in {*base["ops"], *new["ops"]}}
    changed = ", ".join(f"{op} {d:+d}" for op, d in sorted(diff.items()) if d)
    problems = []
    if new["nodes"] > base["nodes"]:
        problems.append(f"nodes {base['nodes']} -> {new['nodes']} ({new['nodes'] - base['nodes']:+d}; {changed})")
    for op in watched:
        if diff.get(op, 0) > 0:
            problems.append(f"{op} {base['ops'].get(op, 0)} -> {new['ops'].get(op, 0)} (added {diff[op]})")
    return problems


# ---------------------------------------------------------------------------------------------- revisions


def code_root() -> Path:
    """The checkout that holds the twins_trt being run (the code under test)."""
    import twins_trt

    return Path(twins_trt.__file__).resolve().parent.parent


def _git(repo: Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=text, timeout=120)
    except FileNotFoundError:
        raise RevisionError("--against needs git, and git is not installed") from None


def resolve_revision(rev: str, repo: Path) -> str:
    """REV -> full commit hash, or one line saying why this checkout cannot provide it."""
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise RevisionError(f"--against needs the code under test in a git checkout, and {repo} is not one "
                            "(installed from a wheel?); use a clone, or --baseline FILE recorded on this machine")
    out = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    shallow = _git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    count = _git(repo, "rev-list", "--count", "HEAD").stdout.strip() or "?"
    hint = ("this clone is shallow: run `git fetch --unshallow` (CI: clone with full history, fetch-depth 0)"
            if shallow else "fetch it, or move the recorded revision (bench/baselines/REVISION) to one in this history")
    raise RevisionError(f"revision {rev!r} is not in this clone's history ({count} commits reachable from HEAD); {hint}")


def checkout_revision(sha: str, repo: Path, dest: Path) -> Path:
    """The tree of `sha` under `dest` (git archive: no worktree bookkeeping left behind)."""
    out = _git(repo, "archive", "--format=tar", sha, text=False)
    if out.returncode != 0:
        raise RevisionError(f"git archive {sha[:12]} failed: {out.stderr.decode(errors='replace').strip()[:300]}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(dest, filter="data")
    if not (dest / "twins_trt" / "__init__.py").is_file():
        raise RevisionError(f"revision {sha[:12]} has no twins_trt package to benchmark")
    return dest


def describe_revision(sha: str, repo: Path) -> str:
    out = _git(repo, "log", "-1", "--format=%h %s", sha)
    return out.stdout.strip() or sha[:12]


# ---------------------------------------------------------------------------------------------- workers


class Worker:
    """One revision's process: setup once, then measure cells on request."""

    def __init__(self, label: str, root: Path, workdir: Path) -> None:
        self.label, self.root = label, root
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "worker.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "TWINS_AB_ROOT": str(root), "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], cwd=workdir, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)

    def call(self, cmd: str, **req) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **req}) + "\n")
            self.proc.stdin.flush()
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
class ABConfig:
    against: str
    variants: list[str]
    backends: list[str]
    batches: list[int]
    img_size: tuple[int, int] = (224, 224)
    threads: int = 1
    warmup: int = 10
    iters: int = 5
    rounds: int = 5  # every cell, before any decision
    max_rounds: int = 15  # inconclusive cells are measured again up to this many rounds
    max_regression: float = 0.10
    torch_attn: str = "sdpa"
    device: str = "cpu"
    seed: int = 0
    workdir: str | None = None  # scratch (checkout, exports, logs); a temporary folder when None

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(f"--rounds must be >= 2 for an A/B comparison (a spread needs two), got {self.rounds}")
        if self.max_rounds < self.rounds:
            raise ValueError(f"--max-rounds ({self.max_rounds}) must be >= --rounds ({self.rounds})")
        if self.iters < 1 or self.warmup < 0:
            raise ValueError("--iters must be >= 1 and --warmup >= 0")


@dataclass
class ABCell:
    variant: str
    backend: str
    batch: int
    base_p50_ms: list[float] = field(default_factory=list)
    new_p50_ms: list[float] = field(default_factory=list)
    verdict: Verdict | None = None

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
                "verdict": self.verdict.to_dict() if self.verdict else None}


def _p50_ms(latencies_s: list[float]) -> float:
    return statistics.median(latencies_s) * 1e3


def run_ab(cfg: ABConfig, say: Callable[[str], None] = print, progress: bool = True) -> dict:
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
    workers: dict[str, Worker] = {}
    try:
        base_src = checkout_revision(sha, root, scratch / "base" / "src")
        workers["new"] = Worker("new", root, scratch / "new")
        workers["base"] = Worker("base", base_src, scratch / "base")
        setup = {"variants": cfg.variants, "backends": cfg.backends, "batches": cfg.batches,
                 "img_size": list(cfg.img_size), "threads": cfg.threads, "torch_attn": cfg.torch_attn,
                 "device": cfg.device, "seed": cfg.seed}
        arts = {}
        for side, w in workers.items():
            say(f"setting up the {side} side (model, exports)")
            out = w.call("setup", export_dir=str(scratch / side / "export"),
                         engines_dir=str(scratch / side / "engines"), **setup)
            arts[side], doc["sides"][side] = out["onnx"], out["twins_trt"]
        _graph_gate(arts, doc, say)
        cells = [ABCell(v, b, n) for v in cfg.variants for b in cfg.backends for n in cfg.batches]
        _measure_rounds(cells, workers, cfg, say, progress)
    finally:
        for w in workers.values():
            w.close()
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


def _measure_rounds(cells: list[ABCell], workers: dict[str, Worker], cfg: ABConfig, say, progress: bool) -> None:
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
            order = ["new", "base"] if rnd % 2 == 0 else ["base", "new"]
            for cell in active:
                bar.set_postfix_str(f"{cell.key} round {rnd + 1}")
                for side in order:
                    out = workers[side].call("measure", variant=cell.variant, backend=cell.backend, batch=cell.batch,
                                             warmup=cfg.warmup, iters=cfg.iters)
                    (cell.new_p50_ms if side == "new" else cell.base_p50_ms).append(_p50_ms(out["latencies_s"]))
                bar.update(1)
            if rnd + 1 >= cfg.rounds:
                for cell in cells:
                    cell.verdict = decide(cell.ratios, cfg.max_regression)
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
    lines = [f"A/B vs {doc['base_describe']} ({doc['base_commit'][:12]}); gated: new img/s / base img/s "
             f">= {bound:.2f} (95% interval over rounds)",
             f"{'cell':<22} {'base img/s':>10} {'new img/s':>10} {'new/base':>9} {'95% interval':>15} "
             f"{'rounds':>6} {'min..max':>13}  verdict"]
    for c in doc["cells"]:
        v = c["verdict"]
        if v is None:
            continue
        lines.append(f"{c['key']:<22} {c['base_img_s']:>10.1f} {c['new_img_s']:>10.1f} {v['ratio']:>9.3f} "
                     f"{v['low']:>7.3f}..{v['high']:<6.3f} {v['rounds']:>6} "
                     f"{v['spread'][0]:>6.3f}..{v['spread'][1]:<6.3f} {v['status'].upper()}")
    for key, g in doc["graphs"].items():
        lines.append(f"graph {key}: {g['base']['nodes']} -> {g['new']['nodes']} nodes"
                     + (f"  FAIL: {'; '.join(g['problems'])}" if g["problems"] else "  ok"))
    return "\n".join(lines)
