"""How a serving worker runs: its gunicorn configuration and its garbage-collector settings.

``cds-service serve`` uses both; so does the benchmark's bare Flask app (bench/bare_app.py),
so that the two differ only in the work done per request.
"""

from __future__ import annotations

import gc

from .config import Settings


def gunicorn_settings(settings: Settings) -> dict:
    """The gunicorn configuration ``serve`` runs with (the benchmark's bare app uses it too)."""
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        # A worker takes no more connections than it has threads, so keep-alive clients
        # spread over all workers instead of queueing on the first one.
        "worker_connections": settings.threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": "-",
        "limit_request_line": 8190,
    }


def tune_garbage_collector() -> None:
    """Garbage-collector settings for a serving worker.

    Everything loaded at start (policies, FHIR model classes) lives as long as the process:
    freezing it keeps full collections from rescanning ~10^5 objects. A 200 KB prefetch parses
    into ~10^4 short-lived, acyclic objects that reference counting frees; the default threshold
    of 700 allocations would run the collector a dozen times per request for nothing.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
