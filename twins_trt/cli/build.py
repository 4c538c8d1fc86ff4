"""twins-build: an exported ONNX -> a strongly typed TensorRT engine plus its metadata.

    twins-build export/svt_s.fp16.onnx -o engines/ --profile 1:8:64 --workspace 4 --timing-cache engines/timing.cache
"""

from __future__ import annotations

import argparse
import logging
import sys

from twins_trt.errors import TwinsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="twins-build",
        description="Build a strongly typed TensorRT engine (>= 10) from a twins-export ONNX. The precision comes "
                    "from the ONNX itself (FP16 tensors or Q/DQ); the batch range from its metadata unless overridden.")
    p.add_argument("onnx", help="exported ONNX, e.g. export/svt_s.fp16.onnx")
    p.add_argument("-o", "--out-dir", default="engines",
                   help="folder for <stem>.plan and <stem>.json (default: engines)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, help="build for exactly this batch size")
    g.add_argument("--profile", metavar="MIN:OPT:MAX",
                   help="batch range (default: the export's twins_trt.batch_profile)")
    p.add_argument("--workspace", type=float, metavar="GiB", help="workspace memory pool limit (default: TensorRT's)")
    p.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help="builder optimization level (default: TensorRT's, 3)")
    p.add_argument("--timing-cache", metavar="PATH", help="timing cache to load (if present), merge into and save")
    p.add_argument("-v", "--verbose", action="store_true", help="TensorRT's verbose log")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from twins_trt.trt import tensorrt_status
    from twins_trt.trt.build import build_engine

    ok, why = tensorrt_status()
    if not ok:
        print(f"error: twins-build needs TensorRT (>= 10) and a CUDA GPU: {why}", file=sys.stderr)
        return 2
    try:
        result = build_engine(args.onnx, args.out_dir, batch=args.batch, profile=args.profile,
                              workspace_gib=args.workspace, opt_level=args.opt_level, timing_cache=args.timing_cache,
                              verbose=args.verbose)
    except TwinsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.metadata
    print(f"{result.plan_path}: {m['precision']} engine, {m['engine_bytes'] / 2**20:.1f} MiB, built in "
          f"{m['build_seconds']:.1f} s with TensorRT {m['tensorrt']} on {m['gpu']['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
