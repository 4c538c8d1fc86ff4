"""The floors of twins_trt: imports run down, never up, and no module imports itself back through others.

The floors (README, "Code map") from the ground up; a module may import from its own floor or below:

    0  errors                       every typed error
    1  device, metrics              what the machine computes on; the figures every report quotes
    2  artifacts (files, manifest), models, data, qdq
    3  runners                      one Runner interface: PyTorch, ONNX Runtime, OpenVINO
    4  export                       torch -> ONNX, FP16, INT8 (and its budget), verification
    5  trt, triton, triton_schema   TensorRT builder, engine metadata, runner, engine verification; Triton repos
    6  backends, artifacts.resolve  the one backend vocabulary and runner factory; the one resolver
    7  bench, eval, serve           the measurements (both tasks); an artifact on a Triton server
    8  cli                          the commands and their one error path

Lazy imports inside functions count too: a floor is about what a module needs, not when it loads it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import twins_trt

PACKAGE = Path(twins_trt.__file__).parent

# longest prefix wins: `twins_trt.artifacts.resolve` sits above the rest of `twins_trt.artifacts`
FLOORS = {
    "twins_trt.errors": 0,
    "twins_trt.device": 1,
    "twins_trt.metrics": 1,
    "twins_trt": 2,  # the package's own __init__: models and segmentors re-exported
    "twins_trt.artifacts": 2,
    "twins_trt.models": 2,
    "twins_trt.data": 2,
    "twins_trt.qdq": 2,
    "twins_trt.runners": 3,
    "twins_trt.export": 4,
    "twins_trt.trt": 5,
    "twins_trt.triton": 5,
    "twins_trt.triton_schema": 5,
    "twins_trt.backends": 6,
    "twins_trt.artifacts.resolve": 6,
    "twins_trt.bench": 7,
    "twins_trt.eval": 7,
    "twins_trt.serve": 7,
    "twins_trt.cli": 8,
}
# started by path inside another revision's checkout (bench/ab.py): it imports that revision, not this one
NOT_IMPORTED_HERE = {"twins_trt.bench.ab_worker"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    best = max((k for k in FLOORS if module == k or module.startswith(k + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} has no floor: add its package to FLOORS (and to the README's code map)")
    return FLOORS[best]


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every twins_trt module `path` imports (module level or inside functions), resolved to a module."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        out.update(t for t in targets if t == "twins_trt" or t.startswith("twins_trt."))
    out.discard(name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {t for t in imports(path, name, known) if t in known}
            for name, path in mods.items() if name not in NOT_IMPORTED_HERE}


def test_every_module_has_a_floor(graph):
    for name in graph:
        floor(name)


def test_imports_run_down_the_floors(graph):
    upward = [f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
              for m, targets in graph.items() for t in sorted(targets) if floor(t) > floor(m)]
    assert not upward, "imports that climb a floor:\n" + "\n".join(upward)


def test_no_import_cycle(graph):
    """Tarjan's strongly connected components; any component of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checks_can_fail(tmp_path):
    """The checker itself: an upward import and a cycle in a scratch package are both seen."""
    pkg = tmp_path / "twins_trt"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("from twins_trt.bench import x\n")
    (pkg / "models" / "a.py").write_text("from twins_trt.models import b\n")
    (pkg / "models" / "b.py").write_text("def f():\n    from twins_trt.models.a import g\n")
    known = {"twins_trt", "twins_trt.models", "twins_trt.models.a", "twins_trt.models.b", "twins_trt.bench"}
    got = imports(pkg / "models" / "__init__.py", "twins_trt.models", known)
    assert got == {"twins_trt.bench"} and floor("twins_trt.bench") > floor("twins_trt.models")
    assert imports(pkg / "models" / "a.py", "twins_trt.models.a", known) == {"twins_trt.models.b"}
    assert imports(pkg / "models" / "b.py", "twins_trt.models.b", known) == {"twins_trt.models.a"}


def test_no_module_over_400_lines():
    """One job per module; the model family file is the one exception (one file per family, as in timm)."""
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > 400 and name != "twins_trt.models.twins"}
    assert not long, f"modules over 400 lines: {long}"


def test_typed_errors_live_in_errors_py():
    """One hierarchy: no module but errors.py defines an Exception subclass."""
    stray = []
    for name, path in modules().items():
        if name == "twins_trt.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases):
                stray.append(f"{name}.{node.name}")
    assert not stray, f"typed errors outside errors.py: {stray}"
