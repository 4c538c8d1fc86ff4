"""twins-eval's report: one row per backend (figures, or why there are none), the notes a reader
needs to trust them (random weights, INT8 below the export bound, calibration images and their
overlap with the evaluation set, unreadable images), as console text, JSON and Markdown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins_trt import artifacts
from twins_trt.eval.results import BackendResult

RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: no --weights given, so top-1/top-5 are meaningless (chance level); "
                          "agreement and cosine with PyTorch fp32 are still meaningful. "
                          "Pass --weights timm or --weights PATH for real accuracy.")
HEADER = ["backend", "status", "top-1 %", "top-5 %", "Δtop-1", "Δtop-5", "agree %", "cosine", "cos min", "images", "s"]


def below_bound_text(b: dict) -> str:
    op = "<" if b["metric"] == "cosine" else ">"
    return f"below the export bound ({b['metric']} {b['value']:.4f} {op} {b['bound']:g})"


def _delta(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _names(files: list[str], most: int = 6) -> str:
    shown = ", ".join(os.path.basename(f) for f in files[:most])
    return shown + (f", ... ({len(files) - most} more)" if len(files) > most else "")


@dataclass
class EvalReport:
    meta: dict[str, Any]
    results: list[BackendResult]
    skipped_images: list[tuple[Path, str]]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return bool(self.meta.get("random_weights"))

    @property
    def reference(self) -> BackendResult:
        return self.results[0]

    @property
    def failed(self) -> list[BackendResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def not_evaluated(self) -> list[BackendResult]:
        return [r for r in self.results if not r.ok]

    @property
    def requested(self) -> list[BackendResult]:
        """The backends the user named (the PyTorch reference only when named)."""
        names = self.meta.get("requested") or [r.name for r in self.results]
        return [r for r in self.results if r.name in names]

    def result(self, name: str) -> BackendResult:
        return next(r for r in self.results if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta, "skipped_images": [{"path": str(p), "reason": why} for p, why in self.skipped_images],
                "backends": [r.to_dict() for r in self.results]}

    # ------------------------------------------------------------------------------------------ rows

    def table(self) -> list[list[str]]:
        rows = [list(HEADER)]
        for r in self.results:
            if not r.ok:
                rows.append([r.name, r.status, *["-"] * (len(HEADER) - 2)])
                continue
            rows.append([r.name, "BELOW BOUND" if r.below_bound else "ok", f"{r.top1:.2f}", f"{r.top5:.2f}",
                         _delta(r.top1_delta), _delta(r.top5_delta), f"{r.agreement:.2f}", f"{r.cosine_mean:.6f}",
                         f"{r.cosine_min:.6f}", str(r.images), f"{r.seconds:.1f}"])
        return rows

    def notes(self) -> list[str]:
        """One line each: why a backend has no figures, INT8 flags and calibration, unreadable images."""
        out = []
        for r in self.results:
            if not r.ok:
                out.append(f"{r.name} {r.status}: {r.reason}")
            if r.below_bound:
                b = r.below_bound
                out.append(f"{r.name}: {below_bound_text(b)}; evaluated on purpose from a {b['artifact']}; "
                           f"for an INT8 artifact within budget run: {b['hint']}")
            if r.calibration:
                c = r.calibration
                files = c["files"]
                what = (f"{len(files)} image(s) from {c['source']}: {_names(files)}" if files
                        else "synthetic random data" if c["source"] == "synthetic" else f"{c['source']}")
                out.append(f"{r.name}: calibrated on {what}")
                if c["overlap"]:
                    out.append(f"{r.name}: the evaluation set and the calibration set OVERLAP: {c['overlap']} of the "
                               f"{self.meta['data']['images_used']} evaluated image(s) were calibration images "
                               f"({_names(c['overlap_files'])}), which flatters INT8; use --calib-data with other "
                               "images")
        if self.skipped_images:
            p, why = self.skipped_images[0]
            out.append(f"skipped {len(self.skipped_images)} unreadable image(s), e.g. {p} ({why})")
        return out

    # ------------------------------------------------------------------------------------------ formats

    def format_console(self) -> str:
        rows = self.table()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        d = self.meta["data"]
        lines.append(f"{d['images_used']} image(s) evaluated ({d['classes']} classes, {d['root']}); "
                     "reference: PyTorch fp32")
        lines += [f"  {n}" for n in self.notes()]
        if self.random_weights:
            bar = "!" * 100
            lines += [bar, f"!! {RANDOM_WEIGHTS_WARNING}", bar]
        return "\n".join(lines)

    def format_markdown(self) -> str:
        m = self.meta
        out = [f"# twins-eval: {m['variant']} on {m['data']['root']}", ""]
        if self.random_weights:
            out += [f"> **WARNING — {RANDOM_WEIGHTS_WARNING}**", ""]
        out += [f"Weights: `{m['weights'] or 'random'}`; images: {m['data']['images_used']} of "
                f"{m['data']['images_found']} in {m['data']['classes']} class folder(s) (mapping: "
                f"{m['data']['mapping']}); skipped unreadable: {len(self.skipped_images)}; "
                "reference: PyTorch fp32.", ""]
        rows = self.table()
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(rows[0]))) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        notes = [f"- {n}" for n in self.notes()]
        return "\n".join(out + ([""] + notes if notes else [])) + "\n"

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """`<stem>.eval.json` and `<stem>.eval.md`, each complete or absent."""
        out_dir = artifacts.ensure_dir(out_dir)
        base = out_dir / self.meta["stem"]
        md = self.format_markdown().encode()  # rendered before anything takes a final name
        self.paths = {"json": artifacts.write_json_atomic(base.with_name(base.name + ".eval.json"), self.to_dict()),
                      "markdown": artifacts.write_bytes_atomic(base.with_name(base.name + ".eval.md"), md)}
        return self.paths


__all__ = ["RANDOM_WEIGHTS_WARNING", "EvalReport", "below_bound_text"]
