"""The one seam that talks to an EHR's FHIR server.

Every call has connect and read timeouts bounded by the hook's deadline, sends
the bearer token (never logged), refuses redirects, and only goes to allowlisted
servers — next-page links included, and only on the same origin as the server
the token was issued for, so a hostile server cannot aim us (or the token) elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import requests

from ..errors import EvidenceError
from ..errors import FhirHttpError
from ..errors import FhirInvalidResponse
from ..errors import FhirNotAllowed
from ..errors import FhirTimeout
from ..fhirjson import dicts

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 50 * 1024 * 1024
_local = threading.local()


def _session() -> requests.Session:
    """One pooled session per worker thread (requests.Session is not thread-safe)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False  # no proxies or .netrc credentials from the environment
    return session


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def is_allowed(url: str, allowlist: list[str]) -> bool:
    """True when *url* falls under one of the allowlisted base-URL prefixes."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            return False
        for entry in allowlist:
            allowed = urlsplit(entry)
            if allowed.scheme != parts.scheme or (allowed.hostname or "").lower() != parts.hostname.lower():
                continue
            if allowed.port is not None and allowed.port != _origin(url)[2]:
                continue
            prefix = allowed.path.rstrip("/")
            if not prefix or parts.path == prefix or parts.path.startswith(prefix + "/"):
                return True
    except ValueError:  # malformed port etc.
        return False
    return False


@dataclass(frozen=True)
class Limits:
    connect_timeout: float
    read_timeout: float
    page_limit: int
    page_size: int


class FhirClient:
    """Reads and searches one FHIR server until a monotonic *deadline*."""

    def __init__(self, base_url: str, token: str | None, allowlist: list[str], limits: Limits, deadline: float):
        if not is_allowed(base_url, allowlist):
            raise FhirNotAllowed("FHIR server not on the allowlist")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._allowlist = allowlist
        self._limits = limits
        self._deadline = deadline
        self.requests_made = 0

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _get(self, url: str) -> dict:
        if not is_allowed(url, self._allowlist) or _origin(url) != _origin(self.base_url):
            raise FhirNotAllowed("link leaves the FHIR server's origin or allowlist")
        remaining = self._deadline - time.monotonic()
        if remaining <= 0.05:
            raise FhirTimeout("hook deadline reached")
        headers = {"Accept": "application/fhir+json, application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self.requests_made += 1
        try:
            response = _session().get(
                url,
                headers=headers,
                timeout=(min(self._limits.connect_timeout, remaining), min(self._limits.read_timeout, remaining)),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout as exc:
            raise FhirTimeout(type(exc).__name__) from exc
        except requests.RequestException as exc:
            raise EvidenceError(f"connection failed ({type(exc).__name__})") from exc
        with response:
            if response.status_code != 200:
                raise FhirHttpError(response.status_code, url)
            body = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        if len(body) > MAX_RESPONSE_BYTES:
            raise FhirInvalidResponse("response too large")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FhirInvalidResponse("response is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise FhirInvalidResponse("response is not a FHIR resource")
        if data["resourceType"] == "OperationOutcome":
            raise FhirInvalidResponse("server answered with an OperationOutcome")
        return data

    def read(self, path: str) -> dict | None:
        """Read one resource; None when the server says it does not exist."""
        try:
            return self._get(self._url(path))
        except FhirHttpError as exc:
            if exc.status in (404, 410):
                return None
            raise

    def search(self, query: str) -> tuple[list[dict], bool]:
        """Run a search and follow ``next`` links; returns (resources, complete)."""
        separator = "&" if "?" in query else "?"
        return self.follow(self._url(f"{query}{separator}_count={self._limits.page_size}"
                                     if "_count=" not in query else query))

    def follow(self, url: str) -> tuple[list[dict], bool]:
        """Read the searchset page at *url* and the pages its ``next`` links lead to.

        Returns (resources, complete): incomplete when the page limit stopped the paging.
        """
        next_url: str | None = url
        resources: list[dict] = []
        pages = 0
        while next_url is not None and pages < self._limits.page_limit:
            bundle = self._get(next_url)
            if bundle["resourceType"] != "Bundle":
                raise FhirInvalidResponse("search did not return a Bundle")
            pages += 1
            for entry in dicts(bundle.get("entry")):
                resource = entry.get("resource")
                if isinstance(resource, dict) and resource.get("resourceType") not in (None, "OperationOutcome"):
                    resources.append(resource)
            next_url = next_link(bundle)
        if next_url is not None:
            log.warning("search truncated after %d pages", pages)
        return resources, next_url is None


def next_link(bundle: dict) -> str | None:
    """The ``next`` page of a searchset Bundle, if any."""
    return next((link["url"] for link in dicts(bundle.get("link"))
                 if link.get("relation") == "next" and isinstance(link.get("url"), str)
                 and link["url"]), None)
