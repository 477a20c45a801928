"""Targets, the console table and bench/results/latest.md."""

from __future__ import annotations

import statistics

MB = 1_000_000  # targets are in MB (10^6 bytes); /proc reports KiB


def paired_ratios(results: dict) -> tuple[float, float]:
    """b/a median latency and b/a throughput: the median over the rounds, each round's a and b back to back."""
    rounds = results["rounds"]
    return (round(statistics.median(r["latency_p50_ratio"] for r in rounds), 2),
            round(statistics.median(r["throughput_ratio"] for r in rounds), 3))


def _mb(kib: int | None) -> float | None:
    return None if kib is None else round(kib * 1024 / MB, 1)


def worker_rss_mb(sample: dict) -> dict[str, float | None]:
    return {pid: _mb(kib) for pid, kib in sample.items() if pid != "master"}


def rss_summary(b: dict) -> dict:
    before, after = worker_rss_mb(b["rss_kib"]["before"]), worker_rss_mb(b["rss_kib"]["after"])
    growth = {pid: round((after[pid] - before[pid]) / before[pid] * 100, 1)
              for pid in before if before.get(pid) and after.get(pid) is not None}
    return {"boot": worker_rss_mb(b["rss_kib"]["boot"]), "before": before, "after": after, "growth_pct": growth,
            "max_mb": max([v for v in list(before.values()) + list(after.values()) if v is not None], default=None),
            "max_growth_pct": max(growth.values(), default=None)}


def summary(results: dict) -> dict:
    """The headline figures in one flat block (what the README quotes)."""
    a, b, c, d = results["a"], results["b"], results["parse"], results.get("d")
    rss = rss_summary(b)
    lat_ratio, rps_ratio = paired_ratios(results)
    out = {
        "a_p50_ms": a["latency_ms"]["p50"], "a_p99_ms": a["latency_ms"]["p99"], "a_rps": a["rps"],
        "b_p50_ms": b["latency_ms"]["p50"], "b_p99_ms": b["latency_ms"]["p99"], "b_rps": b["rps"],
        "latency_p50_ratio_b_a": lat_ratio,
        "latency_p99_ratio_b_a": round(b["latency_ms"]["p99"] / a["latency_ms"]["p99"], 2),
        "throughput_ratio_b_a": rps_ratio,
        "rounds_latency_p50_ratio": [r["latency_p50_ratio"] for r in results["rounds"]],
        "rounds_throughput_ratio": [r["throughput_ratio"] for r in results["rounds"]],
        "cpu_ms_per_request_a": a["worker_cpu"]["ms_per_request"], "cpu_ms_per_request_b": b["worker_cpu"]["ms_per_request"],
        "parse_orjson_us": c["orjson_us"], "parse_json_us": c["json_us"],
        "rss_worker_mb_before": list(rss["before"].values()), "rss_worker_mb_after": list(rss["after"].values()),
        "rss_max_growth_pct": rss["max_growth_pct"],
    }
    if d is not None:
        out.update({
            "fhir_queries_per_hook": d["queries_per_hook"], "fhir_n_plus_one": d["n_plus_one"],
            "fhir_total_p50_ms": d["hook"]["latency_ms"]["p50"], "fhir_slowest_query_ms": d["slowest_query_ms"],
            "fhir_ratio_total_slowest": d["ratio_total_to_slowest"], "fhir_sum_of_queries_ms": d["sum_of_queries_ms"],
        })
    return out


def targets(results: dict) -> list[dict]:
    b, d = results["b"], results.get("d")
    lat_ratio, rps_ratio = paired_ratios(results)
    rss = rss_summary(b)
    found = [
        {"target": "median latency b <= 2x a", "value": f"{lat_ratio}x", "pass": lat_ratio <= 2.0},
        {"target": "throughput b >= 50% of a", "value": f"{rps_ratio * 100:.1f}%", "pass": rps_ratio >= 0.5},
    ]
    if d is not None:
        found += [
            {"target": "FHIR path total <= 1.5x slowest single query", "value": f"{d['ratio_total_to_slowest']}x",
             "pass": d["ratio_total_to_slowest"] <= 1.5},
            {"target": "FHIR path: no N+1 queries",
             "value": "; ".join(d["n_plus_one"]) if d["n_plus_one"] else
             f"none: {d['queries_per_hook']} queries, {d['queries_per_hook_6_orders']} with 6 orders",
             "pass": not d["n_plus_one"]},
        ]
    elif results.get("d_error"):
        found += [{"target": "FHIR path (d)", "value": f"error: {results['d_error'][:150]}", "pass": False}]
    else:
        found += [{"target": "FHIR path (skipped)", "value": "-", "pass": True, "skipped": True}]
    found += [
        {"target": "RSS per worker < 150 MB", "value": f"max {rss['max_mb']} MB", "pass": rss["max_mb"] < 150},
        {"target": "RSS per worker flat (growth < 10%, no restart)",
         "value": f"max {rss['max_growth_pct']:+.1f}%" + (", workers restarted" if b["workers_restarted"] else ""),
         "pass": rss["max_growth_pct"] < 10 and not b["workers_restarted"]},
    ]
    return found


def _rows(results: dict) -> list[tuple[str, str, str, str]]:
    a, b, c, d = results["a"], results["b"], results["parse"], results.get("d")
    rss = rss_summary(b)
    la, lb = a["latency_ms"], b["latency_ms"]
    lat_ratio, rps_ratio = paired_ratios(results)
    rounds = results["rounds"]
    rows = [
        ("median latency (ms)", f"{la['p50']}", f"{lb['p50']}", f"{lat_ratio:.2f}x"),
        ("p99 latency (ms)", f"{la['p99']}", f"{lb['p99']}", f"{lb['p99'] / la['p99']:.2f}x"),
        ("one client alone: median / p99 latency (ms)", _one_client(a), _one_client(b),
         f"{b['one_client_latency_ms']['p50'] / a['one_client_latency_ms']['p50']:.2f}x"),
        ("throughput (req/s)", f"{a['rps']}", f"{b['rps']}", f"{rps_ratio * 100:.1f}%"),
        (f"b/a per round ({len(rounds)}): median latency", "", "",
         " ".join(f"{r['latency_p50_ratio']:.2f}x" for r in rounds)),
        (f"b/a per round ({len(rounds)}): throughput", "", "",
         " ".join(f"{r['throughput_ratio'] * 100:.0f}%" for r in rounds)),
        ("requests measured", f"{a['requests']}", f"{b['requests']}", ""),
        ("worker CPU per request (ms)", f"{a['worker_cpu']['ms_per_request']}", f"{b['worker_cpu']['ms_per_request']}",
         f"{b['worker_cpu']['ms_per_request'] / a['worker_cpu']['ms_per_request']:.2f}x"),
        ("worker CPU s per worker (busy %)", _cpu_split(a), _cpu_split(b), ""),
        (f"b soak {b['soak']['seconds']:.0f} s: req/s, p50/p99 ms", "", f"{b['soak']['rps']}, "
         f"{b['soak']['latency_ms']['p50']}/{b['soak']['latency_ms']['p99']}", ""),
        ("RSS per worker after run / before soak (MB)", ", ".join(str(v) for v in worker_rss_mb(a["rss_kib"]).values()),
         ", ".join(str(v) for v in rss["before"].values()), ""),
        ("RSS per worker after soak (MB)", "", ", ".join(str(v) for v in rss["after"].values()),
         ", ".join(f"{v:+.1f}%" for v in rss["growth_pct"].values())),
        ("parse floor orjson / json (µs)", "", f"{c['orjson_us']} / {c['json_us']}", ""),
        ("parse + intake filter + validation (µs)", "", f"{c['parse_hook_request_us']}", ""),
        ("in-process hook, 1 thread (ms)", "", f"{results['in_process']['median_ms']}", ""),
        ("in-process hook, a chart not seen before (ms)", "", f"{results['in_process']['new_chart_median_ms']}", ""),
    ]
    if d is not None:
        rows += [
            ("d: FHIR queries per hook", "", f"{d['queries_per_hook']} (6 orders: {d['queries_per_hook_6_orders']})", ""),
            ("d: hook total p50 / p99 (ms), c=1", "", f"{d['hook']['latency_ms']['p50']} / {d['hook']['latency_ms']['p99']}", ""),
            ("d: slowest single query (ms)", "", f"{d['slowest_query_ms']}", f"{d['ratio_total_to_slowest']}x"),
            ("d: sum of single queries (ms)", "", f"{d['sum_of_queries_ms']}", f"{d['ratio_total_to_sum']}x"),
        ]
    return rows


def _one_client(run: dict) -> str:
    latency = run["one_client_latency_ms"]
    return f"{latency['p50']} / {latency['p99']}"


def _cpu_split(run: dict) -> str:
    cpu = run["worker_cpu"]
    return f"{' / '.join(str(v) for v in cpu['seconds'].values())} ({cpu['utilisation_pct']}%)"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def _targets_rows(results: dict) -> list[tuple[str, str, str]]:
    return [(t["target"], t["value"], "SKIP" if t.get("skipped") else ("PASS" if t["pass"] else "FAIL"))
            for t in results["targets"]]


def _round_seconds(env: dict) -> float:
    return round(env["wrk_settings"]["duration_s"] / env["wrk_settings"]["rounds"], 1)


def render_table(results: dict) -> str:
    w, env = results["workload"], results["environment"]
    lines = [
        f"Workload: {w['resources']} resources, {len(w['orders'])} orders, body {w['body_bytes'] / 1024:.0f} KiB; "
        f"gunicorn {env['gunicorn_settings']['workers']} workers x {env['gunicorn_settings']['threads']} gthreads; "
        f"wrk -t{env['wrk_settings']['threads']} -c{env['wrk_settings']['connections']} "
        f"-d{_round_seconds(env):g}s x {env['wrk_settings']['rounds']} alternating a/b rounds, "
        f"Connection: {env['wrk_settings']['connection']}"
        + (f"; PROTOTYPE cds_service from {env['src']}" if env.get("src") else ""),
        "",
        *_table(("measure", "a: bare Flask", "b: order-sign", "b/a"), _rows(results)),
        "",
        *_table(("target", "measured", "result"), _targets_rows(results)),
    ]
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    env, w, d = results["environment"], results["workload"], results.get("d")
    out = [
        "# Benchmark results",
        "",
        f"{env['date']}, commit {env['commit']}{' (service code modified)' if env['dirty'] else ''}"
        f"{', --quick' if env['quick'] else ''}; {env['cpu']}, {env['cores']} cores; Python {env['python']}, "
        f"gunicorn {env['gunicorn']}, {env['wrk']}; cds_service from `{env['cds_service']}`.",
        "",
        f"gunicorn: {env['gunicorn_settings']['workers']} workers, gthread, {env['gunicorn_settings']['threads']} threads, "
        f"loopback, access log on (same settings for a and b). Load: wrk -t{env['wrk_settings']['threads']} "
        f"-c{env['wrk_settings']['connections']} -d{_round_seconds(env):g}s "
        f"(Connection: {env['wrk_settings']['connection']}) in {env['wrk_settings']['rounds']} alternating rounds "
        f"(a, b, a, b …) after {env['wrk_settings']['warmup_s']:.0f} s warm-up of each; b/a ratios are the median "
        f"of the rounds' ratios; soak {env['wrk_settings']['soak_s']:.0f} s.",
        "",
        f"Request b: order-sign, patient `{'bench-patient'}`, orders {', '.join(w['orders'])}; "
        f"{w['prefetch_resources']} prefetched resources ({', '.join(f'{k} {v}' for k, v in w['by_type'].items())}), "
        f"body {w['body_bytes']:,} bytes.",
        "",
        "## Figures",
        "",
        *_table(("measure", "a: bare Flask", "b: order-sign", "b/a"), _rows(results)),
        "",
        "## Targets",
        "",
        *_table(("target", "measured", "result"), _targets_rows(results)),
    ]
    if d is not None:
        out += [
            "",
            "## FHIR path (d)",
            "",
            f"Queries the hook made ({d['queries_per_hook']}; {d['queries_per_hook_6_orders']} with each order twice), "
            f"each replayed {env['replays']} times sequentially on one keep-alive "
            "session with the bearer token (median):",
            "",
            *_table(("query", "status", "bytes", "median ms"),
                    [(r["request"], str(r["status"]), str(r["bytes"]), str(r["median_ms"])) for r in d["replay"]]),
            "",
            f"Hook total at c=1 (wrk): p50 {d['hook']['latency_ms']['p50']} ms, p99 {d['hook']['latency_ms']['p99']} ms; "
            f"slowest single query {d['slowest_query_ms']} ms -> {d['ratio_total_to_slowest']}x; "
            f"sum of all queries {d['sum_of_queries_ms']} ms -> {d['ratio_total_to_sum']}x.",
            f"N+1 problems: {'; '.join(d['n_plus_one']) or 'none'}.",
        ]
    out += ["", f"Run time {results['elapsed_s']} s. Raw data: latest.json; wrk output and server logs: logs/.", ""]
    return "\n".join(out)
