"""twins-serve: serve one verified artifact on a real Triton server (PyTriton's tritonserver, Python backend).

    twins-serve export/svt_s_bdyn.int8.onnx                      # HTTP :8000, gRPC :8001, metrics :8002 on 127.0.0.1
    twins-serve engines/svt_s_bdyn.fp16.plan --max-queue-delay-us 500
    twins-serve export/svt_s_bdyn.fp32.onnx --load --requests 200  # in-process vs served, batching on vs off

The runner: TensorRT for a plan; OpenVINO for an ONNX (ONNX Runtime with --backend ort-cpu), in the
artifact's precision. Triton's dynamic batcher comes from the artifact's batch profile (max_batch_size = MAX,
preferred sizes OPT and MAX), the same choice twins-triton writes. Ctrl-C stops the server after the
requests in flight are answered (up to --drain-s seconds).
Exit 0 stopped (or the load test done), 2 bad input or the server could not start or died.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twins_trt.cli.common import input_file, make_parser, nonneg_int, output_dir, positive_int, run
from twins_trt.serve.server import RUNTIMES

LOOPBACK = "127.0.0.1"


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port; give 1 to 65535")
    return value


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give concurrencies as integers, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give concurrencies >= 1, e.g. 1,4,16")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("twins-serve", __doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], raw=True)
    p.add_argument("artifact", type=input_file, metavar="ARTIFACT",
                   help="exported .onnx (manifest beside it) or TensorRT .plan (metadata .json beside it)")
    p.add_argument("--backend", choices=RUNTIMES,
                   help="runner (default: trt for a plan, else openvino; ort-cpu where OpenVINO is missing)")
    p.add_argument("--host", default=LOOPBACK,
                   help=f"address to listen on (default: {LOOPBACK}, loopback only; 0.0.0.0 exposes the server)")
    p.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default: 8001)")
    p.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default: 8002)")
    p.add_argument("--max-queue-delay-us", type=nonneg_int, default=100, metavar="US",
                   help="how long Triton's dynamic batcher waits to fill a preferred batch (default: 100)")
    p.add_argument("--no-dynamic-batching", action="store_true",
                   help="run each request as it comes (max_batch_size stays the artifact's)")
    p.add_argument("--threads", type=positive_int, help="runner CPU threads (default: all usable cores)")
    p.add_argument("--drain-s", type=positive_int, default=30, metavar="S",
                   help="on Ctrl-C, wait up to S seconds for requests in flight (default: 30)")
    p.add_argument("--workdir", type=output_dir, metavar="DIR",
                   help="model repository, server workspace and tritonserver.log (default: a temporary folder)")
    p.add_argument("--name", help="model name (default: <stem>_<precision>, as twins-triton names it)")
    g = p.add_argument_group("load test (--load): in-process vs served, dynamic batching on vs off")
    g.add_argument("--load", action="store_true",
                   help="measure instead of serving: servers on free loopback ports, then a table")
    g.add_argument("--concurrency", type=_concurrencies, default=[1, 4, 16], help="comma-separated (default: 1,4,16)")
    g.add_argument("--requests", type=positive_int, default=200, help="requests per run (default: 200)")
    g.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="client protocol (default: grpc)")
    g.add_argument("-o", "--out", type=output_dir, default=Path("bench"), metavar="DIR",
                   help="where serve_load.json and serve_load.png go (default: bench)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), _main, argv)


def _options(args: argparse.Namespace):
    from twins_trt.serve.server import ServeOptions

    return ServeOptions(Path(args.artifact), backend=args.backend, host=args.host, http_port=args.http_port,
                        grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                        queue_delay_us=args.max_queue_delay_us, dynamic_batching=not args.no_dynamic_batching,
                        threads=args.threads, drain_s=args.drain_s, workdir=args.workdir, model_name=args.name)


def _main(args: argparse.Namespace) -> int:
    opts = _options(args)
    if args.load:
        return _load(args, opts)
    from twins_trt.errors import ServeError
    from twins_trt.serve.server import Server, signature

    server = Server(opts)
    print(f"starting Triton for {opts.artifact} on {server.backend.name} ...", flush=True)
    with server:
        e = server.endpoints
        print(f"serving model {server.name!r} ({server.backend.name}, {server.spec.precision or 'fp32'})")
        print(f"  HTTP     {e['http']}   (POST {e['infer']})")
        print(f"  gRPC     {e['grpc']}")
        print(f"  metrics  {e['metrics']}")
        for line in signature(server.spec, server.batching):
            print(f"  {line}")
        print("Ctrl-C stops it after the requests in flight are answered", flush=True)
        if _wait_for_ctrl_c(server):
            print(f"stopping: answering the requests in flight (up to {opts.drain_s} s) ...", flush=True)
            server.stop()
            print("stopped", flush=True)
            return 0
        raise ServeError(f"the Triton server stopped unexpectedly: {server.log_problem()}")


def _wait_for_ctrl_c(server) -> bool:
    """Block while the server is up; True when Ctrl-C ended it, False when it died by itself.

    A terminal's Ctrl-C reaches Triton too (the whole process group), and the KeyboardInterrupt it raises here
    can land inside PyTriton's liveness check and be lost there while Triton shuts itself down: seen once in
    the suite as "stopped unexpectedly" right after `Signal (2) received`. So the signal is remembered here, not
    only raised."""
    import signal

    received: list[int] = []

    def on_sigint(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass  # on_sigint recorded it
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(received)


def _load(args: argparse.Namespace, opts) -> int:
    from twins_trt.artifacts.files import ensure_dir, write_json_atomic
    from twins_trt.serve.report import load_test, plot, table

    results = load_test(opts, args.concurrency, args.requests, args.protocol, progress=not args.quiet)
    print(table(results))
    out = ensure_dir(args.out)
    write_json_atomic(out / "serve_load.json", {"artifact": str(opts.artifact), "protocol": args.protocol,
                                                "results": [r.to_dict() for r in results]})
    plot(results, out / "serve_load.png")
    print(f"wrote {out / 'serve_load.json'} and {out / 'serve_load.png'}")
    bad = [r for r in results if r.wrong or r.errors or r.connection_errors or r.sent != r.outcomes]
    for r in bad:
        print(f"warning: {r.label} at concurrency {r.concurrency}: {r.to_dict()['error_messages']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
