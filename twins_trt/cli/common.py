"""What every twins-* command shares: argument parsers for sizes and ranges, logging, error-to-exit mapping."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from twins_trt.errors import TwinsError, VerificationError

EXIT_ERROR, EXIT_VERIFY, EXIT_INTERRUPT = 2, 1, 130


def parse_hw(text: str) -> tuple[int, int]:
    """`224` -> (224, 224); `512x1024` -> (512, 1024)."""
    try:
        parts = [int(p) for p in text.lower().replace("×", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write H or HxW, e.g. 224 or 512x1024") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write H or HxW, e.g. 224 or 512x1024")
    return parts[0], parts[1]


def parse_range(text: str) -> tuple[int, int, int]:
    """`1:8:64` -> (1, 8, 64), checked MIN <= OPT <= MAX."""
    try:
        lo, opt, hi = (int(p) for p in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:OPT:MAX, e.g. 1:8:64") from None
    if not 1 <= lo <= opt <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= OPT <= MAX")
    return lo, opt, hi


def parse_hw_range(text: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """`224:512:1024x2048` -> three (H, W) sizes."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:OPT:MAX sizes, e.g. 224:512:1024x2048")
    return tuple(parse_hw(p) for p in parts)  # type: ignore[return-value]


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("twins_trt").setLevel(level)
    if verbose <= 1:  # ModelOpt and onnxscript log pages at INFO
        for noisy in ("modelopt", "onnxscript", "onnx_ir", "torch.onnx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def run(main: Callable[[], int]) -> int:
    """Typed errors become `error: ...` and exit 2 (1 for a failed verification); Ctrl-C exits 130."""
    try:
        return main()
    except VerificationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_VERIFY
    except (TwinsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing was written under a final name", file=sys.stderr)
        return EXIT_INTERRUPT
