#!/usr/bin/env python
"""Profile request b in-process: the Flask test client in a loop under pyinstrument.

    pip install pyinstrument            # not a service dependency
    python bench/profile_hotpath.py [--calls 200] [--interval 0.0005]
    python bench/profile_hotpath.py --src /tmp/scratch   # profile a scratch copy of cds_service

Prints the latency distribution of the calls (median, mean, p90, max), the time spent in
the garbage collector (gc.callbacks), the hottest functions by own time and by inclusive
time (file:function, % of the profiled time), and writes the call tree to
bench/results/profile.txt and bench/results/profile.html.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.workload import Workload  # noqa: E402

SERVICE_PATH = "/cds-services/order-sign-crd"


class GcTimer:
    """Wall time spent in each GC generation while installed."""

    def __init__(self) -> None:
        self.time = defaultdict(float)
        self.count = defaultdict(int)
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.time[info["generation"]] += time.perf_counter() - self._started
            self.count[info["generation"]] += 1

    def __enter__(self) -> "GcTimer":
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


def _location(frame) -> str:
    path = frame.file_path_short or frame.file_path or "?"
    return f"{path}:{frame.function}"


def aggregate(root) -> tuple[dict[str, float], dict[str, float]]:
    """(own time, inclusive time) per file:function over the pyinstrument frame tree.

    Inclusive time counts a function once per stack (recursion is not double counted).
    """
    own: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)

    def visit(frame, on_stack: frozenset[str]) -> None:
        if frame.is_synthetic:  # [self]/[await] pseudo-frames: already in the parent's total_self_time
            return
        key = _location(frame)
        own[key] += frame.total_self_time
        if key not in on_stack:
            inclusive[key] += frame.time
        for child in frame.children:
            visit(child, on_stack | {key})

    visit(root, frozenset())
    return own, inclusive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.0005, help="pyinstrument sampling interval (s)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--src", type=Path, help="directory holding another cds_service package to profile "
                        "(a scratch copy with a prototype fix); default: this checkout")
    parser.add_argument("--no-profile", action="store_true", help="only the latency/GC figures")
    args = parser.parse_args(argv)
    if args.src:
        sys.path.insert(0, str(args.src.resolve()))
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is not installed: pip install pyinstrument", file=sys.stderr)
        return 2

    import cds_service
    from cds_service.serving import tune_garbage_collector
    from cds_service.config import Settings
    from cds_service.web.app import create_app

    print(f"cds_service from {Path(cds_service.__file__).parent}")

    body = orjson.dumps(Workload().prefetch_request())
    with tempfile.TemporaryDirectory(prefix="cds-profile-") as tmp:
        app = create_app(Settings(data_dir=Path(tmp), log_level="WARNING"))
        tune_garbage_collector()  # as a `cds-service serve` worker does
        client = app.test_client()
        for _ in range(5):
            assert client.post(SERVICE_PATH, data=body, content_type="application/json").status_code == 200

        # Unprofiled: the latency distribution and the GC's share.
        times = []
        with GcTimer() as gc_timer:
            started = time.perf_counter()
            for _ in range(args.calls):
                t0 = time.perf_counter()
                client.post(SERVICE_PATH, data=body, content_type="application/json")
                times.append(time.perf_counter() - t0)
            wall = time.perf_counter() - started
        times.sort()
        gc_total = sum(gc_timer.time.values())
        print(f"{args.calls} calls, body {len(body)} bytes: median {statistics.median(times) * 1000:.2f} ms, "
              f"mean {statistics.fmean(times) * 1000:.2f} ms, p90 {times[int(len(times) * 0.9)] * 1000:.2f} ms, "
              f"max {times[-1] * 1000:.2f} ms")
        print(f"garbage collector: {gc_total * 1000:.0f} ms of {wall * 1000:.0f} ms ({gc_total / wall * 100:.1f}%); "
              + ", ".join(f"gen{g}: {gc_timer.count[g]} runs {gc_timer.time[g] * 1000:.0f} ms" for g in sorted(gc_timer.count)))

        if args.no_profile:
            return 0
        profiler = Profiler(interval=args.interval)
        profiler.start()
        for _ in range(args.calls):
            client.post(SERVICE_PATH, data=body, content_type="application/json")
        session = profiler.stop()

    root = session.root_frame()
    total = root.time
    own, inclusive = aggregate(root)
    print(f"\nprofiled {args.calls} calls: {total:.2f} s sampled\n")
    print(f"top {args.top} by own time (% of all):")
    for key, value in sorted(own.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {value / total * 100:5.1f}%  {key}")
    print(f"\ntop {args.top} by inclusive time, project code and key libraries (% of all):")
    shown = 0
    for key, value in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if "cds_service" in key or "fhir" in key.lower() or "pydantic" in key or "sqlalchemy" in key:
            print(f"  {value / total * 100:5.1f}%  {key}")
            shown += 1
            if shown >= args.top:
                break
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.txt").write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    (args.out / "profile.html").write_text(profiler.output_html())
    print(f"\ncall tree: {args.out / 'profile.txt'} (and profile.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
