"""twins-verify: a TensorRT engine vs ONNX Runtime and PyTorch fp32 on the same seeded inputs.

    twins-verify engines/svt_s.fp16.plan [--onnx export/svt_s.fp16.onnx] [--weights timm] [--batch 8]

Tolerances are the export's: fp32 max |diff| <= 1e-4, fp16 cosine >= 0.999, int8 cosine >= 0.99
(precision from the metadata). Exit 0 all pass, 1 a comparison failed, 2 could not run.
"""

from __future__ import annotations

import argparse
import sys

from twins_trt.errors import TwinsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="twins-verify",
                                description="Compare a TensorRT engine with ONNX Runtime and PyTorch fp32.")
    p.add_argument("engine", help="engine built by twins-build, e.g. engines/svt_s.fp16.plan")
    p.add_argument("--onnx", help="the ONNX it was built from (default: the path in the engine's metadata)")
    p.add_argument("--weights", help="weights for the PyTorch reference: a .pth/.safetensors path or 'timm' "
                                     "(default: random, which still checks the numerics)")
    p.add_argument("--batch", type=int, help="batch size to run (default: the profile's OPT)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default: 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from twins_trt.trt import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        print(f"error: twins-verify needs a CUDA GPU and TensorRT (>= 10): {why}", file=sys.stderr)
        return 2
    from twins_trt.trt.verify import verify_engine

    try:
        results = verify_engine(args.engine, onnx_path=args.onnx, weights=args.weights, batch=args.batch,
                                seed=args.seed)
    except TwinsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(r.line())
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"error: {len(failed)} of {len(results)} comparisons failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
