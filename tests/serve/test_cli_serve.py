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
