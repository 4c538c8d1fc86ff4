"""TensorRT 10's ONNX operator table as package data, and the one function that (re)makes it.

The table is onnx-tensorrt's `docs/operators.md` on its newest 10.x release branch, turned into JSON
(`data/trt10_onnx_operators.json`) with the revision it came from recorded inside. To regenerate it
from a checkout or mirror of https://github.com/onnx/onnx-tensorrt:

    git -C onnx-tensorrt show 10.1-GA:docs/operators.md > /tmp/operators.md
    python -m twins_trt.export.trt_table /tmp/operators.md --branch 10.1-GA \
        --commit $(git -C onnx-tensorrt rev-parse 10.1-GA)

Only the table's own words are kept (`supported`, `types`, `restrictions`); which restrictions can be
checked on a graph, and how, is `trt_support`'s business.
"""

from __future__ import annotations

import argparse
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

TABLE_FILE = "trt10_onnx_operators.json"
REPOSITORY = "https://github.com/onnx/onnx-tensorrt"
TYPO_FIXES = {"INF64": "INT64"}  # ConstantOfShape's row in the 10.x table


def parse_operators_md(text: str) -> dict[str, Any]:
    """operators.md -> {"opset": {"min", "max"}, "data_types", "notes", "operators": {op: {...}}}."""
    m = re.search(r"inclusive range of opset (\d+) to opset (\d+)", text)
    if not m:
        raise ValueError("no 'inclusive range of opset N to opset M' sentence: not onnx-tensorrt's operators.md")
    tensorrt = re.search(r"TensorRT ([\d.]+) supports operators", text)
    types_line = re.search(r"supports the following ONNX data types: (.+)", text)
    operators: dict[str, dict[str, Any]] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("| Operator"):
            in_table = True
            continue
        if not in_table or not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        cells += [""] * (4 - len(cells))
        name, flag, types, restrictions = cells[:4]
        kinds = [TYPO_FIXES.get(t.strip(), t.strip()) for t in types.split(",") if t.strip()]
        operators[name] = {"supported": flag == "Y", "types": kinds,
                           "restrictions": re.sub(r"\s*<br\s*/?>\s*", " ", restrictions).strip()}
    if not operators:
        raise ValueError("operators.md has no operator rows")
    return {
        "tensorrt": tensorrt.group(1) if tensorrt else None,
        "opset": {"min": int(m.group(1)), "max": int(m.group(2))},
        "data_types": [re.sub(r"^and ", "", t.strip()) for t in types_line.group(1).split(",")] if types_line else [],
        "notes": [ln.lstrip("> ").strip() for ln in text.splitlines() if ln.startswith("> Note")],
        "operators": operators,
    }


def make_table(md_text: str, branch: str, commit: str, path: str = "docs/operators.md") -> dict[str, Any]:
    """The JSON document: where it came from, then the parsed table."""
    return {"source": {"repository": REPOSITORY, "branch": branch, "commit": commit, "path": path,
                       "typo_fixes": TYPO_FIXES}, **parse_operators_md(md_text)}


@lru_cache(maxsize=1)
def load_table() -> dict[str, Any]:
    """The packaged table (read once)."""
    return json.loads(resources.files("twins_trt.export.data").joinpath(TABLE_FILE).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m twins_trt.export.trt_table",
                                description="Write the packaged TensorRT operator table from onnx-tensorrt's operators.md.")
    p.add_argument("operators_md", type=Path)
    p.add_argument("--branch", required=True, help="the onnx-tensorrt branch it was read from, e.g. 10.1-GA")
    p.add_argument("--commit", required=True, help="that branch's commit sha")
    p.add_argument("-o", "--out", type=Path, default=Path(__file__).parent / "data" / TABLE_FILE)
    a = p.parse_args(argv)
    table = make_table(a.operators_md.read_text(), a.branch, a.commit)
    a.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{a.out}: {len(table['operators'])} operators, opset {table['opset']['min']}-{table['opset']['max']} "
          f"(TensorRT {table['tensorrt']}, {a.branch} {a.commit[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
