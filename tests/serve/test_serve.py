"""twins-serve on a real Triton server (PyTriton's tritonserver, Python backend) serving svt_s on OpenVINO:
answers over HTTP and gRPC against the runner in-process, the config twins-triton writes, bad requests, load
with a kill and a restart, and Ctrl-C. One server for the module (the kill test restarts it; Ctrl-C ends it).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import ServeProcess, descendants

from twins_trt.backends import BACKENDS, make_runner
from twins_trt.serve.load import Target, reference_answers, run_load, samples_for

MODEL = "svt_s_64x64_bdyn_fp32"
ATOL = 1e-4  # served vs in-process, same runtime: only batch composition differs


@pytest.fixture(scope="module")
def served(svt_s_served_onnx, tmp_path_factory):
    server = ServeProcess(svt_s_served_onnx, tmp_path_factory.mktemp("serve"), MODEL).start()
    yield server
    server.stop()
    if server.alive():
        server.kill()


@pytest.fixture(scope="module")
def reference(svt_s_served_onnx):
    """Eight inputs and the in-process answers of the runner the server runs (OpenVINO FP32, batch 1 each)."""
    samples = samples_for((3, 64, 64), count=8)
    with make_runner(BACKENDS["openvino"], model=None, device="cpu", onnx={"fp32": svt_s_served_onnx}, engines={},
                     threads=None) as runner:
        expected = reference_answers(runner, "input", "logits", samples)
    assert np.abs(expected[0] - expected[1]).max() > 100 * ATOL  # an answer for the wrong image would show
    return samples, expected


def live(server: ServeProcess) -> ServeProcess:
    return server if server.alive() else server.start()


def http_infer(server: ServeProcess, x: np.ndarray) -> np.ndarray:
    import tritonclient.http as client

    c = client.InferenceServerClient(f"127.0.0.1:{server.http}")
    try:
        inp = client.InferInput("input", list(x.shape), client.np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x)
        return c.infer(MODEL, [inp]).as_numpy("logits")
    finally:
        c.close()


def grpc_infer(server: ServeProcess, x: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as client

    c = client.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    try:
        inp = client.InferInput("input", list(x.shape), client.np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x)
        return c.infer(MODEL, [inp], client_timeout=60).as_numpy("logits")
    finally:
        c.close()


def post(server: ServeProcess, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http, timeout=60)
    try:
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}").get("error", "")
    finally:
        conn.close()


def binary_request(x: np.ndarray, datatype: str | None = None, extra: bytes = b"") -> tuple[bytes, dict]:
    import tritonclient.http as client

    inp = client.InferInput("input", list(x.shape), datatype or client.np_to_triton_dtype(x.dtype))
    inp.set_data_from_numpy(x, binary_data=True)
    body, json_size = client.InferenceServerClient.generate_request_body([inp])
    return body + extra, {"Inference-Header-Content-Length": str(json_size)}


# ---------------------------------------------------------------------------------------------- serving


def test_prints_endpoints_and_signature(served):
    out = live(served).output()
    assert f"HTTP     http://127.0.0.1:{served.http}   (POST http://127.0.0.1:{served.http}/v2/models/{MODEL}/infer)" in out
    assert f"gRPC     127.0.0.1:{served.grpc}" in out and f"metrics  http://127.0.0.1:{served.metrics}/metrics" in out
    assert "input  input: FP32 [-1, 3, 64, 64]" in out and "output logits: FP32 [-1, 1000]" in out
    assert "batch  1..16 per request; dynamic batching on (preferred [4, 16], queue delay 100 us)" in out


def test_http_and_grpc_answers_match_the_runner_in_process(served, reference):
    samples, expected = reference
    server = live(served)
    diffs = {}
    for name, infer in (("http", http_infer), ("grpc", grpc_infer)):
        one = np.stack([infer(server, s[None])[0] for s in samples[:4]])
        three = infer(server, samples[4:7])  # a request of three images
        diffs[name] = float(max(np.abs(one - expected[:4]).max(), np.abs(three - expected[4:7]).max()))
    print(f"\nmax |served - in-process| over logits: {json.dumps(diffs)}")
    assert max(diffs.values()) <= ATOL, diffs


def test_served_config_is_the_one_twins_triton_writes(served, svt_s_served_onnx, tmp_path):
    import tritonclient.http as client

    from twins_trt.triton import model_config_pb2, parse_config, write_triton_repo

    (model_dir,) = write_triton_repo([svt_s_served_onnx], tmp_path / "triton", kind="cpu")
    written = parse_config((model_dir / "config.pbtxt").read_text())
    c = client.InferenceServerClient(f"127.0.0.1:{live(served).http}")
    try:
        cfg = c.get_model_config(MODEL)
    finally:
        c.close()
    assert model_dir.name == cfg["name"] == MODEL
    assert cfg["backend"] == "python" and written.platform == "onnxruntime_onnx"
    assert cfg["max_batch_size"] == written.max_batch_size == 16
    assert cfg["dynamic_batching"]["preferred_batch_size"] == list(written.dynamic_batching.preferred_batch_size) \
        == [4, 16]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == \
        written.dynamic_batching.max_queue_delay_microseconds == 100
    pb2 = model_config_pb2()
    for which in ("input", "output"):
        assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in cfg[which]] == \
            [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(written, which)]


# ---------------------------------------------------------------------------------------------- bad requests

GOOD = samples_for((3, 64, 64), count=1)
BAD_REQUESTS = {  # name -> (how it is sent, expected status, words the error must contain)
    "wrong shape": (lambda: binary_request(np.zeros((1, 3, 64, 32), np.float32)), 400,
                    "unexpected shape for input 'input'"),
    "wrong dtype": (lambda: binary_request(np.zeros((1, 3, 64, 64), np.float64)), 400,
                    "inference input 'input' data-type is 'FP64', but model"),
    "batch above max": (lambda: binary_request(np.zeros((17, 3, 64, 64), np.float32)), 400,
                        "batch-size must be <= 16"),
    "non-finite": (lambda: binary_request(np.where(np.arange(GOOD.size).reshape(GOOD.shape) == 7, np.inf, GOOD)
                                          .astype(np.float32)), 500,
                   "input 'input' has 1 non-finite value(s) (NaN or Inf) out of 12288"),
    "empty body": (lambda: (b"", {}), 400, "empty request body"),
    "body over the tensor": (lambda: binary_request(GOOD, extra=b"\0" * 4096), 400,
                             "unexpected additional input data"),
    "oversized body": (lambda: binary_request(np.zeros((86, 3, 64, 64), np.float32)), 413,
                       "bytes is over this server's HTTP limit of 4128768 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_an_error_and_the_server_keeps_serving(served, reference, case):
    make, status, says = BAD_REQUESTS[case]
    server = live(served)
    body, headers = make()
    got_status, message = post(server, body, headers)
    assert (got_status, says) == (status, says) and says in message, message
    samples, expected = reference
    np.testing.assert_allclose(http_infer(server, samples[:1]), expected[:1], atol=ATOL)  # the next good one
    assert server.alive()


@pytest.mark.parametrize("x, says", [(np.zeros((17, 3, 64, 64), np.float32), "batch-size must be <= 16"),
                                     (np.zeros((1, 3, 64, 32), np.float32), "unexpected shape for input 'input'"),
                                     (np.full((2, 3, 64, 64), np.nan, np.float32), "non-finite value(s)")])
def test_bad_grpc_request_gets_an_error(served, reference, x, says):
    from tritonclient.utils import InferenceServerException

    server = live(served)
    with pytest.raises(InferenceServerException, match=re.escape(says)):
        grpc_infer(server, x)
    samples, expected = reference
    np.testing.assert_allclose(grpc_infer(server, samples[:1]), expected[:1], atol=ATOL)


# ---------------------------------------------------------------------------------------------- load, kill, restart


def metric(server: ServeProcess, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'model="{MODEL}"' in line)


def settled_counts(server: ServeProcess, expected: int, timeout_s: float = 15.0) -> tuple[float, float]:
    """Triton's success and failure counters, read until they reach `expected` together (or `timeout_s` passes):
    a response can reach the client before Triton counts it (seen once: 159 counted, all 160 answered)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        success, failure = metric(server, "nv_inference_request_success"), metric(server, "nv_inference_request_failure")
        if success + failure >= expected or time.monotonic() > deadline:
            return success, failure
        time.sleep(0.25)


def test_load_with_a_kill_and_a_restart_loses_no_request_and_answers_none_wrong(served, reference):
    samples, expected = reference
    server = live(served)
    target = Target(f"127.0.0.1:{server.grpc}", MODEL, "input", "logits")
    requests, poison_every = 160, 10  # every 10th request carries a NaN: it must fail alone, also when batched
    killed: list[int] = []

    def kill_after_32(result):  # SIGKILL the whole server tree mid-load, requests in flight
        if result.outcomes >= 32 and not killed:
            killed.extend(server.kill_now())

    before = run_load(target, samples, concurrency=16, requests=requests, expected=expected, atol=ATOL,
                      poison_every=poison_every, timeout_s=60, backoff_s=0.01, on_outcome=kill_after_32)
    server.reap(killed)
    assert killed and not server.alive()
    server.start()  # same ports
    after = run_load(target, samples, concurrency=16, requests=requests, expected=expected, atol=ATOL,
                     poison_every=poison_every, timeout_s=60)
    success, failure = settled_counts(server, requests)
    print(f"\nkilled mid-load: {json.dumps(before.to_dict())}\nafter restart: {json.dumps(after.to_dict())}"
          f"\nserver after restart counted {success:.0f} successes, {failure:.0f} failures")
    for r in (before, after):
        assert r.sent == requests == r.answered + r.errors + r.connection_errors  # one outcome per request
        assert r.wrong == 0, r.to_dict()
    assert before.connection_errors > 0 and before.answered >= 32 - before.errors
    assert after.connection_errors == 0 and after.errors == requests // poison_every
    assert after.answered == requests - requests // poison_every and after.max_abs_diff <= ATOL
    # the server executed each request the clients sent once (Triton 2.51 counts a Python-backend model's error
    # response as an executed request: success)
    assert success + failure == after.answered + after.errors == requests


def test_ctrl_c_answers_requests_in_flight_then_stops(served, reference):
    samples, expected = reference
    server = live(served)
    batch = np.concatenate([samples, samples])  # 16 images: the slowest request there is
    answers: list = []

    def ask():
        try:
            answers.append(grpc_infer(server, batch))
        except Exception as e:  # noqa: BLE001 - a lost request is what this test must not see
            answers.append(e)

    clients = [threading.Thread(target=ask) for _ in range(4)]
    for t in clients:
        t.start()
    time.sleep(1.0)  # requests in flight (16 images each take seconds on 2 busy cores)
    tree = [server.proc.pid, *descendants(server.proc.pid)]
    rc = server.interrupt(timeout_s=120)
    for t in clients:
        t.join(timeout=60)
    assert rc == 0 and "stopped" in server.output(), server.output()[-1500:]
    assert len(answers) == 4 and all(isinstance(a, np.ndarray) for a in answers), answers
    for a in answers:
        np.testing.assert_allclose(a, np.concatenate([expected, expected]), atol=ATOL)
    assert not [p for p in tree if Path(f"/proc/{p}").exists()]  # nothing left running
