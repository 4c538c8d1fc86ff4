"""Optimization profiles from the exported ONNX: its symbolic dims and `twins_trt.*` metadata.

A static ONNX gives a fixed profile. A dynamic-batch export names its batch dim "batch" and
records `twins_trt.batch_profile = "MIN:OPT:MAX"`; a dynamic-size export also names "height" and
"width" and records `twins_trt.hw_profile = "HxW:HxW:HxW"`. `--batch N` or `--profile MIN:OPT:MAX`
on the command line override the batch range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twins_trt.errors import BuildError, ProfileError

META_PREFIX = "twins_trt."
BATCH_DIM, HEIGHT_DIM, WIDTH_DIM = "batch", "height", "width"



@dataclass(frozen=True)
class Profile:
    """min/opt/max shapes of one input."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, d: dict) -> Profile:
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))

    def batch_spec(self) -> str:
        """The `--profile` value that gives this batch range."""
        return f"{self.min[0]}:{self.opt[0]}:{self.max[0]}"


@dataclass(frozen=True)
class OnnxInput:
    name: str
    dims: tuple[int | str, ...]  # int, or the symbolic name ("batch", "height", ...)
    elem_type: str


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    inputs: tuple[OnnxInput, ...]
    outputs: tuple[str, ...]
    metadata: dict[str, str]

    @property
    def precision(self) -> str:
        return self.metadata.get(META_PREFIX + "precision", "fp32")

    @property
    def variant(self) -> str | None:
        return self.metadata.get(META_PREFIX + "variant")


def read_onnx_info(onnx_path: str | os.PathLike) -> OnnxInfo:
    """Inputs, outputs and metadata of an ONNX file, without loading its weights."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise BuildError(f"ONNX file {path} does not exist; create it with twins-export")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise BuildError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from e
    initializers = {i.name for i in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        t = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        inputs.append(OnnxInput(vi.name, dims, onnx.TensorProto.DataType.Name(t.elem_type)))
    meta = {p.key: p.value for p in model.metadata_props}
    return OnnxInfo(path, tuple(inputs), tuple(o.name for o in model.graph.output), meta)


def parse_range(spec: str, what: str = "--profile") -> tuple[int, int, int]:
    """"1:8:64" -> (1, 8, 64); a single "8" means 8:8:8."""
    parts = str(spec).strip().split(":")
    if len(parts) == 1:
        parts = parts * 3
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise ProfileError(f"{what} must be MIN:OPT:MAX with integers (e.g. 1:8:64), got {spec!r}") from None
    _check_order((lo, opt, hi), what, spec)
    return lo, opt, hi


def parse_hw_range(spec: str, what: str = "twins_trt.hw_profile") -> tuple[tuple[int, int], ...]:
    """"224x224:384x384:512x512" -> ((224, 224), (384, 384), (512, 512))."""
    try:
        hw = tuple(tuple(int(v) for v in p.lower().split("x")) for p in spec.split(":"))
    except ValueError:
        raise ProfileError(f"{what} must be HxW:HxW:HxW, got {spec!r}") from None
    if len(hw) != 3 or any(len(p) != 2 for p in hw):
        raise ProfileError(f"{what} must be HxW:HxW:HxW, got {spec!r}")
    _check_order(tuple(h for h, _ in hw), what + " (height)", spec)
    _check_order(tuple(w for _, w in hw), what + " (width)", spec)
    return hw


def _check_order(v: tuple[int, int, int], what: str, spec: str) -> None:
    lo, opt, hi = v
    if lo < 1:
        raise ProfileError(f"{what}: sizes must be >= 1, got {spec!r}")
    if not lo <= opt <= hi:
        raise ProfileError(f"{what}: need MIN <= OPT <= MAX, got min={lo} opt={opt} max={hi} ({spec!r})")


def profile_from_onnx(onnx_path: str | os.PathLike | OnnxInfo, batch: int | None = None,
                      profile: str | None = None) -> dict[str, Profile]:
    """One Profile per network input.

    batch=N (fixed) or profile="MIN:OPT:MAX" override the export's `twins_trt.batch_profile`;
    a static ONNX accepts only its own batch.
    """
    info = onnx_path if isinstance(onnx_path, OnnxInfo) else read_onnx_info(onnx_path)
    if batch is not None and profile is not None:
        raise ProfileError("give --batch N or --profile MIN:OPT:MAX, not both")
    if batch is not None:
        if batch < 1:
            raise ProfileError(f"--batch must be >= 1, got {batch}")
        override: tuple[int, int, int] | None = (batch, batch, batch)
    elif profile is not None:
        override = parse_range(profile)
    else:
        override = None

    out: dict[str, Profile] = {}
    for inp in info.inputs:
        lo, opt, hi = [], [], []
        for axis, d in enumerate(inp.dims):
            if isinstance(d, int) and d > 0:
                if axis == 0 and override is not None and override != (d, d, d):
                    raise ProfileError(
                        f"{info.path} has a static batch of {d} for input {inp.name!r}; it cannot build batch "
                        f"{':'.join(map(str, override))} (re-export it with a dynamic batch)")
                r = (d, d, d)
            elif axis == 0:
                r = override or _meta_range(info, inp, d)
            elif d in (HEIGHT_DIM, WIDTH_DIM) and axis in (2, 3):
                hw_spec = info.metadata.get(META_PREFIX + "hw_profile")
                if not hw_spec:
                    raise ProfileError(f"{info.path}: input {inp.name!r} has a dynamic {d} but no "
                                       f"{META_PREFIX}hw_profile metadata to size it")
                hw = parse_hw_range(hw_spec)
                r = tuple(p[axis - 2] for p in hw)
            else:
                raise ProfileError(f"{info.path}: input {inp.name!r} axis {axis} is dynamic ({d!r}); only the batch "
                                   "(axis 0) and height/width may be")
            lo.append(r[0])
            opt.append(r[1])
            hi.append(r[2])
        out[inp.name] = Profile(tuple(lo), tuple(opt), tuple(hi))
    if not out:
        raise ProfileError(f"{info.path} has no graph inputs")
    return out


def _meta_range(info: OnnxInfo, inp: OnnxInput, symbol: int | str) -> tuple[int, int, int]:
    spec = info.metadata.get(META_PREFIX + "batch_profile")
    if not spec:
        raise ProfileError(f"{info.path}: input {inp.name!r} has a dynamic batch ({symbol!r}) but no "
                           f"{META_PREFIX}batch_profile metadata; pass --batch N or --profile MIN:OPT:MAX")
    return parse_range(spec, f"{META_PREFIX}batch_profile in {info.path}")
