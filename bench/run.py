#!/usr/bin/env python
"""The service benchmark (``make bench``): one run, four measurements, PASS/FAIL against the targets.

a. framework ceiling: bench/bare_app.py (Flask under gunicorn, the service's gunicorn settings)
   parses the JSON body and answers {"cards": []};
b. order-sign with a realistic request (bench/workload.py: one patient, CPT 37238 + 64493 + 22633,
   ~530-resource prefetch) against ``cds-service serve``; a and b under identical wrk settings,
   then a long run of b for RSS per worker before/after;
c. JSON-parse floor: the same body parsed in-process (orjson, json);
d. FHIR path: the same chart in the FHIR test server (Medplum, Node), the same request without
   prefetch; queries per hook (and N+1 checks), the hook's latency vs its slowest single query.

    python bench/run.py            # full run (~3 min)
    python bench/run.py --quick    # short run (~1 min), for a smoke test
    python bench/run.py --help

Writes bench/results/latest.md and bench/results/latest.json (and logs/ beside them).
Exit status: 0 when the benchmark ran (targets may FAIL; add --strict to exit 1 then), 2 on error.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import replace
from datetime import datetime
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import requests  # noqa: E402

from bench.fhir_path import check_reads  # noqa: E402
from bench.fhir_path import classify  # noqa: E402
from bench.fhir_path import replay  # noqa: E402
from bench.fhir_path import summarize_stats  # noqa: E402
from bench.loadgen import WrkSettings  # noqa: E402
from bench.loadgen import run_wrk  # noqa: E402
from bench.loadgen import wrk_version  # noqa: E402
from bench.procs import GunicornServer  # noqa: E402
from bench.report import render_markdown  # noqa: E402
from bench.report import render_table  # noqa: E402
from bench.report import summary  # noqa: E402
from bench.report import targets  # noqa: E402
from bench.workload import ORDER_CODES  # noqa: E402
from bench.workload import PATIENT_ID  # noqa: E402
from bench.workload import Workload  # noqa: E402

SERVICE_PATH = "/cds-services/order-sign-crd"
COVERAGE_INFO = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
FHIR_TOKEN = "bench-token"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: 2 rounds of 3 s, 10 s soak")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for a and b (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="gthread threads per worker (default: CDS_THREADS or 4)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None,
                        help="measured seconds per server, split over the rounds (default 30)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating a/b rounds the measured seconds are split into (default 5)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up load (default 5)")
    parser.add_argument("--soak", type=float, default=None, help="seconds of load between RSS samples (default 60)")
    parser.add_argument("--fhir-duration", type=float, default=None, help="seconds of FHIR-path load at c=1 (default 10)")
    parser.add_argument("--replays", type=int, default=None, help="timed replays per FHIR query (default 20)")
    parser.add_argument("--skip-fhir", action="store_true", help="skip d (no Node FHIR server)")
    parser.add_argument("--keepalive", action="store_true",
                        help="let wrk keep connections alive (default: Connection: close, see bench/README.md)")
    parser.add_argument("--src", type=Path, help="benchmark the cds_service package in this directory instead of the "
                        "checkout's (a scratch copy holding a prototype fix); it must contain cds_service/cards")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (6 if quick else 30)
    args.rounds = args.rounds or (2 if quick else 5)
    args.warmup = args.warmup or (2 if quick else 5)
    args.soak = args.soak or (10 if quick else 60)
    args.fhir_duration = args.fhir_duration or (3 if quick else 10)
    args.replays = args.replays or (5 if quick else 20)
    if args.src is not None:
        args.src = args.src.resolve()
        if not (args.src / "cds_service" / "__init__.py").is_file():
            parser.error(f"--src {args.src}: no cds_service package there")
        sys.path.insert(0, str(args.src))
    if args.threads is None:
        from cds_service.config import Settings
        args.threads = Settings().threads
    return args


def _terminate(signum, _frame):  # SIGTERM/SIGHUP: unwind through every finally (servers are stopped there)
    print(f"\n[bench] signal {signum}: stopping every process it started", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def child_env(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({
        "CDS_HOST": "127.0.0.1", "CDS_WORKERS": str(args.workers), "CDS_THREADS": str(args.threads),
        "CDS_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    if args.src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def environment(args: argparse.Namespace) -> dict:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import gunicorn

    import cds_service
    from cds_service.config import Settings
    from cds_service.serving import gunicorn_settings
    from importlib.metadata import version
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "cds_service", "cards")),
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "flask": version("flask"), "gunicorn": gunicorn.__version__,
        "cds_service": str(Path(cds_service.__file__).parent), "src": str(args.src) if args.src else None,
        "orjson": orjson.__version__, "wrk": wrk_version(),
        "gunicorn_settings": {**gunicorn_settings(Settings(workers=args.workers, threads=args.threads)),
                              "bind": "127.0.0.1:<free port>"},
        "wrk_settings": {"threads": args.wrk_threads, "connections": args.connections, "duration_s": args.duration,
                         "rounds": args.rounds, "warmup_s": args.warmup, "soak_s": args.soak,
                         "connection": "keep-alive" if args.keepalive else "close"},
        "replays": args.replays, "fhir_duration_s": args.fhir_duration,
        "quick": args.quick,
    }


# --- checks --------------------------------------------------------------------------------


def check_hook_response(response: requests.Response, orders: int) -> list[str]:
    """Problems with a hook answer: must be 200 with cards and one coverage-information action per order."""
    if response.status_code != 200:
        return [f"status {response.status_code}: {response.text[:300]}"]
    data = response.json()
    problems = []
    if not data.get("cards"):
        problems.append("no cards")
    actions = data.get("systemActions") or []
    with_coverage = [a for a in actions
                     if any(e.get("url") == COVERAGE_INFO for e in (a.get("resource") or {}).get("extension") or ())]
    if len(with_coverage) != orders:
        problems.append(f"{len(with_coverage)} coverage-information systemActions, expected {orders}")
    return problems


def outcomes(response: requests.Response) -> list[str]:
    return [c.get("summary", "") for c in response.json().get("cards", [])]


def post(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)


# --- measurements --------------------------------------------------------------------------


def parse_floor(body: bytes, quick: bool) -> dict:
    """c: in-process parse of the same body, median µs per call (orjson, json; plus what the service does on
    arrival: the intake filter of the bundled policies and request-model validation)."""
    from cds_service.catalog import Catalog
    from cds_service.catalog import bundled_policy_dir
    from cds_service.cdshooks import parse_hook_request
    from cds_service.intake import EvidenceFilter
    from cds_service.prefetch import searched_codes

    evidence = EvidenceFilter(searched_codes(Catalog.load(bundled_policy_dir())))

    text = body.decode()
    repeat, number = (7, 20) if quick else (15, 50)

    def median_us(stmt) -> float:
        runs = timeit.Timer(stmt).repeat(repeat=repeat, number=number)
        return round(statistics.median(runs) / number * 1e6, 1)

    return {
        "body_bytes": len(body),
        "orjson_us": median_us(lambda: orjson.loads(body)),
        "json_us": median_us(lambda: json.loads(text)),
        "parse_hook_request_us": median_us(lambda: parse_hook_request(body, evidence)),
    }


def _new_chart_bodies(body: bytes, count: int) -> list[bytes]:
    """*count* copies of *body* whose prefetch resources each differ in content (``meta.versionId``).

    The service remembers R4B validation verdicts by content digest (``cds_service/r4b.py``), so
    repeating one body measures a chart seen before; these bodies stand for charts seen for the
    first time, as a payer endpoint mostly gets them.
    """
    data = orjson.loads(body)
    bodies = []
    for copy in range(count):
        for value in data["prefetch"].values():
            for entry in value.get("entry") or ():
                entry["resource"]["meta"] = {"versionId": f"bench-{copy}"}
            if "entry" not in value:
                value["meta"] = {"versionId": f"bench-{copy}"}
        bodies.append(orjson.dumps(data))
    return bodies


def in_process_hook(body: bytes, data_dir: Path, iterations: int) -> dict:
    """The hook through Flask's test client, one thread, no network: the service's own work per call.

    Measured twice: the same body every call (as wrk sends it: validation verdicts remembered),
    and a chart not seen before every call (every piece of evidence validated). With the
    garbage-collector settings a serving worker uses (``tune_garbage_collector``), restored afterwards.
    """
    from cds_service.serving import tune_garbage_collector
    from cds_service.config import Settings
    from cds_service.web.app import create_app

    app = create_app(Settings(data_dir=data_dir, log_level="WARNING"))
    client = app.test_client()
    new_charts = _new_chart_bodies(body, iterations)

    def timed(bodies: list[bytes]) -> list[float]:
        times = []
        for each in bodies:
            started = time.perf_counter()
            response = client.post(SERVICE_PATH, data=each, content_type="application/json")
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
        return times

    thresholds = gc.get_threshold()
    tune_garbage_collector()
    try:
        timed([body] * 10)
        seen = timed([body] * iterations)
        first_seen = timed(new_charts)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return {"iterations": iterations, "median_ms": round(statistics.median(seen) * 1000, 2),
            "min_ms": round(min(seen) * 1000, 2),
            "new_chart_median_ms": round(statistics.median(first_seen) * 1000, 2)}


def measured_run(server: GunicornServer, body_file: Path, seconds: float, wrk: WrkSettings, logfile: Path) -> dict:
    """One wrk run, with the workers' CPU time over it (how busy each worker was, CPU per request)."""
    before = server.cpu()
    result = run_wrk(server.url + SERVICE_PATH, body_file, seconds, wrk, logfile)
    after = server.cpu()
    if result["error_count"]:
        raise RuntimeError(f"{server.name}: wrk reported errors {result['errors']} (see {logfile})")
    used = {pid: round(after[pid] - before[pid], 2) for pid in before
            if before[pid] is not None and after.get(pid) is not None}
    total = sum(used.values())
    result["worker_cpu"] = {
        "seconds": used,
        "utilisation_pct": round(total / result["seconds"] * 100) if result["seconds"] else None,
        "ms_per_request": round(total / result["requests"] * 1000, 2) if result["requests"] else None,
    }
    return result


def side_by_side(bare: GunicornServer, service: GunicornServer, args: argparse.Namespace, body_file: Path,
                 wrk: WrkSettings, logfile: Path) -> tuple[dict, dict, list[dict]]:
    """a and b measured in alternating rounds (a, b, a, b …) after a warm-up of each.

    A machine whose speed drifts during the run (a shared VM) then slows both alike: each
    round's b/a ratio compares two runs seconds apart. Each server is then measured once
    more with one client alone (unsaturated latency).
    """
    url_a, url_b = bare.url + SERVICE_PATH, service.url + SERVICE_PATH
    for url in (url_a, url_b):
        run_wrk(url, body_file, args.warmup, wrk, logfile)
    seconds = args.duration / args.rounds
    rounds = []
    for number in range(1, args.rounds + 1):
        a = measured_run(bare, body_file, seconds, wrk, logfile)
        b = measured_run(service, body_file, seconds, wrk, logfile)
        rounds.append({"a": a, "b": b, "latency_p50_ratio": round(b["latency_ms"]["p50"] / a["latency_ms"]["p50"], 2),
                       "throughput_ratio": round(b["rps"] / a["rps"], 3)})
        log(f"round {number}/{args.rounds}: a {a['rps']} req/s p50 {a['latency_ms']['p50']} ms, "
            f"b {b['rps']} req/s p50 {b['latency_ms']['p50']} ms")
    combined = {name: combine([r[name] for r in rounds]) for name in ("a", "b")}
    alone = replace(wrk, threads=1, connections=1)
    for name, server in (("a", bare), ("b", service)):
        one = run_wrk(server.url + SERVICE_PATH, body_file, max(3.0, seconds), alone, logfile)
        combined[name]["one_client_latency_ms"] = one["latency_ms"]
    return combined["a"], combined["b"], rounds


def combine(runs: list[dict]) -> dict:
    """Several measured runs of one server as one: totals, and the median of the rounds' percentiles."""
    requests_ = sum(r["requests"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    cpu: dict = {}
    for run in runs:
        for pid, used in run["worker_cpu"]["seconds"].items():
            cpu[pid] = round(cpu.get(pid, 0.0) + used, 2)
    return {
        "requests": requests_, "seconds": round(seconds, 2), "rps": round(requests_ / seconds, 1),
        "latency_ms": {key: round(statistics.median(r["latency_ms"][key] for r in runs), 2)
                       for key in ("p50", "p99")},
        "worker_cpu": {"seconds": cpu, "utilisation_pct": round(sum(cpu.values()) / seconds * 100),
                       "ms_per_request": round(sum(cpu.values()) / requests_ * 1000, 2)},
        "error_count": sum(r["error_count"] for r in runs),
    }


def start_bare(args, env, logs: Path, body_file: Path) -> GunicornServer:
    server = GunicornServer("a-bare", [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", "{port}"],
                            env, logs, args.workers).start()
    log(f"a: bare Flask app on {server.url}, workers {server.worker_pids()}")
    response = post(server.url + SERVICE_PATH, body_file.read_bytes())
    if response.status_code != 200 or response.json() != {"cards": []}:
        raise RuntimeError(f"bare app answered {response.status_code}: {response.text[:200]}")
    return server


def start_service(args, env, logs: Path) -> GunicornServer:
    argv = [str(Path(sys.executable).parent / "cds-service"), "serve", "--host", "127.0.0.1", "--port", "{port}",
            "--workers", str(args.workers)]
    server = GunicornServer("b-service", argv, env, logs, args.workers).start()
    log(f"b: cds-service serve on {server.url}, workers {server.worker_pids()}")
    return server


def check_service(service: GunicornServer, body_file: Path) -> list[str]:
    """Request b's answer must be right before it is timed; returns the card summaries."""
    response = post(service.url + SERVICE_PATH, body_file.read_bytes())
    problems = check_hook_response(response, len(ORDER_CODES))
    if problems:
        raise RuntimeError(f"service answer to request b is not as expected: {problems}")
    log(f"b: checked: 200, {len(response.json()['cards'])} cards, {len(ORDER_CODES)} coverage-information actions")
    return outcomes(response)


def soak(service: GunicornServer, args, body_file: Path, wrk: WrkSettings, logs: Path, rss_boot: dict) -> dict:
    """b under load for ``--soak`` seconds: RSS per worker before and after, and whether workers restarted."""
    workers_before = service.worker_pids()
    rss_before = service.rss()
    log(f"b: soak {args.soak:.0f} s for RSS (workers {workers_before})")
    run = measured_run(service, body_file, args.soak, wrk, logs / "wrk.log")
    return {
        "rss_kib": {"boot": rss_boot, "before": rss_before, "after": service.rss()},
        "workers_restarted": workers_before != service.worker_pids(),
        "soak": {k: run[k] for k in ("requests", "seconds", "rps", "latency_ms", "errors", "error_count", "worker_cpu")},
    }


def measure_fhir(server: GunicornServer, workload: Workload, args, tmp: Path, logs: Path) -> dict:
    from tests.support.fhir_server import FhirTestServer

    fhir = FhirTestServer(token=FHIR_TOKEN)
    fhir.start()
    try:
        log(f"d: FHIR test server on {fhir.base_url} (started in {fhir.startup_seconds:.1f} s)")
        for bundle in workload.transaction_bundles():
            fhir.load(bundle)
        url = server.url + SERVICE_PATH
        body = orjson.dumps(workload.fhir_request(fhir.base_url, FHIR_TOKEN))
        body_file = tmp / "request-fhir.json"
        body_file.write_bytes(body)

        post(url, body)  # first call: worker-side imports, connection pool
        fhir.reset_stats()
        response = post(url, body)
        stats = fhir.stats()
        problems = check_hook_response(response, len(ORDER_CODES))
        if problems:
            raise RuntimeError(f"service answer on the FHIR path is not as expected: {problems}")

        # The same call with each order twice (new ids): per-order queries would double the count.
        doubled = workload.drafts + [dict(d, id=f"{d['id']}-again") for d in workload.drafts]
        fhir.reset_stats()
        response_doubled = post(url, orjson.dumps(workload.fhir_request(fhir.base_url, FHIR_TOKEN, doubled)))
        stats_doubled = fhir.stats()
        if check_hook_response(response_doubled, len(doubled)):
            raise RuntimeError(f"6-order FHIR-path call failed: {check_hook_response(response_doubled, len(doubled))}")

        kinds = classify(stats)
        n_plus_one = kinds["problems"] + check_reads(kinds["reads"], PATIENT_ID)
        if len(stats_doubled) != len(stats):
            n_plus_one.append(f"{len(stats)} queries for 3 orders but {len(stats_doubled)} for 6")
        failed = [s for s in stats if s["status"] != 200]
        log(f"d: {len(stats)} FHIR queries per hook ({len(stats_doubled)} with 6 orders); "
            f"N+1 problems: {n_plus_one or 'none'}")

        wrk = WrkSettings(threads=1, connections=1, keepalive=args.keepalive)
        run_wrk(url, body_file, min(args.warmup, 3), wrk, logs / "wrk.log")
        fhir.reset_stats()
        hook = run_wrk(url, body_file, args.fhir_duration, wrk, logs / "wrk.log")
        if hook["error_count"]:
            raise RuntimeError(f"FHIR path: wrk reported errors {hook['errors']}")
        load_stats = fhir.stats()
        fhir.reset_stats()

        replays = replay(fhir.root_url, stats, FHIR_TOKEN, args.replays)
        slowest = max(replays, key=lambda r: r["median_ms"])
        total_sequential = round(sum(r["median_ms"] for r in replays), 2)
        log(f"d: hook p50 {hook['latency_ms']['p50']} ms; slowest query {slowest['median_ms']} ms "
            f"({slowest['request'][:60]}); sum of queries {total_sequential} ms")
        return {
            "queries_per_hook": len(stats),
            "queries_per_hook_6_orders": len(stats_doubled),
            "queries_during_load_per_hook": round(len(load_stats) / hook["requests"], 2) if hook["requests"] else None,
            "non_200_queries": len(failed),
            "reads": kinds["reads"], "searches": kinds["searches"],
            "n_plus_one": n_plus_one,
            "queries": summarize_stats(stats),
            "cards": outcomes(response),
            "hook": {k: hook[k] for k in ("command", "requests", "seconds", "rps", "latency_ms", "errors")},
            "replay": replays,
            "slowest_query_ms": slowest["median_ms"],
            "slowest_query": slowest["request"],
            "sum_of_queries_ms": total_sequential,
            "ratio_total_to_slowest": round(hook["latency_ms"]["p50"] / slowest["median_ms"], 2),
            "ratio_total_to_sum": round(hook["latency_ms"]["p50"] / total_sequential, 2),
        }
    finally:
        fhir.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    out: Path = args.out
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    wrk = WrkSettings(threads=args.wrk_threads, connections=args.connections, keepalive=args.keepalive)
    results: dict = {"environment": environment(args)}
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmpname:
        tmp = Path(tmpname)
        workload = Workload()
        request = workload.prefetch_request()
        body = orjson.dumps(request)
        body_file = tmp / "request-prefetch.json"
        body_file.write_bytes(body)
        prefetched = sum(len(v.get("entry") or ()) if isinstance(v, dict) and v.get("resourceType") == "Bundle"
                         else int(bool(v)) for v in request["prefetch"].values())
        results["workload"] = {**workload.summary(), "body_bytes": len(body), "prefetch_resources": prefetched}
        log(f"workload: {results['workload']['resources']} resources, request body {len(body) / 1024:.0f} KiB")

        results["parse"] = parse_floor(body, args.quick)
        results["in_process"] = in_process_hook(body, tmp / "data-inproc", 30 if args.quick else 200)
        log(f"c: orjson {results['parse']['orjson_us']} µs, json {results['parse']['json_us']} µs; "
            f"in-process hook {results['in_process']['median_ms']} ms, "
            f"new chart each call {results['in_process']['new_chart_median_ms']} ms")

        env = child_env(args, tmp / "data-b")
        bare = start_bare(args, env, logs, body_file)
        service = None
        try:
            service = start_service(args, env, logs)
            cards = check_service(service, body_file)
            rss_boot = service.rss()
            results["a"], results["b"], results["rounds"] = side_by_side(bare, service, args, body_file, wrk,
                                                                         logs / "wrk.log")
            results["a"]["rss_kib"] = bare.rss()
            bare.stop()
            results["b"]["cards"] = cards
            results["b"].update(soak(service, args, body_file, wrk, logs, rss_boot))
            if not args.skip_fhir:
                try:
                    results["d"] = measure_fhir(service, workload, args, tmp, logs)
                except Exception as exc:  # noqa: BLE001 - a and b stand on their own; d is reported as failed
                    log(f"d: FAILED: {exc}")
                    results["d_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            bare.stop()
            if service is not None:
                service.stop()

    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["summary"] = summary(results)
    results["targets"] = targets(results)
    table = render_table(results)
    print()
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(render_markdown(results))
    log(f"wrote {out / 'latest.md'} and {out / 'latest.json'} ({results['elapsed_s']} s)")
    failed = [t for t in results["targets"] if not t["pass"]]
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\n[bench] interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - report and exit 2 after the finally blocks ran
        import traceback
        traceback.print_exc()
        print(f"[bench] error: {exc}", file=sys.stderr)
        sys.exit(2)
