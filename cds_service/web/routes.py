"""HTTP routes: thin wrappers over HookService (CDS Hooks), plus DTR, assertions and policy pages."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request

from ..dtr import questionnaire
from ..errors import NotFound
from ..service import HookService
from .policy_page import render_policy_page
from .policy_page import render_policy_index

bp = Blueprint("cds", __name__)


def _service() -> HookService:
    return current_app.extensions["cds"]


def _json(data: Any, status: int = 200, mimetype: str = "application/json") -> Response:
    return Response(orjson.dumps(data), status=status, mimetype=mimetype)


def _base_url() -> str:
    return request.host_url


# Endpoints that carry patient data: with CDS_REQUIRE_CLIENT_JWT they need the client's JWT.
_AUTHENTICATED = {"cds.discovery", "cds.call", "cds.feedback", "cds.assertion"}


@bp.before_request
def _authenticate_client() -> None:
    authenticator = current_app.extensions.get("cds_auth")
    if authenticator is None or request.method == "OPTIONS" or request.endpoint not in _AUTHENTICATED:
        return
    public = _service().settings.public_base_url
    audience = public.rstrip("/") + request.path if public else request.base_url
    authenticator.authenticate(request.headers.get("Authorization"), audience)


@bp.get("/cds-services")
def discovery() -> Response:
    return _json(_service().discovery())


@bp.post("/cds-services/<service_id>")
def call(service_id: str) -> Response:
    return _json(_service().call(service_id, request.get_data(cache=False), _base_url()))


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    _service().feedback(service_id, request.get_data(cache=False))
    return Response(status=200)


@bp.get("/healthz")
def liveness() -> Response:
    return _json({"status": "ok"})


@bp.get("/readyz")
def readiness() -> Response:
    service = _service()
    ready = service.store.ping()
    body = {"status": "ready" if ready else "unavailable", "policies": len(service.catalog.policies),
            "database": "ok" if ready else "unreachable"}
    return _json(body, 200 if ready else 503)


@bp.get("/coverage-assertions/<assertion_id>")
def assertion(assertion_id: str) -> Response:
    record = _service().store.get_assertion(assertion_id)
    if record is None:
        raise NotFound(f"no coverage assertion '{assertion_id}'")
    data = asdict(record)
    data["created_at"] = record.created_at.isoformat()
    return _json(data)


# --- FHIR-style reads of the artefacts this service defines (DTR) ------------------------

_FHIR = "application/fhir+json"


@bp.get("/fhir/Questionnaire/<policy_id>")
def read_questionnaire(policy_id: str) -> Response:
    policy = _service().catalog.policy(policy_id)
    if policy is None:
        raise NotFound(f"no Questionnaire '{policy_id}'")
    return _json(questionnaire(policy), mimetype=_FHIR)


@bp.get("/fhir/Questionnaire")
def search_questionnaires() -> Response:
    url = request.args.get("url")
    version = request.args.get("version")
    if url and "|" in url:
        url, version = url.split("|", 1)
    found = [questionnaire(p) for p in _service().catalog.policies]
    matches = [q for q in found if (url is None or q["url"] == url) and (version is None or q["version"] == version)]
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
              "entry": [{"fullUrl": f"{_base_url()}fhir/Questionnaire/{q['id']}", "resource": q,
                         "search": {"mode": "match"}} for q in matches]}
    return _json(bundle, mimetype=_FHIR)


@bp.get("/fhir/CodeSystem/<codesystem_id>")
def read_codesystem(codesystem_id: str) -> Response:
    codesystem = _service().catalog.findings_codesystem
    if codesystem.get("id") != codesystem_id:
        raise NotFound(f"no CodeSystem '{codesystem_id}'")
    return _json(codesystem, mimetype=_FHIR)


# --- human-readable policies (the link target when a payer publishes no URL) -------------


@bp.get("/policies")
def policy_index() -> Response:
    return Response(render_policy_index(_service().catalog.policies), mimetype="text/html")


@bp.get("/policies/<policy_id>")
def policy_page(policy_id: str) -> Response:
    policy = _service().catalog.policy(policy_id)
    if policy is None:
        raise NotFound(f"no policy '{policy_id}'")
    return Response(render_policy_page(policy), mimetype="text/html")
