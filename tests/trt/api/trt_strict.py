"""A TensorRT stand-in that accepts only what the REAL installed `tensorrt` module defines.

`StrictTrt(trt)` wraps the real module (the binding wheel, loaded against stub libraries):
enums, flags, Dims and Logger are the real ones; `Builder`, `Runtime` and `OnnxParser` return
`create_autospec(<real class>, instance=True, spec_set=True)` objects, so
- an attribute the real class lacks raises AttributeError, on read AND on assignment (spec_set);
- a read-only property of the real class cannot be assigned;
- every method call is checked against the signatures pybind11 writes into the real docstrings
  (argument count, keyword names, and the types we can check: str, int, bool, buffers, TensorRT
  classes and enums, Dims), overloads included; a mismatch raises TypeError as pybind11 would;
- a method's default return value is derived from its annotated return type: a strict mock of
  the real TensorRT class (INetworkDefinition, IBuilderConfig, IHostMemory, ...), the first member
  of an enum, True for bool, 0 for int, [] for lists.
Tests configure behaviour with `strict.on(mock.method, fn)`, `configure(obj, attr=value)` and
`strict.on_create("ClassName", fn)`, and read what was created from `strict.created`.
"""

from __future__ import annotations

import inspect
import re
import types
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

_PREFIXES = ("tensorrt_bindings.tensorrt.", "tensorrt.")


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str
    has_default: bool


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]
    returns: str

    def __str__(self) -> str:
        ps = ", ".join(f"{p.name}: {p.annotation}{' = ...' if p.has_default else ''}" for p in self.params)
        return f"({ps}) -> {self.returns}"


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def signatures(func, name: str) -> list[Signature]:
    """Every overload pybind11 documents for `func` (self excluded)."""
    sigs = []
    pat = re.compile(rf"^(?:\d+\.\s+)?{re.escape(name)}\((.*)\)\s*->\s*(.+?)\s*$")
    for line in (getattr(func, "__doc__", None) or "").splitlines():
        m = pat.match(line.strip())
        if not m or "*args" in m.group(1):
            continue
        params = []
        for i, part in enumerate(_split_top(m.group(1))):
            pname, _, rest = part.partition(":")
            ann, eq, _default = rest.partition(" = ")
            if i == 0 and pname.strip() == "self":
                continue
            params.append(Param(pname.strip(), ann.strip(), bool(eq)))
        sigs.append(Signature(tuple(params), m.group(2)))
    return sigs


def _short(ann: str) -> str:
    for p in _PREFIXES:
        if ann.startswith(p):
            return ann[len(p):]
    return ann


class StrictTrt(types.ModuleType):
    """The real module, with Builder/Runtime/OnnxParser returning strict mocks of the real classes."""

    FACTORIES = ("Builder", "Runtime", "OnnxParser", "Refitter")

    def __init__(self, real: types.ModuleType):
        super().__init__("tensorrt")
        self._real = real
        self.__version__ = real.__version__
        self.created: dict[str, list] = defaultdict(list)
        self._impls: dict[int, Callable] = {}
        self._on_create: dict[str, list[Callable]] = defaultdict(list)
        for name in self.FACTORIES:
            if hasattr(real, name):
                setattr(self, name, self._factory(getattr(real, name)))

    def __getattr__(self, name: str):
        return getattr(self._real, name)  # AttributeError exactly when the real module lacks it

    # -- configuration

    def on(self, method_mock, fn: Callable) -> None:
        """Give a (checked) method a behaviour."""
        self._impls[id(method_mock)] = fn

    def on_create(self, class_name: str, fn: Callable) -> None:
        """Run `fn(obj)` on every strict object of that class this harness makes."""
        self._on_create[class_name].append(fn)

    def last(self, class_name: str):
        return self.created[class_name][-1]

    # -- construction

    def _factory(self, cls):
        sigs = signatures(cls.__init__, "__init__")

        def make(*args, **kwargs):
            self._check(cls.__name__, "__init__", sigs, args, kwargs)
            return self.strict(cls)

        make.__name__ = cls.__name__
        return make

    def strict(self, cls):
        """A spec_set autospec of the real class whose methods and properties check their use."""
        obj = mock.create_autospec(cls, instance=True, spec_set=True)
        props = {}
        for name in dir(cls):
            if name.startswith("_"):
                continue
            attr = inspect.getattr_static(cls, name)
            if isinstance(attr, property):
                props[name] = attr
            elif callable(attr):
                child = getattr(obj, name)
                child.side_effect = self._checker(cls, name, child, signatures(getattr(cls, name), name))
        self._install_properties(obj, cls, props)
        self.created[cls.__name__].append(obj)
        for fn in self._on_create.get(cls.__name__, []):
            fn(obj)
        return obj

    def _install_properties(self, obj, cls, props: dict[str, property]) -> None:
        """Typed properties on `obj`'s own class (every mock instance has one): read-only ones refuse assignment,
        assignments are type-checked, unset values default from the getter's annotated type."""
        klass = type(obj)
        values: dict[str, object] = {}
        harness = self

        def make(name: str, prop: property) -> property:
            m = re.match(r"^\((.*)\)\s*->\s*(.+?)\s*$", (prop.fget.__doc__ or "").strip()) if prop.fget else None
            ann = m.group(2) if m else ""

            def get(self):
                if name not in values:
                    value = harness._default_return(ann)
                    values[name] = mock.MagicMock(name=f"{cls.__name__}.{name}") if value is mock.DEFAULT else value
                return values[name]

            def set_(self, value):
                if prop.fset is None:
                    raise AttributeError(f"property {name!r} of {cls.__name__} is read-only")
                if ann and not harness._accepts(ann, value):
                    raise TypeError(f"{cls.__name__}.{name} takes {ann}, got {value!r}")
                values[name] = value

            return property(get, set_)

        for name, prop in props.items():
            setattr(klass, name, make(name, prop))
        klass._strict_spec = cls
        klass._strict_values = values

    def _checker(self, cls, name: str, child, sigs: list[Signature]):
        def check(*args, **kwargs):
            sig = self._check(cls.__name__, name, sigs, args, kwargs)
            impl = self._impls.get(id(child))
            if impl is not None:
                return impl(*args, **kwargs)
            if child._mock_return_value is not mock.DEFAULT:
                return mock.DEFAULT
            value = self._default_return(sig.returns if sig else "")
            if value is mock.DEFAULT:
                return value
            child.return_value = value  # the same object on every call, like a real getter
            return value

        return check

    def _check(self, cls_name: str, name: str, sigs: list[Signature], args, kwargs) -> Signature | None:
        if not sigs:
            return None  # pybind11 documented no signature: nothing to check against
        for sig in sigs:
            if self._binds(sig, args, kwargs):
                return sig
        shown = "\n  ".join(str(s) for s in sigs)
        raise TypeError(f"{cls_name}.{name}(): incompatible function arguments {args!r} {kwargs!r}; "
                        f"TensorRT {self.__version__} supports:\n  {shown}")

    def _binds(self, sig: Signature, args, kwargs) -> bool:
        params = list(sig.params)
        if len(args) > len(params):
            return False
        bound = dict(zip((p.name for p in params), args, strict=False))
        for k, v in kwargs.items():
            if k in bound or k not in {p.name for p in params}:
                return False
            bound[k] = v
        for p in params:
            if p.name not in bound:
                if not p.has_default:
                    return False
            elif not self._accepts(p.annotation, bound[p.name]):
                return False
        return True

    def _accepts(self, ann: str, value) -> bool:
        ann = _short(ann)
        if value is None:  # pybind11 passes None as nullptr for pointers to TensorRT objects
            real = getattr(self._real, ann, None)
            pointer = isinstance(real, type) and not hasattr(real, "__members__") and ann != "Dims"
            return pointer or ann in ("None", "object") or "Optional" in ann or "None" in ann
        if ann == "str":
            return isinstance(value, str)
        if ann == "bool":
            return isinstance(value, bool)
        if ann in ("int", "typing.SupportsInt"):
            return hasattr(value, "__index__") and not isinstance(value, float)
        if ann in ("float", "typing.SupportsFloat"):
            return isinstance(value, (int, float))
        if ann in ("typing_extensions.Buffer", "buffer", "collections.abc.Buffer"):
            try:
                memoryview(value)
            except TypeError:
                return False
            return True
        if ann == "tuple":
            return isinstance(value, tuple)
        if ann == "list" or ann.startswith(("list[", "collections.abc.Sequence[", "typing.Sequence[")):
            return isinstance(value, (list, tuple))
        real = getattr(self._real, ann, None)
        if isinstance(real, type):
            if ann == "Dims" and isinstance(value, (tuple, list)):  # pybind11 converts sequences to Dims
                return all(hasattr(v, "__index__") for v in value)
            return isinstance(value, real)  # spec'd mocks pass isinstance for their spec class
        return True  # an annotation we cannot check (C++ names, typing unions): let it through

    def _default_return(self, ann: str):
        ann = _short(ann)
        if ann == "bool":
            return True
        if ann in ("int", "typing.SupportsInt"):
            return 0
        if ann == "str":
            return ""
        if ann == "None":
            return None
        if ann.startswith("list[") or ann == "list":
            return []
        if ann == "IHostMemory":
            return HostMemory(b"\0" * 64, self._real.IHostMemory)
        real = getattr(self._real, ann, None)
        if isinstance(real, type):
            members = getattr(real, "__members__", None)
            if members:
                return next(iter(members.values()))
            if ann == "Dims":
                return real(())
            return self.strict(real)
        return mock.DEFAULT


class HostMemory(bytes):
    """IHostMemory's Python surface: the buffer protocol, `nbytes` and `dtype` (checked against the real class)."""

    def __new__(cls, data: bytes, real_cls):
        missing = {"nbytes", "dtype"} - set(dir(real_cls))
        assert not missing, f"IHostMemory lost {missing}; update HostMemory"
        return super().__new__(cls, data)

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self):
        return None


def configure(obj, **values) -> None:
    """Set attributes on a strict object, read-only properties included (tests only)."""
    cls = type(obj)._strict_spec
    for k, v in values.items():
        if k not in type(obj)._strict_values and not isinstance(inspect.getattr_static(cls, k, None), property):
            raise AttributeError(f"{cls.__name__} has no property {k!r}")
        type(obj)._strict_values[k] = v
