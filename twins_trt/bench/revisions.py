"""The git side of the A/B gate: which checkout is under test, and the tree of the revision it is compared with."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from twins_trt.errors import RevisionError


def code_root() -> Path:
    """The checkout that holds the twins_trt being run (the code under test)."""
    import twins_trt

    return Path(twins_trt.__file__).resolve().parent.parent


def _git(repo: Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=text, timeout=120)
    except FileNotFoundError:
        raise RevisionError("--against needs git, and git is not installed") from None


def resolve_revision(rev: str, repo: Path) -> str:
    """REV -> full commit hash, or one line saying why this checkout cannot provide it."""
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise RevisionError(f"--against needs the code under test in a git checkout, and {repo} is not one "
                            "(installed from a wheel?); use a clone, or --baseline FILE recorded on this machine")
    out = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    shallow = _git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    count = _git(repo, "rev-list", "--count", "HEAD").stdout.strip() or "?"
    hint = ("this clone is shallow: run `git fetch --unshallow` (CI: clone with full history, fetch-depth 0)"
            if shallow else "fetch it, or move the recorded revision (bench/baselines/REVISION) to one in this history")
    raise RevisionError(f"revision {rev!r} is not in this clone's history ({count} commits reachable from HEAD); {hint}")


def checkout_revision(sha: str, repo: Path, dest: Path) -> Path:
    """The tree of `sha` under `dest` (git archive: no worktree bookkeeping left behind)."""
    out = _git(repo, "archive", "--format=tar", sha, text=False)
    if out.returncode != 0:
        raise RevisionError(f"git archive {sha[:12]} failed: {out.stderr.decode(errors='replace').strip()[:300]}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(dest, filter="data")
    if not (dest / "twins_trt" / "__init__.py").is_file():
        raise RevisionError(f"revision {sha[:12]} has no twins_trt package to benchmark")
    return dest


def describe_revision(sha: str, repo: Path) -> str:
    out = _git(repo, "log", "-1", "--format=%h %s", sha)
    return out.stdout.strip() or sha[:12]
