"""One table maps every typed error to its exit code, and every command's error path uses it."""

from __future__ import annotations

import inspect

import pytest

from twins_trt import errors
from twins_trt.cli.common import EXIT_CODES, Parser, exit_code, run


def typed_errors() -> list[type]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, errors.TwinsError) and c.__module__ == errors.__name__]


def test_every_typed_error_has_its_exit_code():
    missing = [c.__name__ for c in typed_errors() if c not in EXIT_CODES]
    assert not missing, f"typed errors without an entry in cli.common.EXIT_CODES: {missing}"


@pytest.mark.parametrize("error, code", [
    (errors.VerificationError("worse than its bound"), 1),
    (errors.AccuracyBudgetError("budget missed"), 1),
    (errors.RegressionError("slower"), 3),
    (errors.ProfileError("bad profile"), 2),
    (errors.DatasetError("empty folder"), 2),
    (errors.WorkerError("side died"), 2),
])
def test_run_ends_with_the_tables_code_and_one_line(error, code, capsys):
    def body(args):
        raise error

    assert exit_code(error) == code
    assert run(Parser(prog="twins-x"), body, []) == code
    err = capsys.readouterr().err
    assert err == f"error: {error}\n"
