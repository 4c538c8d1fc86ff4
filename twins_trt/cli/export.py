"""twins-export: PyTorch Twins -> verified FP32 / FP16 / INT8 ONNX, a graph report, and the engine build."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twins_trt import artifacts
from twins_trt.cli.common import (
    input_dir,
    make_parser,
    nonneg_int,
    output_dir,
    parse_hw,
    parse_hw_range,
    parse_range,
    positive_int,
    run,
    weights_arg,
)
from twins_trt.export import ExportOptions, export_variant, format_report
from twins_trt.export.int8.budget import DEFAULT_INT8_BUDGET
from twins_trt.export.options import DEFAULT_OPSET
from twins_trt.models import list_variants


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "twins-export",
        "Export a Twins model to ONNX (FP32, and FP16 / INT8 with precision in the graph), verify every "
        "artifact against PyTorch on ONNX Runtime, and report the graph's attention and forbidden ops.",
    )
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--variant", required=True, help=f"one of {', '.join(list_variants())} (timm/official names too)")
    p.add_argument("--weights", type=weights_arg, default=None,
                   help="a .pth/.pt/.safetensors checkpoint, or 'timm'; none = random (warned)")
    p.add_argument("--fp16", action="store_true", help="also write a mixed-precision FP16 ONNX (ModelOpt AutoCast)")
    p.add_argument("--int8", action="store_true", help="also write an INT8 Q/DQ ONNX (ModelOpt PTQ); needs --calib-data")
    p.add_argument("--fp8", action="store_true",
                   help="also write an FP8 (E4M3) Q/DQ ONNX (ModelOpt PTQ) for GPUs of compute capability >= 8.9 "
                        "(Ada, Hopper, Blackwell); needs --calib-data, calibrated and budgeted as INT8 is")
    p.add_argument("--fp8-attention", action="store_true",
                   help="with --fp8: FP8 on the attention MatMuls and Softmax too (ModelOpt's fused-MHA placement); "
                        "default: FP8 on the linear layers and convolutions only, attention in FP16")
    p.add_argument("--calib-data", type=input_dir, default=None, help="folder of calibration images, searched recursively")
    p.add_argument("--calib-synthetic", action="store_true", help="calibrate INT8 on random data (poor accuracy; warned)")
    p.add_argument("--calib-method", choices=("entropy", "max"), default="entropy")
    p.add_argument("--calib-size", type=positive_int, default=64,
                   help="number of images read from --calib-data; --int8-holdout of them are held out to verify INT8")
    p.add_argument("--quant-budget", default=None, metavar="METRIC>=BOUND",
                   help="accuracy budget of every quantized precision (INT8, FP8) vs FP32 on the held-out images: "
                        "cosine>=0.995 (mean per-sample cosine) or agreement>=0.99 (top-1 agreement); when the "
                        f"all-quantized graph misses it, the most sensitive regions stay FP16; unset: {DEFAULT_INT8_BUDGET}")
    p.add_argument("--int8-budget", default=None, metavar="METRIC>=BOUND",
                   help="INT8's budget alone (overrides --quant-budget for INT8)")
    p.add_argument("--fp8-budget", default=None, metavar="METRIC>=BOUND",
                   help="FP8's budget alone (overrides --quant-budget for FP8)")
    p.add_argument("--int8-holdout", "--quant-holdout", type=float, default=0.25, metavar="FRACTION",
                   help="share of the calibration images held out (never calibrated on) to verify INT8 and FP8; each "
                        "is also used mirrored")
    p.add_argument("--int8-sensitivity", "--quant-sensitivity", action="store_true",
                   help="write the per-region sensitivity report (<stem>.int8|fp8.sensitivity.json/.png) even when "
                        "the budget is met")
    p.add_argument("--no-int8-fallback", "--no-quant-fallback", dest="int8_fallback", action="store_false",
                   help="when all-INT8 (all-FP8) misses the budget, fail (nothing written) instead of searching for "
                        "FP16 regions")
    p.add_argument("--int8-regions", "--quant-regions", choices=("layer", "kind"), default="layer",
                   help="sensitivity regions: each block's sub-layers, or each sub-layer kind across blocks (quicker)")
    p.add_argument("--int8-sensitivity-method", "--quant-sensitivity-method", choices=("local", "loo"),
                   default="local", dest="sensitivity_method",
                   help="how the budget's search ranks the regions: 'local' (default) ranks all by their own "
                        "quantization error in one pass and confirms the 8 largest leave-one-out; 'loo' leaves every "
                        "region out in turn (one trial per region: svt_s 224 has 166). Either way the choice is "
                        "trial-checked on the held-out images and thinned by a backward pass")
    p.add_argument("--fp16-data-max", type=float, default=512.0,
                   help="AutoCast keeps in FP32 every node whose |I/O| exceeds this on the calibration images")
    p.add_argument("--no-trace-cache", dest="trace_cache", action="store_const", const="off", default=None,
                   help="trace the model again even when the same model, code and shapes were traced before (traces "
                        "are kept in $TWINS_TRT_CACHE, default ~/.cache/twins-trt/traces, at most "
                        "$TWINS_TRT_CACHE_MAX_GB, default 2)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=positive_int, default=1, help="static batch size")
    g.add_argument("--dynamic-batch", type=parse_range, metavar="MIN:OPT:MAX", default=None,
                   help="symbolic batch dim with this TensorRT profile, e.g. 1:8:64")
    p.add_argument("--img-size", type=parse_hw, default=(224, 224), metavar="H[xW]", help="static input size")
    p.add_argument("--dynamic-shape", type=parse_hw_range, default=None, metavar="MIN:OPT:MAX",
                   help="symbolic H/W (backbones), e.g. 224:512:1024x2048; implies padding-safe windows")
    p.add_argument("--features", action="store_true", help="export the backbone: four NCHW maps at strides 4..32")
    p.add_argument("--task", choices=("cls", "seg"), default="cls",
                   help="seg: a segmentor (backbone + --seg-head), one output 'logits' (B, K, H, W)")
    p.add_argument("--seg-head", choices=("fpn", "uper", "mlp"), default="fpn", help="with --task seg: the decode head")
    p.add_argument("--num-classes", type=int, default=None,
                   help="with --task seg: classes; default from the checkpoint's head, else 150 (ADE20K)")
    p.add_argument("--seg-output", choices=("input", "stride4"), default="input",
                   help="with --task seg: logits resized to the input (mmseg 'whole' mode) or left at stride 4")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 18; INT8 needs >= 19)")
    p.add_argument("--fp16-io", action="store_true", help="FP16 inputs/outputs for the FP16/INT8 artifacts")
    p.add_argument("--verify-samples", type=positive_int, default=4, help="inputs compared against PyTorch per artifact")
    p.add_argument("--compare-peers", action="store_true",
                   help="also report timm's own export of the variant and timm's Swin-T side by side")
    p.add_argument("--peers-iters", type=nonneg_int, default=0, help="with --compare-peers: ONNX Runtime CPU runs to time each")
    p.add_argument("--no-build", action="store_true", help="do not build TensorRT engines after the export")
    p.add_argument("--engines-dir", type=output_dir, default=Path("engines"))
    p.add_argument("--triton-repo", type=output_dir, default=None, help="also write a Triton model repository here")
    p.add_argument("-o", "--out-dir", type=output_dir, default=Path("export"))
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    precisions = ("fp32",) + tuple(p for p in ("fp16", "int8", "fp8") if getattr(args, p))
    opts = ExportOptions(
        variant=args.variant, out_dir=args.out_dir, weights=args.weights, precisions=precisions, batch=args.batch,
        dynamic_batch=args.dynamic_batch, img_size=args.img_size, dynamic_shape=args.dynamic_shape,
        features=args.features, opset=args.opset, calib_dir=args.calib_data, calib_method=args.calib_method,
        calib_size=args.calib_size, calib_synthetic=args.calib_synthetic, fp16_io=args.fp16_io,
        verify_samples=args.verify_samples, progress=not args.quiet,
        task=args.task, seg_head=args.seg_head, num_classes=args.num_classes, seg_output=args.seg_output,
        int8_budget=args.int8_budget or args.quant_budget, fp8_budget=args.fp8_budget or args.quant_budget,
        fp8_attention=args.fp8_attention, int8_sensitivity=args.int8_sensitivity, int8_regions=args.int8_regions,
        int8_fallback=args.int8_fallback, sensitivity_method=args.sensitivity_method,
        holdout=args.int8_holdout, fp16_data_max=args.fp16_data_max, trace_cache=args.trace_cache,
    )
    res = export_variant(opts, on_step=None if args.quiet else lambda m: print(f"[twins-export] {m}", file=sys.stderr))
    reports = [res.reports[p] for p in res.artifacts]
    print(format_report(reports))
    print()
    print(res.summary())
    if res.sensitivity_table:
        print()
        print(res.sensitivity_table)
    for precision, q in res.budgets.items():  # int8, fp8: the budgeted stage's outcome
        print(f"\n{precision} budget {q['budget']}: {len(q['fp16_regions'])} region(s) kept in FP16"
              f"{' (' + ', '.join(q['fp16_regions']) + ')' if q['fp16_regions'] else ''}; "
              f"{q[f'{precision}_mac_share']:.1%} of MatMul/Conv MACs in {precision.upper()}")
    if res.overflow is not None:
        from twins_trt.export.overflow import format_overflow

        print("\n" + format_overflow(res.overflow))
    report_path = artifacts.write_json_atomic(
        Path(args.out_dir) / f"{opts.stem}.report.json",
        {"variant": opts.variant, "stem": opts.stem,
         "graphs": {p: r.to_dict() for p, r in res.reports.items()},
         "verification": {p: v.to_dict() for p, v in res.verdicts.items()},
         "artifacts": {p: str(a) for p, a in res.artifacts.items()}},
    )
    print(f"\nwrote {', '.join(str(a) for a in res.artifacts.values())} (manifests beside them); report {report_path}")

    if args.compare_peers:
        from twins_trt.export.peers import compare_peers

        peers = compare_peers(opts.variant, res.artifacts["fp32"], Path(args.out_dir), opts.opset, args.peers_iters)
        print("\ngraph comparison (static 224 export, fp32):")
        print(format_report([p.report for p in peers.values()]))
        if args.peers_iters:
            base = peers[next(iter(peers))].img_per_s
            print("\nONNX Runtime CPU, batch 1, median img/s (measured round-robin in this process):")
            for name, p in peers.items():
                print(f"  {name:40s} {p.img_per_s:8.1f} img/s  ({p.img_per_s / base:.2f}x ours)")
        artifacts.write_json_atomic(Path(args.out_dir) / f"{opts.stem}.peers.json",
                                    {k: {**v.report.to_dict(), "img_per_s": v.img_per_s} for k, v in peers.items()})

    if args.triton_repo is not None:
        from twins_trt.triton import write_triton_repo

        written = write_triton_repo(list(res.artifacts.values()), args.triton_repo)
        print(f"Triton model repository: {', '.join(str(w) for w in written)}")

    if not args.no_build and any(p in res.artifacts for p in ("fp16", "int8", "fp8")):
        from twins_trt.trt.build import try_build_after_export

        for precision in ("fp16", "int8", "fp8"):
            if precision in res.artifacts:
                print(try_build_after_export(res.artifacts[precision], args.engines_dir)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
