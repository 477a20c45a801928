"""wrk (Debian's package) driven with bench/post.lua: latency percentiles and throughput at fixed concurrency."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "post.lua"


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkSettings:
    threads: int = 2
    connections: int = 8
    timeout_s: int = 10
    #: False: "Connection: close" on every request (the default, see bench/README.md): with
    #: keep-alive, gunicorn's gthread workers keep the connections they happened to accept,
    #: and often one worker gets all 8 while the other idles, which halves throughput at random.
    keepalive: bool = False


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed: `apt-get install -y wrk` (make bench does this)")
    return found


def wrk_version() -> str:
    out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else "wrk"


def run_wrk(url: str, body_file: Path, seconds: float, settings: WrkSettings, log: Path | None = None) -> dict:
    """Run wrk for *seconds*; return requests/s, latency percentiles (ms) and error counts."""
    threads = min(settings.threads, settings.connections)
    argv = [wrk_binary(), f"-t{threads}", f"-c{settings.connections}", f"-d{max(1, round(seconds))}s",
            "--latency", f"--timeout={settings.timeout_s}s", "-s", str(LUA), url]
    env = dict(os.environ, WRK_BODY_FILE=str(body_file), WRK_CONNECTION_CLOSE="0" if settings.keepalive else "1")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ WRK_BODY_FILE={body_file} {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    match = re.search(r"^WRK_JSON (\{.*\})$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise LoadError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    raw = json.loads(match.group(1))
    lat = raw["latency_us"]
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["errors"]
    return {
        "command": ("" if settings.keepalive else "WRK_CONNECTION_CLOSE=1 ")
                   + " ".join(argv[:-3] + ["-s", "bench/post.lua", url]),
        "requests": raw["requests"],
        "seconds": round(seconds_run, 2),
        "rps": round(raw["requests"] / seconds_run, 1) if seconds_run else 0.0,
        "latency_ms": {k: round(lat[k] / 1000, 2) for k in ("min", "mean", "p50", "p75", "p90", "p99", "p999", "max")},
        "errors": errors,
        "error_count": sum(errors.values()),
    }
