"""twins-eval: top-1/top-5 of every backend on an ImageNet-style folder, against PyTorch fp32.

    twins-eval --variant svt_s --data /data/imagenet/val --weights timm --limit 1000
    twins-eval --variant svt_s --data DIR --backends torch,ort-cpu,ort-cpu-int8 --calib-data /data/calib

Backends are twins-bench's names (torch, ort-cpu, ort-cpu-fp16, ort-cpu-int8, trt-fp16, ..., groups
cpu/gpu/all/auto; ort-fp32/ort-fp16/ort-int8 still work). Reports per backend top-1, top-5, their
change from PyTorch fp32, top-1 agreement with PyTorch fp32 and the mean cosine of the logits, the
images used and, for INT8, the images it was calibrated on, as a table here and as JSON and
Markdown under -o. Each backend is evaluated on its own: one that cannot run gets a row saying why.
An INT8 that misses the export's accuracy bound is still evaluated (from a temporary file) and flagged.

Exit 0 when the reference and at least one requested backend were evaluated; 2 when the reference
or every requested backend could not be, or the evaluation could not start; 1 with --strict when
any backend could not be evaluated or an INT8 is below the export bound; 130 interrupted. With --task seg
(segmentors: pixel agreement with PyTorch fp32, mIoU with --masks; same backend names), 1 when a backend failed.
"""

from __future__ import annotations

import argparse
import sys

from twins_trt.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERIFY,
    input_file,
    make_parser,
    output_dir,
    parse_hw,
    positive_int,
    run,
    weights_arg,
)
from twins_trt.eval.backends import DEFAULT_BACKENDS


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("twins-eval", __doc__.split("\n\n")[0], raw=True,
                    epilog="Accuracy needs real weights (--weights); with random ones only agreement and cosine "
                           "mean anything, and the report says so.")
    p.add_argument("--variant", required=True, help="svt_s, pcpvt_b, ... (timm and official names work too)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="ImageNet-style folder: one subfolder per class, images inside (searched recursively)")
    p.add_argument("--weights", type=weights_arg, metavar="PATH|timm",
                   help="a .pth/.safetensors checkpoint, or 'timm' for timm's ImageNet weights (default: random)")
    p.add_argument("--backends", default=DEFAULT_BACKENDS, metavar="LIST",
                   help=f"comma-separated backends or groups, as twins-bench takes them (default: {DEFAULT_BACKENDS}; "
                        "torch is always run as the reference)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="evaluate at most N images, taken across all classes")
    p.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="batch size; >1 uses a dynamic-batch export (1:N:N) (default: 1)")
    p.add_argument("--class-map", type=input_file, metavar="FILE",
                   help="class folder name per line (index = line number) or JSON {folder: index} "
                        "(default: sorted folder names, as torchvision ImageFolder)")
    p.add_argument("--partial-classes", action="store_true",
                   help="allow a class map that names folders absent here (a subset of its classes)")
    p.add_argument("--export-dir", type=output_dir, default="export", metavar="DIR",
                   help="ONNX artifacts: reused when their manifest matches, exported here otherwise (default: export)")
    p.add_argument("--engines-dir", "--engine-dir", dest="engines_dir", type=output_dir, default="engines",
                   metavar="DIR", help="TensorRT engines for trt-*: reused or built there (default: engines)")
    calib = p.add_mutually_exclusive_group()
    calib.add_argument("--calib-data", metavar="DIR",
                       help="INT8 calibration images (default: the --data folder itself, with a warning)")
    calib.add_argument("--calib-synthetic", action="store_true", help="calibrate INT8 on random data (poor INT8)")
    p.add_argument("--calib-size", type=positive_int, default=64, metavar="N", help="calibration images (default: 64)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="ONNX Runtime intra-op threads (default: ORT's choice)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device of the PyTorch backends (default: cuda when visible, else cpu)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any backend could not be evaluated or an INT8 is below the export bound")
    p.add_argument("-o", "--out-dir", type=output_dir, default="eval", metavar="DIR",
                   help="where <stem>.eval.json and .eval.md go (default: eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (same as -q)")
    seg = p.add_argument_group("segmentation (--task seg; twins_trt.eval.seg)")
    seg.add_argument("--task", choices=("cls", "seg"), default="cls",
                     help="seg: --data is a folder of images; pixel agreement with PyTorch fp32, mIoU with --masks")
    seg.add_argument("--masks", metavar="DIR", help="ground-truth PNGs named like the images (class index per pixel)")
    seg.add_argument("--seg-head", choices=("fpn", "uper", "mlp"), default="fpn")
    seg.add_argument("--num-classes", type=positive_int, help="default: from the checkpoint's head, else 150")
    seg.add_argument("--seg-size", type=parse_hw, default=(512, 512), metavar="HxW",
                     help="images (and masks) are resized to this (default: 512x512)")
    seg.add_argument("--reduce-zero-label", action="store_true", help="masks: 0 is 'other' (ignored), k -> k-1 (ADE20K)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), _main, argv)


def _say(args: argparse.Namespace):
    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[twins-eval] {msg}", file=sys.stderr, flush=True)

    return say


def _main(args: argparse.Namespace) -> int:
    if args.task == "seg":
        return _main_seg(args)
    from twins_trt.eval import EvalOptions, evaluate

    say = _say(args)
    opts = EvalOptions(variant=args.variant, data=args.data, weights=args.weights, backends=args.backends,
                       limit=args.limit, batch=args.batch, class_map=args.class_map,
                       partial_classes=args.partial_classes, export_dir=args.export_dir, engines_dir=args.engines_dir,
                       calib_dir=args.calib_data, calib_synthetic=args.calib_synthetic, calib_size=args.calib_size,
                       out_dir=args.out_dir, threads=args.threads, device=args.device,
                       progress=not (args.no_progress or args.quiet))
    report = evaluate(opts, on_step=say)
    print(report.format_console())
    for kind, path in report.paths.items():
        say(f"wrote {kind}: {path}")
    return exit_code(report, args.strict)


def _main_seg(args: argparse.Namespace) -> int:
    """`--task seg`: pixel agreement and mIoU per backend; 1 when a backend failed."""
    from twins_trt.eval.seg import SegEvalOptions, evaluate_seg, format_seg_report

    say = _say(args)
    opts = SegEvalOptions(variant=args.variant, data=args.data, masks=args.masks, head=args.seg_head,
                          num_classes=args.num_classes, weights=args.weights, size=args.seg_size,
                          backends=args.backends, export_dir=args.export_dir, limit=args.limit,
                          reduce_zero_label=args.reduce_zero_label, threads=args.threads, device=args.device,
                          out_dir=args.out_dir, progress=not (args.no_progress or args.quiet))
    doc = evaluate_seg(opts, say=say)
    print(format_seg_report(doc))
    if "path" in doc:
        say(f"wrote {doc['path']}")
    return EXIT_VERIFY if any(r["status"] == "failed" for r in doc["results"]) else EXIT_OK


def exit_code(report, strict: bool = False) -> int:
    """Non-zero only when the reference or every requested backend has no figures, or --strict finds a gap."""
    ref = report.reference
    if not ref.ok:
        print(f"error: the PyTorch fp32 reference could not be evaluated: {ref.reason}", file=sys.stderr)
        return EXIT_ERROR
    requested = report.requested
    if requested and not any(r.ok for r in requested):
        print("error: none of the requested backends could be evaluated: "
              + "; ".join(f"{r.name}: {r.reason}" for r in requested), file=sys.stderr)
        return EXIT_ERROR
    if strict:
        gaps = [f"{r.name}: {r.status} ({r.reason})" for r in report.not_evaluated]
        gaps += [f"{r.name}: below the export bound" for r in report.results if r.ok and r.below_bound]
        if gaps:
            print(f"error: --strict: {'; '.join(gaps)}", file=sys.stderr)
            return EXIT_VERIFY
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
