"""What every twins-* command shares: its parser, the argument types that check values at parse time,
logging, one-line warnings, and the one entry wrapper that turns every failure into a line and an exit code.

Exit codes, the same for all seven commands:

    0    done
    1    a verification failed (an artifact disagrees with PyTorch beyond its bound)
    2    bad input, or the work could not be done (`error: ...`, one line)
    3    a benchmark figure regressed beyond the allowed bound
    130  interrupted (Ctrl-C); nothing half-written is left under a final name
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from twins_trt import errors
from twins_trt.artifacts.files import journal_mark, written_since
from twins_trt.errors import TwinsError, UsageError

EXIT_OK, EXIT_VERIFY, EXIT_ERROR, EXIT_REGRESSION, EXIT_INTERRUPT = 0, 1, 2, 3, 130

# Every typed error of errors.py and the exit code it ends a command with (a test keeps this table complete).
EXIT_CODES: dict[type[TwinsError], int] = {
    errors.VerificationError: EXIT_VERIFY,  # an artifact disagrees with PyTorch beyond its bound
    errors.AccuracyBudgetError: EXIT_VERIFY,  # an INT8 budget no precision mix meets (or a malformed one)
    errors.RegressionError: EXIT_REGRESSION,  # a gated speed figure fell below its bound
    errors.UnknownVariantError: EXIT_ERROR,
    errors.InputSizeError: EXIT_ERROR,
    errors.WeightsError: EXIT_ERROR,
    errors.ExportError: EXIT_ERROR,
    errors.GraphCheckError: EXIT_ERROR,
    errors.CalibrationDataError: EXIT_ERROR,
    errors.DatasetError: EXIT_ERROR,
    errors.OutputDirError: EXIT_ERROR,
    errors.BackendUnavailableError: EXIT_ERROR,
    errors.EngineMismatchError: EXIT_ERROR,
    errors.BuildError: EXIT_ERROR,
    errors.ProfileError: EXIT_ERROR,
    errors.UnsupportedByTensorRTError: EXIT_ERROR,  # a node TensorRT's ONNX parser would refuse (its operator table)
    errors.EngineRunError: EXIT_ERROR,
    errors.TritonConfigError: EXIT_ERROR,
    errors.FingerprintError: EXIT_ERROR,
    errors.RevisionError: EXIT_ERROR,
    errors.WorkerError: EXIT_ERROR,
    errors.InputFileError: EXIT_ERROR,
    errors.UsageError: EXIT_ERROR,
    errors.ServeError: EXIT_ERROR,  # twins-serve: the server did not start, load its model or stay up
    errors.TwinsError: EXIT_ERROR,
}


def exit_code(e: TwinsError) -> int:
    """The exit code of a typed error: its own class's entry in EXIT_CODES, else its nearest ancestor's."""
    return next(EXIT_CODES[c] for c in type(e).__mro__ if c in EXIT_CODES)


# ---------------------------------------------------------------------------------------------- the parser


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: twins-x: ... (see twins-x --help)`) through the common wrapper."""

    def error(self, message: str):  # argparse prints usage + message and exits; we raise and let run() say it
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def make_parser(prog: str, description: str, *, epilog: str | None = None, raw: bool = False,
                quiet: bool = True) -> Parser:
    """The parser every command starts from: -v (tracebacks and debug logs, twice for more) and -q."""
    p = Parser(prog=prog, description=description, epilog=epilog,
               formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log lines, and the traceback of an unexpected error (-vv: debug)")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or step messages")
    return p


# ---------------------------------------------------------------------------------------------- numbers


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: an integer >= lo, with a message that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number >= {lo}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give a whole number >= {lo}")
        return value

    parse.__name__ = f"integer >= {lo}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a number > 0") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is out of range; give a finite number > 0")
    return value


def parse_hw(text: str) -> tuple[int, int]:
    """`224` -> (224, 224); `512x1024` -> (512, 1024). The one size parser of every command."""
    try:
        parts = [int(p) for p in text.lower().replace("×", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write H or HxW, e.g. 224 or 512x1024") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write H or HxW with positive numbers, "
                                         "e.g. 224 or 512x1024")
    return parts[0], parts[1]


def parse_range(text: str) -> tuple[int, int, int]:
    """`1:8:64` -> (1, 8, 64), checked MIN <= OPT <= MAX; a single `8` means 8:8:8."""
    parts = text.split(":")
    try:
        lo, opt, hi = (int(p) for p in (parts * 3 if len(parts) == 1 else parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:OPT:MAX, e.g. 1:8:64") from None
    if not 1 <= lo <= opt <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= OPT <= MAX, e.g. 1:8:64")
    return lo, opt, hi


def parse_hw_range(text: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """`224:512:1024x2048` -> three (H, W) sizes."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:OPT:MAX sizes, e.g. 224:512:1024x2048")
    return tuple(parse_hw(p) for p in parts)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- paths


def _kind(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISFIFO(st.st_mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device"
    return "a file"


def _stat(path: Path, to_write: bool = False) -> os.stat_result | None:
    """None when nothing is there; a one-line ArgumentTypeError when the path cannot even be looked at.

    to_write: a path under a file is None too (the output checks then say it of the folder).
    """
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        if to_write:
            return None
        parent = next((p for p in path.parents if p.exists()), None)
        raise argparse.ArgumentTypeError(f"{path} cannot exist: {parent} is a file, not a folder") from None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: {(e.strerror or str(e)).lower()}") from None


def _existing(text: str, folder: bool) -> Path:
    path = Path(text)
    st = _stat(path)
    want = "a folder" if folder else "a regular file"
    if st is None:
        raise argparse.ArgumentTypeError(f"{path} does not exist; give the path of {want.replace('a ', 'an existing ', 1)}")
    if not (stat.S_ISDIR if folder else stat.S_ISREG)(st.st_mode):
        raise argparse.ArgumentTypeError(f"{path} is {_kind(st)}; expected {want}")
    return path


def input_file(text: str) -> Path:
    """An argparse type: an existing, readable regular file (not a folder, not a pipe)."""
    path = _existing(text, folder=False)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path} cannot be read ({(e.strerror or str(e)).lower()})") from None
    return path


def weights_arg(text: str) -> str:
    """An argparse type: 'timm', or a readable checkpoint file (its content is checked when it is loaded)."""
    if text == "timm":
        return text
    return str(input_file(text))


def input_dir(text: str) -> Path:
    """An argparse type: an existing folder that can be listed."""
    path = _existing(text, folder=True)
    if not os.access(path, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {path} cannot be read (permission denied)")
    return path


def output_dir(text: str) -> Path:
    """An argparse type: a folder that exists and is writable, or can be created (nothing is created here)."""
    path = Path(text)
    st = _stat(path, to_write=True)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise argparse.ArgumentTypeError(f"output folder {path} is not writable: it is {_kind(st)}, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"output folder {path} is not writable; choose another")
        return path
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise argparse.ArgumentTypeError(f"output folder {path} is not writable: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"output folder {path} is not writable: {parent} does not let us create it")
    return path


def output_file(text: str) -> Path:
    """An argparse type: a file path whose folder is (or can be) writable and that is not itself a folder."""
    path = Path(text)
    st = _stat(path, to_write=True)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise argparse.ArgumentTypeError(f"{path} is {_kind(st)}; expected a file name to write")
    try:
        output_dir(str(path.parent))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {e}") from None
    return path


def cache_file(text: str) -> Path:
    """An argparse type: a file that is read when present and written after (a timing cache)."""
    path = output_file(text)
    if path.exists():
        input_file(text)
    return path


# ---------------------------------------------------------------------------------------------- logging


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("twins_trt").setLevel(level)
    if verbose <= 1:  # ModelOpt and onnxscript log pages at INFO
        for noisy in ("modelopt", "onnxscript", "onnx_ir", "torch.onnx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def warning_line(message: Warning | str) -> str:
    """`twins_trt: svt_s has RANDOM weights; ...` -> `warning: svt_s has RANDOM weights; ...` (one line)."""
    text = " ".join(str(message).split())
    return f"warning: {text.removeprefix('twins_trt: ')}"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside a CLI, each warning is one clean line on stderr; library callers keep Python's warnings."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(warning_line(message), file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


# ---------------------------------------------------------------------------------------------- the wrapper


def _flat(e: BaseException) -> str:
    return " ".join(str(e).split())


def _os_error_line(e: OSError) -> str:
    what = (e.strerror or str(e)).lower()
    if e.filename is None:
        return what
    extra = f" -> {e.filename2}" if e.filename2 else ""
    return f"{e.filename}{extra}: {what}"


def _interrupt_line(mark: int) -> str:
    done = written_since(mark)
    if not done:
        return "interrupted: nothing was written under a final name"
    return (f"interrupted: nothing half-written was left under a final name; {len(done)} complete file(s) were "
            f"written before the interrupt: {', '.join(map(str, done))}")


def run(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
        argv: list[str] | None = None) -> int:
    """Parse `argv`, run `body(args)` and turn whatever happens into one line and an exit code.

    Typed errors -> `error: ...` and their EXIT_CODES entry (1 a failed verification, 3 a regression, else 2);
    Ctrl-C -> 130;
    OS errors -> the path and what was wrong with it; anything else -> one line and a hint to rerun with -v.
    """
    mark = journal_mark()
    verbose = 0

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        with one_line_warnings():
            args = parser.parse_args(argv)
            verbose = getattr(args, "verbose", 0) or 0
            setup_logging(verbose, getattr(args, "quiet", False))
            return body(args)
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else EXIT_OK if e.code is None else EXIT_ERROR
    except KeyboardInterrupt:
        say(_interrupt_line(mark))
        return EXIT_INTERRUPT
    except (TwinsError, ValueError) as e:  # typed errors (EXIT_CODES), and option checks in the library (ValueError)
        code = exit_code(e) if isinstance(e, TwinsError) else EXIT_ERROR
        if verbose and code == EXIT_ERROR:
            traceback.print_exc()
        say(f"error: {_flat(e)}")
        return code
    except OSError as e:
        if verbose:
            traceback.print_exc()
        say(f"error: {_os_error_line(e)}")
        return EXIT_ERROR
    except Exception as e:
        if verbose:
            traceback.print_exc()
        text = _flat(e)[:300]
        say(f"error: unexpected {type(e).__name__}: {text} (run with -v for the traceback)")
        return EXIT_ERROR
