"""twins-build: an exported ONNX -> a strongly typed TensorRT engine plus its metadata.

    twins-build export/svt_s.fp16.onnx -o engines/ --profile 1:8:64 --workspace 4 --timing-cache engines/timing.cache

Exit 0 built, 2 bad input or the build failed, 130 interrupted (no engine left half-written).
"""

from __future__ import annotations

import argparse

from twins_trt.cli.common import (
    cache_file,
    input_file,
    make_parser,
    output_dir,
    parse_range,
    positive_float,
    positive_int,
    run,
)
from twins_trt.errors import BackendUnavailableError


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "twins-build",
        "Build a strongly typed TensorRT engine (>= 10) from a twins-export ONNX. The precision comes "
        "from the ONNX itself (FP16 tensors or Q/DQ); the batch range from its metadata unless overridden.",
        quiet=False)
    p.add_argument("onnx", type=input_file, help="exported ONNX, e.g. export/svt_s.fp16.onnx")
    p.add_argument("-o", "--out-dir", type=output_dir, default="engines",
                   help="folder for <stem>.plan and its metadata <stem>.plan.json (default: engines)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=positive_int, help="build for exactly this batch size")
    g.add_argument("--profile", metavar="MIN:OPT:MAX", type=parse_range,
                   help="batch range (default: the export's twins_trt.batch_profile)")
    p.add_argument("--opt-batches", metavar="B1,B2,...", type=_batches,
                   help="one optimization profile per batch, OPT at that batch (what twins-bench builds)")
    p.add_argument("--workspace", type=positive_float, metavar="GiB",
                   help="workspace memory pool limit (default: TensorRT's)")
    p.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help="builder optimization level (default: TensorRT's, 3)")
    p.add_argument("--timing-cache", type=cache_file, metavar="PATH",
                   help="timing cache to load (if present), merge into and save")
    p.epilog = "-v also turns on TensorRT's verbose log."
    return p


def _batches(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of batch sizes >= 1, e.g. 1,8,64")
    return out


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    from twins_trt.trt import tensorrt_status
    from twins_trt.trt.build import build_engine
    from twins_trt.trt.profile import read_onnx_info

    read_onnx_info(args.onnx)  # a corrupt or foreign file is refused before TensorRT is even looked for
    ok, why = tensorrt_status()
    if not ok:
        raise BackendUnavailableError(f"twins-build needs TensorRT (>= 10) and a CUDA GPU: {why}")
    profile = None if args.profile is None else ":".join(map(str, args.profile))
    result = build_engine(args.onnx, args.out_dir, batch=args.batch, profile=profile, opt_batches=args.opt_batches,
                          workspace_gib=args.workspace,
                          opt_level=args.opt_level, timing_cache=args.timing_cache, verbose=bool(args.verbose))
    m = result.metadata
    print(f"{result.plan_path}: {m['precision']} engine, {m['engine_bytes'] / 2**20:.1f} MiB, built in "
          f"{m['build_seconds']:.1f} s with TensorRT {m['tensorrt']} on {m['gpu']['name']}"
          + (" (emulated: ONNX Runtime on the CPU, not a TensorRT engine)" if m.get("emulated") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
