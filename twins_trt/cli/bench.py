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
import logging
import shlex
import sys

EXIT_OK, EXIT_ERROR, EXIT_REGRESSION = 0, 2, 3


def _img_size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            h, w = (int(t) for t in text.lower().split("x"))
        else:
            h = w = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size is N or HxW (e.g. 224 or 224x320), got {text!r}") from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twins-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure PyTorch, ONNX Runtime and TensorRT on Twins in images/s (same seeded inputs for every "
                    "backend; warm-up apart from timing; latency percentiles; speedups vs PyTorch fp32).",
        epilog="Backends: torch, torch-compile, torch-fp16 (CUDA), ort-{cpu,cuda,trt}[-fp16|-int8], "
               "trt-{fp32,fp16,int8}; groups: cpu, gpu, all, auto (gpu with a CUDA device, else cpu).\n"
               "img/s = batch / mean latency; speedup = median over rounds of torch p50 / backend p50.")
    p.add_argument("--variant", default="svt_s", help="Twins variant(s), comma-separated (default: svt_s)")
    p.add_argument("--backends", default="auto", help="comma-separated backends or groups (default: auto)")
    p.add_argument("--batch", help="batch sizes, comma-separated (default: 1,8,64 with a GPU, 1,8 without)")
    p.add_argument("--img-size", type=_img_size, default=(224, 224), help="N or HxW (default: 224)")
    p.add_argument("--warmup", type=int, help="warm-up iterations per cell, first round (default: 10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iters", type=int, help="timed iterations per cell and round (default: 10)")
    g.add_argument("--min-seconds", type=float, metavar="S",
                   help="instead of --iters: time each cell for at least S seconds per round (>= 3 iterations)")
    p.add_argument("--rounds", type=int, help="alternating rounds over all backends (default: 3; 5 with --against)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch and ONNX Runtime alike (default: all usable cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device of the torch backends (default: cuda when visible, else cpu)")
    p.add_argument("--protocol", choices=("paper",),
                   help="paper: batch 64, 50 warm-up, 30 timed iterations, 1 round (the Twins/Swin throughput "
                        "protocol); prints the paper's figures beside ours")
    p.add_argument("--weights", help="weights for the model and exports: a .pth/.safetensors path or 'timm' "
                                     "(default: random; speed does not depend on them)")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--calib-data", metavar="DIR", help="images to calibrate INT8 exports on")
    c.add_argument("--calib-synthetic", action="store_true",
                   help="calibrate INT8 exports on random data (fine for speed, not for accuracy)")
    p.add_argument("--calib-size", type=int, default=16, help="calibration samples for INT8 exports (default: 16)")
    p.add_argument("--torch-attn", choices=("sdpa", "explicit"), default="sdpa",
                   help="attention of the PyTorch backends (default: sdpa, the fused kernel; the ONNX is explicit)")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT backends replay a CUDA graph")
    p.add_argument("--export-dir", default="export", help="ONNX artifacts: reused when they match, else exported there")
    p.add_argument("--engines-dir", default="engines", help="TensorRT engines: reused or built there")
    p.add_argument("--seed", type=int, default=0, help="seed of the input batches (default: 0)")
    p.add_argument("-o", "--out-dir", default="bench/results", help="reports folder (default: bench/results)")
    p.add_argument("--name", help="report file stem (default: bench_<variants>_<UTC time>)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--against", metavar="REV",
                      help="A/B gate: measure this code and the code at git revision REV on this machine in one run, "
                           "interleaved; gated figure: new img/s / base img/s per cell, plus a graph gate on the "
                           "ONNX both revisions export")
    gate.add_argument("--baseline", metavar="FILE",
                      help="gate against a baseline written by --write-baseline on this same machine (refused, exit "
                           "2, on another CPU, GPU or library versions)")
    p.add_argument("--max-rounds", type=int, default=15, metavar="N",
                   help="--against: measure inconclusive cells again, up to N rounds in all (default: 15)")
    p.add_argument("--max-regression", default="10%", help="allowed drop of a gated figure (default: 10%%)")
    p.add_argument("--gate-retries", type=int, default=1, metavar="N",
                   help="when the gate fails, measure again up to N times and fail only if every try fails "
                        "(a real regression reproduces, a noisy neighbour rarely does; default: 1)")
    p.add_argument("--write-baseline", metavar="FILE", help="write this run's gated ratios as a baseline")
    p.add_argument("--list", action="store_true", help="list every backend and whether it can run here, then exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None):
    """(args, BenchConfig kwargs); argparse errors (exit 2) with a clear message for bad lists."""
    from twins_trt.bench.backends import Capabilities, parse_backends, parse_batches
    from twins_trt.bench.core import PAPER_PROTOCOL
    from twins_trt.bench.gate import parse_fraction
    from twins_trt.models import resolve_variant

    parser = build_parser()
    args = parser.parse_args(argv)
    caps = None if args.list else Capabilities.detect()
    if args.list:
        return args, None, None
    try:
        variants = [resolve_variant(v).name for v in args.variant.split(",") if v.strip()]
        backends = parse_backends(args.backends, cuda=caps.cuda)
        batches = parse_batches(args.batch) if args.batch else ([1, 8, 64] if caps.cuda else [1, 8])
        args.max_regression_value = parse_fraction(args.max_regression)
    except (ValueError, KeyError) as e:
        parser.error(str(e))
    if not variants:
        parser.error("--variant is empty")
    if args.against and (args.write_baseline or args.protocol):
        parser.error("--against compares two revisions; it takes neither --write-baseline nor --protocol")
    if args.against and args.min_seconds is not None:
        parser.error("--against times a fixed number of iterations per round; use --iters, not --min-seconds")
    warmup, iters, rounds = args.warmup, args.iters, args.rounds
    if args.protocol == "paper":
        if args.batch and batches != PAPER_PROTOCOL["batch"]:
            parser.error(f"--protocol paper measures batch 64 only; drop --batch {args.batch}")
        if args.min_seconds is not None:
            parser.error("--protocol paper times a fixed 30 iterations; drop --min-seconds")
        batches = PAPER_PROTOCOL["batch"]
        warmup = PAPER_PROTOCOL["warmup"] if warmup is None else warmup
        iters = PAPER_PROTOCOL["iters"] if iters is None else iters
        rounds = PAPER_PROTOCOL["rounds"] if rounds is None else rounds
    kwargs = dict(variants=variants, backends=backends, batches=batches, img_size=args.img_size,
                  warmup=10 if warmup is None else warmup,
                  iters=None if args.min_seconds is not None else (10 if iters is None else iters),
                  min_seconds=args.min_seconds, rounds=(5 if args.against else 3) if rounds is None else rounds,
                  threads=args.threads,
                  device=args.device, weights=args.weights, torch_attn=args.torch_attn, export_dir=args.export_dir,
                  engines_dir=args.engines_dir, calib_dir=args.calib_data, calib_synthetic=args.calib_synthetic,
                  calib_size=args.calib_size, cuda_graph=args.cuda_graph, seed=args.seed, protocol=args.protocol,
                  progress=not args.quiet)
    return args, kwargs, caps


def list_backends() -> int:
    from twins_trt.bench.backends import BACKENDS, Capabilities, skip_reason

    caps = Capabilities.detect()
    width = max(map(len, BACKENDS))
    for name, b in BACKENDS.items():
        why = skip_reason(b, caps)
        print(f"{name.ljust(width)}  {'available' if why is None else 'skipped: ' + why}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, kwargs, caps = parse_args(argv)
    if args.list:
        return list_backends()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.against:
        return run_against(args, kwargs, caps)
    from twins_trt.bench import gate
    from twins_trt.bench.core import BenchConfig, run_benchmark
    from twins_trt.bench.env import environment_line
    from twins_trt.bench.report import format_table, write_reports
    from twins_trt.errors import RegressionError, TwinsError

    try:
        cfg = BenchConfig(**kwargs)
        baseline = gate.read_baseline(args.baseline) if args.baseline else None
        if baseline is not None:  # before measuring: a foreign baseline is refused, never a false regression
            from twins_trt.bench.env import capture_environment, usable_cores

            gate.check_fingerprint(baseline, capture_environment(cfg.threads or usable_cores()), args.baseline)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        doc = run_benchmark(cfg, caps=caps, say=lambda m: print(m, file=sys.stderr))
    except TwinsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    doc["command"] = "twins-bench " + shlex.join(argv)
    report = None
    if baseline is not None:
        report = gate.check_regression(baseline, doc, args.max_regression_value, baseline_name=args.baseline)
        tries = [report.to_dict()]
        for attempt in range(max(args.gate_retries, 0)):
            if report.passed or not doc["results"]:
                break
            print(f"gate failed ({'; '.join(report.failures)}); measuring again to confirm "
                  f"(retry {attempt + 1} of {args.gate_retries})", file=sys.stderr)
            doc = run_benchmark(cfg, caps=caps, say=lambda m: print(m, file=sys.stderr))
            doc["command"] = "twins-bench " + shlex.join(argv)
            report = gate.check_regression(baseline, doc, args.max_regression_value, baseline_name=args.baseline)
            tries.append(report.to_dict())
        doc["gate"] = {**report.to_dict(), "tries": tries}
    paths = write_reports(doc, args.out_dir, args.name, plot=not args.no_plot)
    print(f"# {environment_line(doc['env'])}")
    print(format_table(doc))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    if args.write_baseline:
        try:
            path = gate.write_baseline(doc, args.write_baseline, command=doc["command"])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR
        print(f"wrote baseline {path} ({len(gate.gated_figures(doc))} gated figures)")
    if not doc["results"]:
        print("error: nothing was measured (see the reasons above)", file=sys.stderr)
        return EXIT_ERROR
    if report is not None:
        print(f"\nregression gate vs {args.baseline} (max regression {args.max_regression_value:.0%}):")
        for line in report.lines + [f"note: {n}" for n in report.notes]:
            print(f"  {line}")
        try:
            gate.enforce(report)
        except RegressionError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_REGRESSION
        print("  PASS")
    return EXIT_OK


def run_against(args, kwargs: dict, caps) -> int:
    """--against REV: both revisions measured here, interleaved; exit 0 pass/inconclusive, 3 regression."""
    import time

    from twins_trt.artifacts import ensure_dir, write_json_atomic
    from twins_trt.bench.ab import ABConfig, format_ab, run_ab
    from twins_trt.bench.backends import torch_device
    from twins_trt.bench.env import environment_line, usable_cores
    from twins_trt.bench.plot import plot_ab
    from twins_trt.errors import TwinsError

    try:
        cfg = ABConfig(against=args.against, variants=kwargs["variants"], backends=[b.name for b in kwargs["backends"]],
                       batches=kwargs["batches"], img_size=tuple(kwargs["img_size"]),
                       threads=kwargs["threads"] or usable_cores(), warmup=kwargs["warmup"], iters=kwargs["iters"],
                       rounds=kwargs["rounds"], max_rounds=max(args.max_rounds, kwargs["rounds"]),
                       max_regression=args.max_regression_value, torch_attn=kwargs["torch_attn"],
                       device=torch_device(kwargs["device"], caps), seed=kwargs["seed"])
        out_dir = ensure_dir(args.out_dir)
        doc = run_ab(cfg, say=lambda m: print(m, file=sys.stderr), progress=kwargs["progress"])
    except (TwinsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    stem = args.name or f"ab_{'_'.join(cfg.variants)}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    paths = [write_json_atomic(out_dir / f"{stem}.json", doc)]
    if not args.no_plot and any(c.get("verdict") for c in doc["cells"]):
        paths.append(plot_ab(doc, out_dir / f"{stem}.png"))
    print(f"# {environment_line(doc['env'])}")
    print(format_ab(doc))
    print(f"\nwrote {', '.join(map(str, paths))}")
    if doc["status"] == "regression":
        failing = [c["key"] for c in doc["cells"] if (c.get("verdict") or {}).get("status") == "regression"]
        print(f"error: regression against {args.against}: " + "; ".join(failing + doc["graph_failures"]),
              file=sys.stderr)
        return EXIT_REGRESSION
    if doc["status"] == "inconclusive":
        print(f"INCONCLUSIVE: the noise of this run does not resolve every cell within {cfg.max_rounds} rounds "
              "(not a demonstrated regression; a quieter machine or more --max-rounds decides it)")
        return EXIT_OK
    print("PASS")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
