"""FHIR path analysis: the queries one hook call makes, N+1 detection, and replaying them one by one."""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import requests

# Search parameters that only page through one search (not a new query).
_PAGING = {"_offset", "_page", "_cursor", "_getpages", "_getpagesoffset", "_pageId", "__page"}
_READ = re.compile(r"^/fhir/([A-Za-z]+)/([^/]+)$")
_SEARCH = re.compile(r"^/fhir/([A-Za-z]+)(?:/_search)?$")


def classify(stats: list[dict]) -> dict:
    """Sort the server's request log into reads and searches and look for N+1 patterns.

    N+1 here means any of: a read of a resource other than the context patient (per-resource
    fetches, e.g. resolving references one by one); the same resource type searched more than
    once except for paging (per-order queries); a search whose parameters name one resource id
    (``_id=``, ``subject=Type/id`` for anything but the patient).
    """
    reads, searches, problems = [], [], []
    searched: dict[str, int] = {}
    for entry in stats:
        path, params = entry["path"], entry.get("params") or {}
        if (match := _READ.match(path)) is not None:
            reads.append(f"{match.group(1)}/{match.group(2)}")
            continue
        if (match := _SEARCH.match(path)) is not None:
            rtype = match.group(1)
            searches.append(rtype)
            if not (set(params) & _PAGING):
                searched[rtype] = searched.get(rtype, 0) + 1
            if "_id" in params:
                problems.append(f"{rtype} searched by _id")
            continue
        problems.append(f"unexpected request {entry['method']} {path}")
    for rtype, count in searched.items():
        if count > 1:
            problems.append(f"{rtype} searched {count} times in one hook call")
    return {"reads": reads, "searches": searches, "problems": problems}


def check_reads(reads: list[str], patient_id: str) -> list[str]:
    return [f"per-resource read {ref}" for ref in reads if ref != f"Patient/{patient_id}"]


def replay(root_url: str, stats: list[dict], token: str, repeats: int, warmup: int = 2) -> list[dict]:
    """Time every query of one hook call directly against the server, sequentially, on one
    keep-alive session (as the service's per-thread requests.Session does).

    Each URL is exactly what the service sent (path + raw query string from ``stats()``);
    returns per URL the median and min wall time over *repeats* after *warmup* untimed calls.
    """
    session = requests.Session()
    session.trust_env = False
    headers = {"Accept": "application/fhir+json, application/json", "Authorization": f"Bearer {token}"}
    results = []
    try:
        for entry in stats:
            url = f"{root_url}{entry['path']}" + (f"?{entry['query']}" if entry.get("query") else "")
            times = []
            status = None
            for i in range(warmup + repeats):
                started = time.perf_counter()
                with session.get(url, headers=headers, timeout=30) as response:
                    body = response.content
                    status = response.status_code
                elapsed = time.perf_counter() - started
                if i >= warmup:
                    times.append(elapsed)
            results.append({
                "request": f"GET {entry['path']}" + (f"?{_short(entry.get('query', ''))}" if entry.get("query") else ""),
                "status": status, "bytes": len(body),
                "median_ms": round(statistics.median(times) * 1000, 2), "min_ms": round(min(times) * 1000, 2),
            })
    finally:
        session.close()
    return results


def _short(query: str, limit: int = 70) -> str:
    return query if len(query) <= limit else f"{query[:limit]}… ({len(query)} chars)"


def summarize_stats(stats: list[dict]) -> list[dict[str, Any]]:
    return [{"method": s["method"], "path": s["path"], "query": _short(s.get("query") or ""), "status": s["status"]}
            for s in stats]
