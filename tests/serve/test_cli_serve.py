"""twins-serve's bad input: one `error:` line and exit 2, before any server starts."""

from __future__ import annotations

import pytest

from twins_trt.cli.serve import main


@pytest.mark.parametrize("argv, says", [
    (["/nonexistent/svt_s.onnx"], "error: twins-serve: argument ARTIFACT: /nonexistent/svt_s.onnx does not exist"),
    (["{txt}"], "error: {txt}: expected an exported .onnx or a TensorRT .plan"),
    (["{txt}", "--http-port", "70000"], "70000 is not a port; give 1 to 65535"),
    (["{txt}", "--load", "--concurrency", "1,0"], "give concurrencies >= 1, e.g. 1,4,16"),
    (["{txt}", "--backend", "onnxruntime"], "argument --backend: invalid choice: 'onnxruntime'"),
])
def test_bad_input_is_one_line(argv, says, tmp_path, capsys):
    txt = tmp_path / "notes.txt"
    txt.write_text("not a model")
    assert main([a.format(txt=txt) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says.format(txt=txt) in err[0], err


def test_a_ctrl_c_lost_inside_the_liveness_check_still_stops_cleanly():
    """Ctrl-C reaches Triton too, and the KeyboardInterrupt it raises can be swallowed inside PyTriton's liveness
    check while Triton shuts itself down: the signal is remembered, so that is a Ctrl-C, not a server that died."""
    import os
    import signal
    import time

    from twins_trt.cli.serve import _wait_for_ctrl_c

    class SwallowsIt:  # a server whose wait() loses the KeyboardInterrupt, as PyTriton's is_alive() can
        def wait(self):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                pass

    class DiesByItself:
        def wait(self):
            return

    before = signal.getsignal(signal.SIGINT)
    assert _wait_for_ctrl_c(SwallowsIt()) is True
    assert _wait_for_ctrl_c(DiesByItself()) is False
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
