"""twins-triton: a Triton Inference Server model repository from exported ONNX files and TensorRT plans.

    twins-triton export/svt_s_bdyn.fp16.onnx engines/svt_s_bdyn.fp16.plan -o triton --instances 2
    docker run --gpus all -v $PWD/triton:/models nvcr.io/nvidia/tritonserver:25.12-py3 \\
        tritonserver --model-repository=/models

Each artifact becomes one model (`svt_s_bdyn_fp16`, `svt_s_bdyn_fp16_trt`) with config.pbtxt and
1/model.onnx or 1/model.plan. Exit 0 written, 2 bad input or could not write, 130 interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from twins_trt.cli.common import input_file, make_parser, output_dir, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("twins-triton", __doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], raw=True,
                    quiet=False)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", type=input_file,
                   help="exported .onnx (manifest beside it) or TensorRT .plan (metadata .json beside it)")
    p.add_argument("-o", "--repo", type=output_dir, default="triton", metavar="DIR",
                   help="model repository folder (default: triton)")
    p.add_argument("--instances", type=positive_int, default=1, metavar="N",
                   help="model instances per GPU (instance_group count, default: 1)")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="model name, once per artifact in order (default: <stem>_<precision>, plus _trt for plans)")
    p.add_argument("--kind", choices=("gpu", "cpu"), default="gpu",
                   help="instance kind for ONNX models (plans are always GPU; default: gpu)")
    p.add_argument("--trt-accelerator", action="store_true",
                   help="ONNX models: let ONNX Runtime hand the graph to TensorRT (gpu_execution_accelerator "
                        "'tensorrt', precision from the artifact)")
    p.add_argument("--version", type=positive_int, default=1, help="model version folder (default: 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    from twins_trt.triton import parse_config, write_triton_repo

    dirs = write_triton_repo(args.artifacts, args.repo, args.instances, names=args.name, kind=args.kind,
                             trt_accelerator=args.trt_accelerator, version=args.version)
    for d in dirs:
        text = (d / "config.pbtxt").read_text()
        cfg = parse_config(text)
        if cfg is not None:
            ins = ", ".join(f"{i.name}{list(i.dims)}" for i in cfg.input)
            print(f"{d}: {cfg.platform}, max_batch_size {cfg.max_batch_size}, inputs {ins}")
        else:
            print(f"{d}: written (install tritonclient to have configs checked against Triton's schema)")
    repo = Path(args.repo).resolve()  # docker -v takes an absolute path (a bare name is a named volume)
    print(f"serve: docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo}:/models "
          "nvcr.io/nvidia/tritonserver:25.12-py3 tritonserver --model-repository=/models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
