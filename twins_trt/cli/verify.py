"""twins-verify: a TensorRT engine vs ONNX Runtime and PyTorch fp32 on the same seeded inputs.

    twins-verify engines/svt_s.fp16.plan [--onnx export/svt_s.fp16.onnx] [--weights timm] [--batch 8]

Tolerances are the export's: fp32 max |diff| <= 1e-4, fp16 cosine >= 0.999, int8 cosine >= 0.99
(precision from the metadata; cosine is the per-sample mean, as the export reports it).
Exit 0 all pass, 1 a comparison failed, 2 bad input or could not run, 130 interrupted.
"""

from __future__ import annotations

import argparse

from twins_trt.cli.common import input_file, make_parser, nonneg_int, positive_int, run, weights_arg
from twins_trt.errors import BackendUnavailableError, VerificationError


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("twins-verify", "Compare a TensorRT engine with ONNX Runtime and PyTorch fp32.", quiet=False)
    p.add_argument("engine", type=input_file, help="engine built by twins-build, e.g. engines/svt_s.fp16.plan")
    p.add_argument("--onnx", type=input_file,
                   help="the ONNX it was built from (default: the path in the engine's metadata)")
    p.add_argument("--weights", type=weights_arg,
                   help="weights for the PyTorch reference: a .pth/.safetensors path or 'timm' "
                        "(default: random, which still checks the numerics)")
    p.add_argument("--batch", type=positive_int, help="batch size to run (default: the profile's OPT)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random input (default: 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    from twins_trt.trt import tensorrt_status
    from twins_trt.trt.verify import check_engine_metadata, verify_engine

    check_engine_metadata(args.engine, onnx_given=args.onnx is not None)  # before TensorRT: says what is wrong here
    ok, why = tensorrt_status()
    if not ok:
        raise BackendUnavailableError(f"twins-verify needs a CUDA GPU and TensorRT (>= 10): {why}")
    results = verify_engine(args.engine, onnx_path=args.onnx, weights=args.weights, batch=args.batch, seed=args.seed)
    for r in results:
        print(r.line())
    failed = [r for r in results if not r.passed]
    if failed:
        raise VerificationError(f"{len(failed)} of {len(results)} comparisons failed: "
                                + "; ".join(f"{r.candidate} vs {r.reference} [{r.output}] {r.shortfall()}"
                                            for r in failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
