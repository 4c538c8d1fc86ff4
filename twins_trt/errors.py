"""Every typed error of the package, in one hierarchy. Library code raises these with the numbers in them;
only `twins_trt.cli.common` turns them into exit codes (its EXIT_CODES table)."""

from __future__ import annotations


def one_line(e: BaseException) -> str:
    """`TypeName: last line of the message` (at most 300 characters): a foreign exception, fit for one report line."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}".rstrip(": ")


class TwinsError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownVariantError(TwinsError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InputSizeError(TwinsError, ValueError):
    """An image size the model or an export cannot take."""


class WeightsError(TwinsError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class ExportError(TwinsError, RuntimeError):
    """torch -> ONNX, or an ONNX precision conversion, failed."""


class VerificationError(TwinsError, ValueError):
    """An artifact's outputs disagree with PyTorch beyond the stated tolerance."""


class AccuracyBudgetError(VerificationError):
    """An INT8 accuracy budget that is malformed, or that no precision mix could meet."""


class GraphCheckError(TwinsError, ValueError):
    """The exported graph contains forbidden ops or the wrong attention structure."""


class CalibrationDataError(TwinsError, ValueError):
    """Calibration images missing, unreadable or too few."""


class DatasetError(CalibrationDataError):
    """An evaluation folder that is missing, empty, not one-subfolder-per-class, or disagrees with the class map."""


class OutputDirError(TwinsError, OSError):
    """An output directory that cannot be created or written."""


class BackendUnavailableError(TwinsError, RuntimeError):
    """A backend (TensorRT, CUDA, an ONNX Runtime provider) is missing on this machine."""


class EngineMismatchError(TwinsError, RuntimeError):
    """An engine built for another TensorRT version or another GPU."""


class BuildError(TwinsError, RuntimeError):
    """The ONNX parser or the TensorRT builder failed."""


class UnsupportedByTensorRTError(BuildError, ValueError):
    """An ONNX node TensorRT's ONNX parser does not take (by its published operator table), found before parsing."""


class ProfileError(BuildError, ValueError):
    """An optimization profile that cannot be built from the ONNX and the flags given."""


class EngineRunError(TwinsError, RuntimeError):
    """TensorRT refused to run an engine (enqueue failed, shapes unresolved)."""


class TritonConfigError(TwinsError, ValueError):
    """An artifact whose inputs, outputs or batch profile cannot be turned into a Triton model config."""


class RegressionError(TwinsError, RuntimeError):
    """A benchmark figure regressed beyond the allowed bound."""


class FingerprintError(TwinsError, ValueError):
    """A recorded baseline measured on another machine or with other library versions."""


class RevisionError(TwinsError, ValueError):
    """A revision to compare against that this checkout cannot provide."""


class WorkerError(TwinsError, RuntimeError):
    """One side of the A/B run failed to set up or to measure."""


class InputFileError(TwinsError, ValueError):
    """A file or folder the user named that is missing, unreadable, or not the kind the command takes."""


class UsageError(TwinsError, ValueError):
    """A command-line argument that is malformed or out of range (raised by the CLIs' parsers)."""


class ServeError(TwinsError, RuntimeError):
    """A Triton server that could not start, load its model, or keep running (twins-serve)."""
