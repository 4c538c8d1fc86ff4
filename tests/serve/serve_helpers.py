"""A twins-serve process for the tests (a unique module name, so pytest's sys.path never confuses it): started
on free loopback ports in a session of its own, killed with its whole process tree, interrupted like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from twins_trt.serve.server import free_ports

READY_TIMEOUT_S = 300  # model load: the stub imports torch, OpenVINO compiles 3 shapes (slow on 2 busy cores)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class ServeProcess:
    """`twins-serve ARTIFACT` as a user runs it, on ports chosen once (a restart reuses them)."""

    def __init__(self, artifact: Path, workdir: Path, model: str, extra: list[str] | None = None):
        self.artifact, self.workdir, self.model = artifact, workdir, model
        self.http, self.grpc, self.metrics = free_ports(3)
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"twins-serve.{self.starts}.out"

    def start(self) -> ServeProcess:
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "twins_trt.cli.serve", str(self.artifact), "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--drain-s", "20",
               "--workdir", str(self.workdir / f"run{self.starts}"), *self.extra]
        with open(self.stdout_path, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://127.0.0.1:{self.http}/v2/models/{self.model}/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"twins-serve exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"twins-serve not ready after {READY_TIMEOUT_S} s: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.is_file() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_now(self) -> list[int]:
        """SIGKILL to twins-serve and every process below it (tritonserver, the Python backend stub): a crash.
        Returns at once; `reap` waits for them."""
        if self.proc is None:
            return []
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return tree

    def kill(self) -> list[int]:
        tree = self.kill_now()
        self.reap(tree)
        return tree

    def reap(self, tree: list[int]) -> None:
        if self.proc is None:
            return
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{p}").exists() and _zombie_or_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        self._clean_shm()

    def interrupt(self, timeout_s: float = 90) -> int:
        """Ctrl-C as a terminal sends it (SIGINT to the whole process group); the exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._clean_shm()

    def stop(self) -> None:
        if self.alive():
            try:
                self.interrupt(timeout_s=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def _clean_shm(self) -> None:
        """The Python backend's shared-memory regions a killed server could not remove (named after its pid)."""
        if self.proc is not None:
            for f in Path("/dev/shm").glob(f"pytrtion{self.proc.pid}-*"):
                f.unlink(missing_ok=True)


def _zombie_or_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
