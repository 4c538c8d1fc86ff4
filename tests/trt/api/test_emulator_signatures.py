"""The TensorRT emulator (tools/trt_emulator) against the REAL bindings of this process's version (10.x or 11.x).

Every public class, method, property and enum member the emulator defines must exist in the real module, with
the same parameter names in the same order and the same defaults (one of the real overloads), and a property
read-only in TensorRT must be read-only in the emulator too. So code that runs under the emulator uses only
what the real TensorRT of that version offers.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import os
from pathlib import Path

import pytest
from trt_strict import signatures

ROOT = Path(__file__).resolve().parents[3]
MAJOR = os.environ["TWINS_TRT_API_MAJOR"]
# the emulator's own names (documented, not TensorRT API)
EMULATOR_ONLY = {"emulated_device", "emulated_memory", "DEFAULT_DEVICE"}


@pytest.fixture(scope="module")
def emu():
    old = os.environ.get("TRT_EMULATOR_VERSION")
    os.environ["TRT_EMULATOR_VERSION"] = MAJOR
    try:
        spec = importlib.util.spec_from_file_location("_trt_emulator_under_test",
                                                      ROOT / "tools" / "trt_emulator" / "tensorrt" / "__init__.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if old is None:
            os.environ.pop("TRT_EMULATOR_VERSION")
        else:
            os.environ["TRT_EMULATOR_VERSION"] = old
    return mod


def _public(mod):
    return {n: v for n, v in vars(mod).items()
            if not n.startswith("_") and n not in EMULATOR_ONLY and getattr(v, "__module__", None) == mod.__name__}


def test_version_is_this_major(emu, real_trt):
    assert emu.__version__.split(".")[0] == real_trt.__version__.split(".")[0]
    assert emu.__emulator__ is True and not hasattr(real_trt, "__emulator__")


def test_every_public_name_exists_in_tensorrt(emu, real_trt):
    missing = [n for n in _public(emu) if not hasattr(real_trt, n)]
    assert not missing, f"the emulator defines names TensorRT {real_trt.__version__} lacks: {missing}"


def test_enum_members_exist_in_tensorrt(emu, real_trt):
    checked = 0
    for name, cls in _public(emu).items():
        if isinstance(cls, type) and issubclass(cls, enum.Enum):
            real = set(getattr(real_trt, name).__members__)
            extra = set(cls.__members__) - real
            assert not extra, f"{name}: members {sorted(extra)} are not in TensorRT {real_trt.__version__}"
            checked += 1
    sev = set(emu.ILogger.Severity.__members__) - set(real_trt.ILogger.Severity.__members__)
    assert not sev and checked >= 8


def _params(func) -> list[tuple[str, bool]]:
    sig = inspect.signature(func)
    return [(p.name, p.default is not inspect.Parameter.empty) for p in list(sig.parameters.values())[1:]]


def test_methods_and_properties_have_the_real_signatures(emu, real_trt):
    checked = []
    for name, cls in _public(emu).items():
        if not isinstance(cls, type) or issubclass(cls, (enum.Enum, tuple, bytes)):
            continue
        real_cls = getattr(real_trt, name)
        for attr, value in vars(cls).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if attr == "__init__" and name not in ("Logger", "Builder", "Runtime", "OnnxParser"):
                continue  # TensorRT creates these objects itself; Python cannot construct them
            real_attr = inspect.getattr_static(real_cls, attr, None)
            assert real_attr is not None, f"{name}.{attr} does not exist in TensorRT {real_trt.__version__}"
            if isinstance(value, property):
                assert isinstance(real_attr, property), f"{name}.{attr} is a property in the emulator only"
                if value.fset is not None:
                    assert real_attr.fset is not None, f"{name}.{attr} is read-only in TensorRT"
            elif callable(value) and not isinstance(value, (type, enum.Enum)):
                real_sigs = signatures(getattr(real_cls, attr), attr)
                ours = _params(value)
                theirs = [[(p.name, p.has_default) for p in s.params] for s in real_sigs]
                assert ours in theirs, f"{name}.{attr}{ours} matches no TensorRT overload {theirs}"
            checked.append(f"{name}.{attr}")
    print(f"TensorRT {real_trt.__version__}: {len(checked)} emulator attributes checked")
    assert len(checked) > 60


def test_module_functions_have_the_real_signatures(emu, real_trt):
    ours = _params_fn(emu.init_libnvinfer_plugins)
    theirs = [[(p.name, p.has_default) for p in s.params] for s in
              signatures(real_trt.init_libnvinfer_plugins, "init_libnvinfer_plugins")]
    assert ours in theirs


def _params_fn(func) -> list[tuple[str, bool]]:
    return [(p.name, p.default is not inspect.Parameter.empty) for p in inspect.signature(func).parameters.values()]
