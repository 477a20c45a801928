"""Gather the evidence for one hook call: the prefetch, plus whatever is missing from the EHR.

CDS Hooks semantics: a template key that is absent (or holds an
OperationOutcome) was not satisfied and is fetched; a key present as null or
an empty Bundle means "no data" and is not. A prefetched Bundle with a
``next`` link is the first page: the rest is read from the FHIR server. All
missing keys and remaining pages are fetched concurrently, each following its
``next`` links, under one deadline. A query that fails (or remaining pages
that cannot be read) leaves its resource types *unavailable*: the engine then
treats their absence as unknown, and no order is reported as covered because of it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from concurrent.futures import Future
from concurrent.futures import wait
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ..cdshooks import HookRequest
from ..config import Settings
from ..errors import EvidenceError
from ..errors import PrefetchUnavailable
from ..fhirjson import dicts
from ..prefetch import PrefetchTemplate
from .client import FhirClient
from .client import Limits
from .client import is_allowed
from .client import next_link

log = logging.getLogger(__name__)


@dataclass
class Evidence:
    resources: list[dict] = field(default_factory=list)
    #: Resource types the EHR could not provide (FHIR server failure, deadline, truncated paging).
    unavailable: set[str] = field(default_factory=set)
    fetched_keys: list[str] = field(default_factory=list)
    queries: int = 0


_NOT_EVIDENCE = (None, "OperationOutcome")


def _resources_in(value: Any) -> list[dict]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        found = []
        for entry in dicts(value.get("entry")):
            resource = entry.get("resource")
            if type(resource) is dict and resource.get("resourceType") not in _NOT_EVIDENCE:
                found.append(resource)
        return found
    return [] if value.get("resourceType") in _NOT_EVIDENCE else [value]


def _satisfied(prefetch: dict[str, Any], key: str) -> bool:
    """Present and not an OperationOutcome (null and empty Bundles are answers: "no data")."""
    if key not in prefetch:
        return False
    value = prefetch[key]
    return not (isinstance(value, dict) and value.get("resourceType") == "OperationOutcome")


def gather_evidence(
    request: HookRequest,
    templates: tuple[PrefetchTemplate, ...],
    needed_types: frozenset[str],
    settings: Settings,
    executor: Executor,
    deadline: float,
) -> Evidence:
    """Collect prefetched resources (under any key) and fetch the needed keys that are missing.

    *deadline* is a ``time.monotonic()`` instant: every query ends by then.

    :raise PrefetchUnavailable: needed data is missing and there is no allowed way to fetch it (412).
    """
    prefetch = request.prefetch or {}
    evidence = Evidence([resource for value in prefetch.values() for resource in _resources_in(value)])
    needed = [t for t in templates if t.always or set(t.resource_types) & needed_types]
    missing = [t for t in needed if not _satisfied(prefetch, t.key)]
    paged = {t: link for t in needed if t not in missing and (link := _next_page(prefetch[t.key]))}
    if not missing and not paged:
        return evidence

    why = _why_not_fetched(request, settings)
    if why and missing:
        keys = ", ".join(t.key for t in missing)
        raise PrefetchUnavailable(f"prefetch lacks {keys} and {why}", expression="prefetch")
    if why:
        log.warning("prefetch %s has further pages and %s; treated as incomplete", ",".join(t.key for t in paged), why)
        for template in paged:
            evidence.unavailable.update(template.resource_types)
        return evidence

    limits = Limits(settings.fhir_connect_timeout, settings.fhir_read_timeout,
                    settings.fhir_page_limit, settings.fhir_page_size)
    client = FhirClient(request.fhirServer, request.access_token, settings.fhir_allowlist, limits, deadline)
    patient_id = request.context.patientId
    futures: dict[Future, PrefetchTemplate] = {
        executor.submit(_fetch, client, template, patient_id): template for template in missing
    }
    futures.update({executor.submit(client.follow, link): template for template, link in paged.items()})
    done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
    for future in pending:
        future.cancel()
        evidence.unavailable.update(futures[future].resource_types)
    for future in done:
        template = futures[future]
        try:
            resources, complete = future.result()
        except EvidenceError as exc:
            log.warning("prefetch %s could not be fetched: %s", template.key, exc)
            evidence.unavailable.update(template.resource_types)
            continue
        evidence.resources.extend(resources)
        evidence.fetched_keys.append(template.key)
        if not complete:
            evidence.unavailable.update(template.resource_types)
    evidence.queries = client.requests_made
    if pending:
        log.warning("hook deadline reached with %d queries pending", len(pending))
    return evidence


def _next_page(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return next_link(value)
    return None


def _why_not_fetched(request: HookRequest, settings: Settings) -> str | None:
    """Why this request's FHIR server may not be queried, or None when it may."""
    server = request.fhirServer
    if not server:
        return "the request has no fhirServer"
    if not is_allowed(server, settings.fhir_allowlist):
        log.warning("fhirServer not on the allowlist; treated as absent")
        return "its fhirServer is not one this service is allowed to contact"
    if request.access_token is None and not settings.fhir_allow_anonymous:
        return "the request has no fhirAuthorization access token"
    return None


def _fetch(client: FhirClient, template: PrefetchTemplate, patient_id: str) -> tuple[list[dict], bool]:
    query = template.render(patient_id)
    if "?" not in query:
        resource = client.read(query)
        return ([resource] if resource else []), True
    return client.search(query)
