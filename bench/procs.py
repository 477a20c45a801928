"""Processes the benchmark starts: free ports, gunicorn servers, worker PIDs and their RSS, clean shutdown.

Every server is started by this module and stopped by its PID (SIGTERM, then SIGKILL
after a grace period), workers included, from ``finally`` blocks. On Linux each child
also gets ``PR_SET_PDEATHSIG`` = SIGTERM, so a benchmark killed outright (SIGKILL)
does not leave a gunicorn master behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import requests

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of *pid*, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def children(pid: int) -> list[int]:
    """PIDs whose parent is *pid* (gunicorn workers of a master)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] == pid:
                found.append(int(entry))
    return sorted(found)


_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of *pid* so far (from /proc/<pid>/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def rss_kib(pid: int) -> int | None:
    """VmRSS of *pid* in KiB (from /proc/<pid>/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class ServerError(RuntimeError):
    pass


@dataclass
class GunicornServer:
    """A gunicorn master started from *argv* with ``{port}`` substituted; logs go to *log_dir*."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    workers: int
    host: str = "127.0.0.1"
    health_path: str = "/healthz"
    startup_timeout: float = 60.0
    port: int = 0
    proc: subprocess.Popen | None = None
    _worker_ids: dict[int, int] = field(default_factory=dict)  # pid -> start time, for safe kills
    _logs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, attempts: int = 3) -> "GunicornServer":
        last: Exception | None = None
        for attempt in range(attempts):
            self.port = free_port(self.host)
            try:
                self._start_once(attempt)
                return self
            except ServerError as exc:  # e.g. the port was taken between probe and bind
                last = exc
                self.stop()
        raise ServerError(f"{self.name} did not start after {attempts} attempts: {last}")

    def _start_once(self, attempt: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{self.name}.stdout.log", "ab")
        err = open(self.log_dir / f"{self.name}.stderr.log", "ab")
        self._logs = [out, err]
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.startup_timeout
        session = requests.Session()
        session.trust_env = False
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerError(f"{self.name} exited with {self.proc.returncode} (attempt {attempt + 1}); "
                                      f"see {err.name}:\n{self.stderr_tail()}")
                workers = children(self.proc.pid)
                if len(workers) >= self.workers:
                    try:
                        if session.get(self.url + self.health_path, timeout=2).status_code == 200:
                            self._remember_workers()
                            return
                    except requests.RequestException:
                        pass
                time.sleep(0.1)
        finally:
            session.close()
        raise ServerError(f"{self.name} not ready within {self.startup_timeout:.0f} s:\n{self.stderr_tail()}")

    def _remember_workers(self) -> None:
        for pid in children(self.proc.pid) if self.proc else ():
            stat = _stat(pid)
            if stat is not None:
                self._worker_ids[pid] = stat[1]

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        pids = children(self.proc.pid)
        self._remember_workers()
        return pids

    def rss(self) -> dict[str, int | None]:
        """{pid: VmRSS KiB} for each worker, plus the master under "master"."""
        values: dict[str, int | None] = {str(pid): rss_kib(pid) for pid in self.worker_pids()}
        if self.proc is not None:
            values["master"] = rss_kib(self.proc.pid)
        return values

    def cpu(self) -> dict[str, float | None]:
        """{pid: CPU seconds so far} for each worker."""
        return {str(pid): cpu_seconds(pid) for pid in self.worker_pids()}

    def stderr_tail(self, lines: int = 30) -> str:
        path = self.log_dir / f"{self.name}.stderr.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the master (gunicorn stops its workers), SIGKILL whatever is left. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self._worker_ids.update({pid: st[1] for pid in children(proc.pid) if (st := _stat(pid))})
            if proc.poll() is None:
                _signal(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        # Workers of a killed master: only the exact processes we saw (same PID and start time).
        deadline = time.monotonic() + 5
        for pid, started in list(self._worker_ids.items()):
            while (stat := _stat(pid)) is not None and stat[1] == started and time.monotonic() < deadline:
                time.sleep(0.05)
            stat = _stat(pid)
            if stat is not None and stat[1] == started:
                _signal(pid, signal.SIGKILL)
        self._worker_ids.clear()
        for handle in self._logs:
            handle.close()
        self._logs = []


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
