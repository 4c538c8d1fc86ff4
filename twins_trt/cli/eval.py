"""twins-eval: top-1/top-5 of every backend on an ImageNet-style folder, against PyTorch fp32.

    twins-eval --variant svt_s --data /data/imagenet/val --weights timm --limit 1000
    twins-eval --variant svt_s --data DIR --backends torch,ort-fp32,ort-int8 --calib-data /data/calib

Reports per backend top-1, top-5, their change from PyTorch fp32, top-1 agreement with PyTorch
fp32 and the mean cosine of the logits, as a table here and as JSON and Markdown under -o.
Exit 0 when every runnable backend ran (TensorRT ones are skipped with a reason on a machine
without a GPU), 1 when one failed mid-run, 2 when the evaluation could not start.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from twins_trt.errors import TwinsError

BACKENDS_HELP = "torch,ort-fp32,ort-fp16,ort-int8,trt-fp16,trt-int8"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="twins-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Accuracy needs real weights (--weights); with random ones only agreement "
                                       "and cosine mean anything, and the report says so.")
    p.add_argument("--variant", required=True, help="svt_s, pcpvt_b, ... (timm and official names work too)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="ImageNet-style folder: one subfolder per class, images inside (searched recursively)")
    p.add_argument("--weights", metavar="PATH|timm",
                   help="a .pth/.safetensors checkpoint, or 'timm' for timm's ImageNet weights (default: random)")
    p.add_argument("--backends", default=BACKENDS_HELP, metavar="LIST",
                   help=f"comma-separated, from {BACKENDS_HELP} (default: all; torch is always run as the reference)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate at most N images, taken across all classes")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="batch size; >1 uses a dynamic-batch export (1:N:N) (default: 1)")
    p.add_argument("--class-map", metavar="FILE",
                   help="class folder name per line (index = line number) or JSON {folder: index} "
                        "(default: sorted folder names, as torchvision ImageFolder)")
    p.add_argument("--partial-classes", action="store_true",
                   help="allow a class map that names folders absent here (a subset of its classes)")
    p.add_argument("--export-dir", default="export", metavar="DIR",
                   help="ONNX artifacts: reused when their manifest matches, exported here otherwise (default: export)")
    p.add_argument("--engine-dir", default="engines", metavar="DIR",
                   help="TensorRT engines for trt-* (default: engines)")
    calib = p.add_mutually_exclusive_group()
    calib.add_argument("--calib-data", metavar="DIR",
                       help="INT8 calibration images (default: the --data folder itself, with a warning)")
    calib.add_argument("--calib-synthetic", action="store_true", help="calibrate INT8 on random data (poor INT8)")
    p.add_argument("--calib-size", type=int, default=64, metavar="N", help="calibration images (default: 64)")
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads (default: ORT's choice)")
    p.add_argument("-o", "--out-dir", default="eval", metavar="DIR",
                   help="where <stem>.eval.json and .eval.md go (default: eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from twins_trt.evaluate import EvalOptions, evaluate

    def say(msg: str) -> None:
        print(f"[twins-eval] {msg}", file=sys.stderr, flush=True)

    try:
        opts = EvalOptions(variant=args.variant, data=args.data, weights=args.weights, backends=args.backends,
                           limit=args.limit, batch=args.batch, class_map=args.class_map,
                           partial_classes=args.partial_classes, export_dir=args.export_dir,
                           engine_dir=args.engine_dir, calib_dir=args.calib_data,
                           calib_synthetic=args.calib_synthetic, calib_size=args.calib_size, out_dir=args.out_dir,
                           threads=args.threads, progress=not args.no_progress)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: say(f"warning: {m}")
            report = evaluate(opts, on_step=say)
    except (TwinsError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.format_console())
    for kind, path in report.paths.items():
        say(f"wrote {kind}: {path}")
    if report.failed:
        print(f"error: {len(report.failed)} backend(s) failed: "
              + "; ".join(f"{r.name}: {r.reason}" for r in report.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
