"""twins-bench: PyTorch vs ONNX Runtime vs TensorRT on one Twins variant, in images/s.

    twins-bench --variant svt_s --backends torch,ort-cpu,ort-cpu-fp16 --batch 1,8 --iters 10 --rounds 3
    twins-bench --variant svt_s --backends gpu --protocol paper --calib-synthetic      # on a GPU machine
    twins-bench --variant svt_s --backends torch,ort-cpu --batch 1,8 --against $(cat bench/baselines/REVISION)
                                                        # A/B gate: this code vs a revision, same machine, one run
    twins-bench ... --baseline my_runner.json --max-regression 10%   # gate against a baseline recorded on this machine

Backend names: <runtime>[-<provider>][-<precision>] (torch, torch-compile, torch-fp16, ort-cpu, ort-cpu-fp16,
ort-cuda-int8, ort-trt-fp16, trt-fp16, ...) or a group: cpu, gpu, all, auto. Backends that cannot run here
are listed with the reason and the run goes on.
Exit 0 done (an A/B gate that stays inconclusive says so and exits 0), 2 bad arguments, a baseline from another
machine, a revision this clone lacks, or nothing could be measured; 3 a gated figure or graph regressed.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from twins_trt.cli.common import (
    EXIT_OK,
    input_dir,
    input_file,
    make_parser,
    nonneg_int,
    output_dir,
    output_file,
    parse_hw,
    positive_float,
    positive_int,
    run,
    weights_arg,
)
from twins_trt.errors import TwinsError, UsageError


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "twins-bench", raw=True,
        description="Measure PyTorch, ONNX Runtime and TensorRT on Twins in images/s (same seeded inputs for every "
                    "backend; warm-up apart from timing; latency percentiles; speedups vs PyTorch fp32).",
        epilog="Backends: torch, torch-compile, torch-fp16 (CUDA), ort-{cpu,cuda,trt}[-fp16|-int8], "
               "trt-{fp32,fp16,int8}; groups: cpu, gpu, all, auto (gpu with a CUDA device, else cpu).\n"
               "img/s = batch / mean latency; speedup = median over rounds of torch p50 / backend p50.")
    p.add_argument("--variant", default="svt_s", help="Twins variant(s), comma-separated (default: svt_s)")
    p.add_argument("--backends", default="auto", help="comma-separated backends or groups (default: auto)")
    p.add_argument("--batch", help="batch sizes, comma-separated (default: 1,8,64 with a GPU, 1,8 without)")
    p.add_argument("--img-size", type=parse_hw, default=(224, 224), help="N or HxW (default: 224)")
    p.add_argument("--warmup", type=nonneg_int, help="warm-up iterations per cell, first round (default: 10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iters", type=positive_int, help="timed iterations per cell and round (default: 10)")
    g.add_argument("--min-seconds", type=positive_float, metavar="S",
                   help="instead of --iters: time each cell for at least S seconds per round (>= 3 iterations)")
    p.add_argument("--rounds", type=positive_int,
                   help="alternating rounds over all backends (default: 3; 8 with --against, a process pair each)")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch and ONNX Runtime alike (default: all usable cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device of the torch backends (default: cuda when visible, else cpu)")
    p.add_argument("--protocol", choices=("paper",),
                   help="paper: batch 64, 50 warm-up, 30 timed iterations, 1 round (the Twins/Swin throughput "
                        "protocol); prints the paper's figures beside ours")
    p.add_argument("--weights", type=weights_arg, help="weights for the model and exports: a .pth/.safetensors path or 'timm' "
                                     "(default: random; speed does not depend on them)")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--calib-data", type=input_dir, metavar="DIR",
                   help="images to calibrate INT8 exports on (an INT8 that misses its accuracy bound is still timed, "
                        "from a temporary file, and flagged BELOW BOUND)")
    c.add_argument("--calib-synthetic", action="store_true",
                   help="calibrate INT8 exports on random data (fine for speed, not for accuracy)")
    p.add_argument("--calib-size", type=positive_int, default=16, help="calibration samples for INT8 exports (default: 16)")
    p.add_argument("--torch-attn", choices=("sdpa", "explicit"), default="sdpa",
                   help="attention of the PyTorch backends (default: sdpa, the fused kernel; the ONNX is explicit)")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT backends replay a CUDA graph")
    p.add_argument("--export-dir", type=output_dir, default="export",
                   help="ONNX artifacts: reused when they match, else exported there")
    p.add_argument("--engines-dir", type=output_dir, default="engines", help="TensorRT engines: reused or built there")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the input batches (default: 0)")
    p.add_argument("-o", "--out-dir", type=output_dir, default="bench/results", help="reports folder (default: bench/results)")
    p.add_argument("--name", help="report file stem (default: bench_<variants>_<UTC time>)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--against", metavar="REV",
                      help="A/B gate: measure this code and the code at git revision REV on this machine in one run, "
                           "interleaved; gated figure: new img/s / base img/s per cell, plus a graph gate on the "
                           "ONNX both revisions export")
    gate.add_argument("--baseline", type=input_file, metavar="FILE",
                      help="gate against a baseline written by --write-baseline on this same machine (refused, exit "
                           "2, on another CPU, GPU or library versions)")
    p.add_argument("--max-rounds", type=positive_int, default=15, metavar="N",
                   help="--against: measure inconclusive cells again, up to N rounds in all (default: 15)")
    p.add_argument("--max-regression", default="10%", help="allowed drop of a gated figure (default: 10%%)")
    p.add_argument("--gate-retries", type=nonneg_int, default=1, metavar="N",
                   help="when the gate fails, measure again up to N times and fail only if every try fails "
                        "(a real regression reproduces, a noisy neighbour rarely does; default: 1)")
    p.add_argument("--write-baseline", type=output_file, metavar="FILE", help="write this run's gated ratios as a baseline")
    p.add_argument("--list", action="store_true", help="list every backend and whether it can run here, then exit")
    p.add_argument("--task", choices=("cls", "seg"), default="cls",
                   help="seg: Twins segmentors in frames/s at --seg-sizes, batch 1 (twins_trt.bench.seg)")
    p.add_argument("--seg-head", choices=("fpn", "uper", "mlp"), default="fpn", help="with --task seg: the decode head")
    p.add_argument("--seg-sizes", type=lambda t: [parse_hw(x) for x in t.split(",")], default=None,
                   help="with --task seg: HxW sizes, comma-separated (default: 512x512,1024x2048)")
    p.add_argument("--num-classes", type=positive_int, default=None, help="with --task seg: classes (default 150, ADE20K)")
    return p


def parse_args(argv: list[str] | None = None):
    """(args, BenchOptions kwargs, capabilities); a bad argument raises UsageError with what would be right."""
    args = build_parser().parse_args(argv)
    if args.list:
        return args, None, None
    return (args, *bench_settings(args))


def bench_settings(args: argparse.Namespace):
    """(BenchOptions kwargs, capabilities) from parsed arguments; lists, variants and combinations checked."""
    from twins_trt.backends import Capabilities, parse_backends, parse_batches
    from twins_trt.bench.ab_stats import MIN_PAIRS
    from twins_trt.bench.gate import parse_fraction
    from twins_trt.bench.run import PAPER_PROTOCOL
    from twins_trt.models import resolve_variant

    def error(message: str):
        raise UsageError(f"twins-bench: {message} (see twins-bench --help)")

    caps = Capabilities.detect()
    try:
        variants = [resolve_variant(v).name for v in args.variant.split(",") if v.strip()]
        backends = parse_backends(args.backends, cuda=caps.cuda)
        batches = parse_batches(args.batch) if args.batch else ([1, 8, 64] if caps.cuda else [1, 8])
        args.max_regression_value = parse_fraction(args.max_regression)
    except (ValueError, KeyError) as e:
        error(str(e))
    if not variants:
        error("--variant is empty")
    if args.against and (args.write_baseline or args.protocol):
        error("--against compares two revisions; it takes neither --write-baseline nor --protocol")
    if args.against and args.min_seconds is not None:
        error("--against times a fixed number of iterations per round; use --iters, not --min-seconds")
    warmup, iters, rounds = args.warmup, args.iters, args.rounds
    if args.protocol == "paper":
        if args.batch and batches != PAPER_PROTOCOL["batch"]:
            error(f"--protocol paper measures batch 64 only; drop --batch {args.batch}")
        if args.min_seconds is not None:
            error("--protocol paper times a fixed 30 iterations; drop --min-seconds")
        batches = PAPER_PROTOCOL["batch"]
        warmup = PAPER_PROTOCOL["warmup"] if warmup is None else warmup
        iters = PAPER_PROTOCOL["iters"] if iters is None else iters
        rounds = PAPER_PROTOCOL["rounds"] if rounds is None else rounds
    kwargs = dict(variants=variants, backends=backends, batches=batches, img_size=args.img_size,
                  warmup=10 if warmup is None else warmup,
                  iters=None if args.min_seconds is not None else (10 if iters is None else iters),
                  min_seconds=args.min_seconds, rounds=(MIN_PAIRS if args.against else 3) if rounds is None else rounds,
                  threads=args.threads,
                  device=args.device, weights=args.weights, torch_attn=args.torch_attn, export_dir=args.export_dir,
                  engines_dir=args.engines_dir, calib_dir=args.calib_data, calib_synthetic=args.calib_synthetic,
                  calib_size=args.calib_size, cuda_graph=args.cuda_graph, seed=args.seed, protocol=args.protocol,
                  progress=not args.quiet)
    return kwargs, caps


def list_backends() -> int:
    from twins_trt.backends import BACKENDS, Capabilities, skip_reason

    caps = Capabilities.detect()
    width = max(map(len, BACKENDS))
    for name, b in BACKENDS.items():
        why = skip_reason(b, caps)
        print(f"{name.ljust(width)}  {'available' if why is None else 'skipped: ' + why}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(build_parser(), lambda args: _main(args, argv), argv)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    """The steps: settings, (segmentors, A/B or) options and baseline, measure with the gate's retries, reports, gate."""
    if args.list:
        return list_backends()
    kwargs, caps = bench_settings(args)
    if args.task == "seg":
        return run_seg(args, kwargs, caps, argv)
    if args.against:
        return run_against(args, kwargs, caps)
    cfg, baseline = options_and_baseline(args, kwargs)
    doc, report = measure_with_retries(cfg, caps, baseline, args, argv)
    write_and_show(doc, args)
    if not doc["results"]:
        raise TwinsError("nothing was measured (see the reasons above)")
    if report is not None:
        enforce_gate(report, args)
    return EXIT_OK


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def options_and_baseline(args: argparse.Namespace, kwargs: dict):
    """BenchOptions, and the baseline (None without --baseline), refused before measuring if from another machine."""
    from twins_trt.bench import gate
    from twins_trt.bench.run import BenchOptions

    cfg = BenchOptions(**kwargs)
    baseline = gate.read_baseline(args.baseline) if args.baseline else None
    if baseline is not None:  # before measuring: a foreign baseline is refused, never a false regression
        from twins_trt.bench.env import capture_environment, usable_cores

        gate.check_fingerprint(baseline, capture_environment(cfg.threads or usable_cores()), args.baseline)
    return cfg, baseline


def measure_with_retries(cfg, caps, baseline, args: argparse.Namespace, argv: list[str]):
    """(result document, gate report or None): measure, and when the gate fails, measure again to confirm."""
    from twins_trt.bench import gate
    from twins_trt.bench.run import run_benchmark

    def measure() -> dict:
        doc = run_benchmark(cfg, caps=caps, say=say)
        doc["command"] = "twins-bench " + shlex.join(argv)
        return doc

    doc = measure()
    if baseline is None:
        return doc, None
    report = gate.check_regression(baseline, doc, args.max_regression_value, baseline_name=str(args.baseline))
    tries = [report.to_dict()]
    for attempt in range(args.gate_retries):
        if report.passed or not doc["results"]:
            break
        say(f"gate failed ({'; '.join(report.failures)}); measuring again to confirm "
            f"(retry {attempt + 1} of {args.gate_retries})")
        doc = measure()
        report = gate.check_regression(baseline, doc, args.max_regression_value, baseline_name=str(args.baseline))
        tries.append(report.to_dict())
    doc["gate"] = {**report.to_dict(), "tries": tries}
    return doc, report


def write_and_show(doc: dict, args: argparse.Namespace) -> None:
    """Reports under -o, the table on stdout, and the baseline when --write-baseline asks for one."""
    from twins_trt.bench import gate
    from twins_trt.bench.env import environment_line
    from twins_trt.bench.report import format_table, write_reports

    paths = write_reports(doc, args.out_dir, args.name, plot=not args.no_plot)
    print(f"# {environment_line(doc['env'])}")
    print(format_table(doc))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    if args.write_baseline:
        path = gate.write_baseline(doc, args.write_baseline, command=doc["command"])
        print(f"wrote baseline {path} ({len(gate.gated_figures(doc))} gated figures)")


def enforce_gate(report, args: argparse.Namespace) -> None:
    """Print the gate's lines; RegressionError (exit 3) when a figure fell below its bound."""
    from twins_trt.bench import gate

    print(f"\nregression gate vs {args.baseline} (max regression {args.max_regression_value:.0%}):")
    for line in report.lines + [f"note: {n}" for n in report.notes]:
        print(f"  {line}")
    gate.enforce(report)
    print("  PASS")


def run_seg(args: argparse.Namespace, kwargs: dict, caps, argv: list[str]) -> int:
    """--task seg: segmentors in frames/s at --seg-sizes, batch 1, with seg defaults where none was given."""
    import time
    from pathlib import Path

    from twins_trt.artifacts import write_json_atomic
    from twins_trt.bench.env import environment_line
    from twins_trt.bench.seg import DEFAULT_SIZES, SegBenchOptions, format_seg_table, run_seg_benchmark

    cfg = SegBenchOptions(
        variants=kwargs["variants"], backends=kwargs["backends"], head=args.seg_head,
        sizes=tuple(args.seg_sizes) if args.seg_sizes else DEFAULT_SIZES, num_classes=args.num_classes,
        weights=kwargs["weights"], warmup=2 if args.warmup is None else args.warmup,
        iters=None if args.min_seconds is not None else (5 if args.iters is None else args.iters),
        min_seconds=args.min_seconds, rounds=1 if args.rounds is None else args.rounds, threads=kwargs["threads"],
        device=kwargs["device"], export_dir=kwargs["export_dir"], seed=kwargs["seed"], progress=kwargs["progress"],
        torch_attn=kwargs["torch_attn"], calib_dir=kwargs["calib_dir"], calib_synthetic=kwargs["calib_synthetic"],
        calib_size=kwargs["calib_size"],
    )
    doc = run_seg_benchmark(cfg, caps=caps, say=say)
    doc["command"] = "twins-bench " + shlex.join(argv)
    name = args.name or f"bench_seg_{'_'.join(cfg.variants)}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    path = write_json_atomic(Path(args.out_dir) / f"{name}.json", doc)
    print(f"# {environment_line(doc['env'])}")
    print(format_seg_table(doc))
    print(f"\nwrote {path}")
    if not doc["results"]:
        raise TwinsError("nothing was measured (see the reasons above)")
    return EXIT_OK


def run_against(args, kwargs: dict, caps) -> int:
    """--against REV: both revisions measured here, interleaved; exit 0 pass/inconclusive, 3 regression."""
    import time

    from twins_trt.artifacts import ensure_dir, write_json_atomic
    from twins_trt.backends import torch_device
    from twins_trt.bench.ab import ABOptions, format_ab, run_ab
    from twins_trt.bench.env import environment_line, usable_cores
    from twins_trt.bench.plot import plot_ab
    from twins_trt.errors import RegressionError

    cfg = ABOptions(against=args.against, variants=kwargs["variants"], backends=[b.name for b in kwargs["backends"]],
                   batches=kwargs["batches"], img_size=tuple(kwargs["img_size"]),
                   threads=kwargs["threads"] or usable_cores(), warmup=kwargs["warmup"], iters=kwargs["iters"],
                   rounds=kwargs["rounds"], max_rounds=max(args.max_rounds, kwargs["rounds"]),
                   max_regression=args.max_regression_value, torch_attn=kwargs["torch_attn"],
                   device=torch_device(kwargs["device"], caps), seed=kwargs["seed"])
    out_dir = ensure_dir(args.out_dir)
    doc = run_ab(cfg, say=lambda m: print(m, file=sys.stderr), progress=kwargs["progress"])
    stem = args.name or f"ab_{'_'.join(cfg.variants)}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    paths = [write_json_atomic(out_dir / f"{stem}.json", doc)]
    if not args.no_plot and any(c.get("verdict") for c in doc["cells"]):
        paths.append(plot_ab(doc, out_dir / f"{stem}.png"))
    print(f"# {environment_line(doc['env'])}")
    print(format_ab(doc))
    print(f"\nwrote {', '.join(map(str, paths))}")
    if doc["status"] == "regression":
        failing = [c["key"] for c in doc["cells"] if (c.get("verdict") or {}).get("status") == "regression"]
        raise RegressionError(f"regression against {args.against}: " + "; ".join(failing + doc["graph_failures"]))
    if doc["status"] == "inconclusive":
        print(f"INCONCLUSIVE: the noise of this run does not resolve every cell within {cfg.max_rounds} rounds "
              "(not a demonstrated regression; a quieter machine or more --max-rounds decides it)")
        return EXIT_OK
    print("PASS")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
