"""CDS Hooks client authentication: the EHR's signed JWT on every call (CDS Hooks 2.0, "Trusting CDS Clients").

Each trusted client is an issuer (``iss``) with its public keys, as a JWKS URL or a file
exchanged out of band. A call is accepted when its ``Authorization: Bearer <JWT>`` is signed
with an asymmetric algorithm by a key of that issuer's JWKS (chosen by ``kid``), its ``aud``
is the exact URL called, it has not expired, lives at most an hour, names the configured
``tenant`` if there is one, and its ``jti`` has not been seen before by any worker (the ids are
claimed in the shared store). Anything else is a 401 that does not say why; the reason is
logged with ``iss`` and ``jti``, never the token.

JWKS URLs are the only URLs this module fetches: a token's ``jku`` must equal the configured
one, so a token cannot point the service at another host.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import model_validator

from .errors import ServiceUnavailable
from .errors import Unauthorized
from .store import StoreError

#: Records (iss, jti) as used until the expiry given; False when it was used before.
ClaimTokenId = Callable[[str, str, datetime], bool]

log = logging.getLogger(__name__)

#: Asymmetric JWS algorithms only: "none" and HMAC (HS*) are refused (CDS Hooks: SHALL NOT).
ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_LIFETIME_SECONDS = 3600  # CDS Hooks best practice; also bounds how long a jti is remembered
CLOCK_SKEW_SECONDS = 60
JWKS_MAX_AGE_SECONDS = 3600
JWKS_MIN_REFRESH_SECONDS = 30  # an unknown kid re-fetches the JWKS (key rotation), at most this often


class TrustedClient(BaseModel):
    """A CDS client (EHR) allowed to call the service, identified by its JWT issuer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iss: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    #: When set, the JWT's ``tenant`` claim must equal it.
    tenant: str | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> "TrustedClient":
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError(f"trusted client '{self.iss}': give exactly one of jwks_url or jwks_file")
        if self.jwks_url is not None:
            url = urlsplit(self.jwks_url)
            if not (url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK)):
                raise ValueError(f"trusted client '{self.iss}': jwks_url must be https (http only on loopback)")
        return self


class _Rejected(Exception):
    """Why a token was refused: for the log only, never for the caller."""


class ClientAuthenticator:
    def __init__(self, clients: list[TrustedClient], claim_token_id: ClaimTokenId, connect_timeout: float,
                 read_timeout: float):
        self._clients = {client.iss: client for client in clients}
        self._claim_token_id = claim_token_id
        self._timeouts = (connect_timeout, read_timeout)
        self._keys: dict[str, tuple[float, dict[str, tuple[jwt.PyJWK, str | None]]]] = {}  # source -> (read at, keys)
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, audience: str) -> None:
        """Return when *authorization* carries a valid JWT of a trusted client; else raise Unauthorized."""
        try:
            self._verify(_bearer(authorization), audience.rstrip("/"))
        except _Rejected as exc:
            log.info("client JWT refused: %s", exc)
            raise Unauthorized() from None

    def _verify(self, token: str, audience: str) -> None:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _Rejected(f"malformed token ({type(exc).__name__})") from None
        iss, jti = unverified.get("iss"), unverified.get("jti")
        where = f"iss={str(iss)[:200]!r} jti={str(jti)[:100]!r}"  # unverified: quoted and cut for the log
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _Rejected(f"{where}: algorithm {alg!r} is not accepted")
        if header.get("typ", "JWT") != "JWT":
            raise _Rejected(f"{where}: typ {header.get('typ')!r}")
        client = self._clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise _Rejected(f"{where}: issuer not trusted")
        jku = header.get("jku")
        if jku is not None and client.jwks_url is not None and jku != client.jwks_url:
            raise _Rejected(f"{where}: jku {jku!r} is not the issuer's configured JWKS URL")
        key = self._key(client, header.get("kid"), alg, where)
        try:
            claims = jwt.decode(
                token, key=key.key, algorithms=[alg], audience=_audiences(audience), issuer=client.iss,
                leeway=CLOCK_SKEW_SECONDS, options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise _Rejected(f"{where}: {type(exc).__name__}: {exc}") from None
        if client.tenant is not None and claims.get("tenant") != client.tenant:
            raise _Rejected(f"{where}: tenant {claims.get('tenant')!r}")
        if not isinstance(claims["exp"], (int, float)) or not isinstance(claims["iat"], (int, float)) \
                or claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
            raise _Rejected(f"{where}: lifetime over {MAX_LIFETIME_SECONDS} s")
        self._remember(client.iss, str(jti), float(claims["exp"]), where)

    def _key(self, client: TrustedClient, kid: Any, alg: str, where: str) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid:
            raise _Rejected(f"{where}: no kid")
        for refresh in (False, True):
            found = self._jwks(client, refresh).get(kid)
            if found is not None:
                key, declared_alg = found
                if declared_alg not in (None, alg):
                    raise _Rejected(f"{where}: key {kid!r} is for {declared_alg}, not {alg}")
                return key
        raise _Rejected(f"{where}: no key {kid!r} in the issuer's JWKS")

    def _jwks(self, client: TrustedClient, refresh: bool) -> dict[str, tuple[jwt.PyJWK, str | None]]:
        """kid -> (key, the alg the JWK declares); re-read after an hour, or on *refresh* after 30 s."""
        source = client.jwks_url or str(client.jwks_file)
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get(source)
        if cached is not None:
            age = now - cached[0]
            if age < JWKS_MAX_AGE_SECONDS and (not refresh or age < JWKS_MIN_REFRESH_SECONDS):
                return cached[1]
        try:
            keys = _parse_jwks(self._load_jwks(client))
        except (ValueError, OSError, requests.RequestException) as exc:
            if cached is not None:
                return cached[1]  # keep the keys we have while the JWKS endpoint is down
            raise _Rejected(f"JWKS of {client.iss} unavailable ({type(exc).__name__})") from None
        with self._lock:
            self._keys[source] = (now, keys)
        return keys

    def _load_jwks(self, client: TrustedClient) -> dict:
        if client.jwks_file is not None:
            return json.loads(client.jwks_file.read_text())
        response = requests.get(client.jwks_url, timeout=self._timeouts, allow_redirects=False,
                                headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()

    def _remember(self, iss: str, jti: str, exp: float, where: str) -> None:
        """Refuse a jti used before (replay), remembered until its token expires (with clock skew)."""
        until = datetime.fromtimestamp(exp + CLOCK_SKEW_SECONDS, timezone.utc)
        try:
            fresh = self._claim_token_id(iss, jti, until)
        except StoreError as exc:
            log.error("client token id not recorded: %s", exc)
            raise ServiceUnavailable("the client token could not be checked; retry the request") from None
        if not fresh:
            raise _Rejected(f"{where}: jti replayed")


def _parse_jwks(data: Any) -> dict[str, tuple[jwt.PyJWK, str | None]]:
    """The usable signing keys of a JWKS document by kid (keys PyJWT cannot use are skipped)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = (jwt.PyJWK(entry), entry.get("alg"))
        except jwt.PyJWTError:
            continue
    return keys


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Rejected("no bearer token")
    return token.strip()


def _audiences(audience: str) -> list[str]:
    """The URL called, with and without a trailing slash (clients differ on it)."""
    return [audience, audience + "/"]
