"""The service's errors, and the one place they become HTTP responses.

::

    ServiceError
    ├── RequestError                 -> an HTTP error with an OperationOutcome (CDS Hooks 3.0 / CRD hook-10)
    │   ├── BadRequest          400   body not JSON / not a valid CDS Hooks request / unhandled payer
    │   ├── Unauthorized        401   client JWT required and missing or invalid (the reason is only logged)
    │   ├── NotFound            404   no such service, assertion, policy or Questionnaire
    │   ├── PayloadTooLarge     413   body over the configured limit
    │   ├── PrefetchUnavailable 412   required data neither prefetched nor fetchable (CDS Hooks 2.0)
    │   └── ServiceUnavailable  503   the answer could not be recorded (database down)
    └── EvidenceError                -> never an HTTP error: the FHIR server failed, so the
        ├── FhirNotAllowed               answer says which evidence could not be retrieved
        ├── FhirTimeout                  and no order comes out as covered because of it
        ├── FhirHttpError
        └── FhirInvalidResponse

Anything else that escapes a handler is a bug: it is logged with its
traceback and answered with a 500 OperationOutcome that reveals nothing.
"""

from __future__ import annotations

import logging

import orjson
from flask import Flask
from flask import Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Root of the service's own errors."""


class RequestError(ServiceError):
    status = 400
    code = "invalid"  # OperationOutcome.issue.code
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, expression: str | None = None, issues: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        self.issues = issues or [_issue(self.code, message, expression)]


class BadRequest(RequestError):
    status, code = 400, "invalid"


class Unauthorized(RequestError):
    status, code = 401, "login"
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self) -> None:
        super().__init__("a valid client JWT is required")


class NotFound(RequestError):
    status, code = 404, "not-found"


class PayloadTooLarge(RequestError):
    status, code = 413, "too-long"


class PrefetchUnavailable(RequestError):
    status, code = 412, "incomplete"


class ServiceUnavailable(RequestError):
    status, code = 503, "transient"


class EvidenceError(ServiceError):
    """A FHIR query failed; turned into an evidence gap, never into an HTTP error."""


class FhirNotAllowed(EvidenceError):
    """The URL is not on the FHIR allowlist (SSRF guard)."""


class FhirTimeout(EvidenceError):
    pass


class FhirHttpError(EvidenceError):
    def __init__(self, status: int, url: str):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.url = url


class FhirInvalidResponse(EvidenceError):
    pass


def _issue(code: str, diagnostics: str, expression: str | None = None) -> dict:
    issue = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return issue


def operation_outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


def outcome_response(status: int, issues: list[dict], headers: dict | None = None) -> Response:
    response = Response(orjson.dumps(operation_outcome(issues)), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-long", 415: "not-supported"}


def register_error_handlers(app: Flask) -> None:
    """Map every error to an OperationOutcome response, in this one place."""

    @app.errorhandler(RequestError)
    def _request_error(error: RequestError) -> Response:
        log.info("request rejected: %s %s", error.status, error.message)
        return outcome_response(error.status, error.issues, error.headers)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers = {"Allow": ", ".join(error.valid_methods)} if getattr(error, "valid_methods", None) else None
        return outcome_response(status, [_issue(_HTTP_CODES.get(status, "processing"), error.description or error.name)],
                                headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return outcome_response(500, [_issue("exception", "internal error; the service log has the details")])
