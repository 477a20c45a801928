"""CDS Hooks 2.0 request and response models (plus the CRD extensions we read and write).

Parsing is lenient where real clients are sloppy (unknown fields, a draftOrders
Bundle without ``type``/``fullUrl``, an empty Coding, an empty access token)
and strict where it matters (JSON object, hook, hookInstance, context,
draftOrders a Bundle). Responses never carry null, "", [] or {} (CDS Hooks
"Use of JSON"), except ``"cards": []``.
"""

from __future__ import annotations

from typing import Any
from typing import Literal

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import SecretStr
from pydantic import ValidationError
from pydantic import field_validator

from .errors import BadRequest
from .fhirjson import string
from .intake import EvidenceFilter
from .intake import read_hook_body
from .intake import read_json_object


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FhirAuthorization(_Lenient):
    """The EHR's access token. SecretStr keeps it out of reprs, logs and tracebacks."""

    access_token: SecretStr
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None


class BundleEntry(_Lenient):
    resource: dict[str, Any] | None = None

    @field_validator("resource")
    @classmethod
    def _typed(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("resourceType"), str):
            raise ValueError("a draft order needs a resourceType string")
        return value


class DraftOrders(_Lenient):
    resourceType: Literal["Bundle"]
    entry: list[BundleEntry] = []

    @field_validator("entry", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class OrderContext(_Lenient):
    """order-sign / order-select context (unknown context fields are ignored, CRD hook-23)."""

    patientId: str = Field(min_length=1)
    userId: str | None = None
    encounterId: str | None = None
    draftOrders: DraftOrders
    selections: list[str] | None = None


class HookRequest(_Lenient):
    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: OrderContext
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @property
    def access_token(self) -> str | None:
        """The bearer token, or None when absent or empty (the CRD Request Generator sends "")."""
        if self.fhirAuthorization is None:
            return None
        token = self.fhirAuthorization.access_token.get_secret_value().strip()
        return token or None

    def crd_extension(self, key: str) -> Any:
        return (self.extension or {}).get(key)


def _validate(model: type[BaseModel], data: dict[str, Any], what: str) -> Any:
    """Validate JSON against *model*; raise BadRequest with one OperationOutcome issue per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [
            {
                "severity": "error",
                "code": "required" if error["type"] == "missing" else "structure",
                "diagnostics": f"{_location(error['loc'])}: {error['msg']}",
                "expression": [_location(error["loc"])],
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise BadRequest(f"invalid {what}", issues=issues) from None


def parse_hook_request(body: bytes, evidence: EvidenceFilter | None = None) -> HookRequest:
    """The hook request; with *evidence*, prefetched searchsets hold only what it keeps."""
    return _validate(HookRequest, read_hook_body(body, evidence), "CDS Hooks request")


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


class Feedback(_Lenient):
    """One feedback entry. ``overrideReason`` arrives flat (a Coding) or nested under ``reason``."""

    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: str = Field(min_length=1)
    acceptedSuggestions: list[dict[str, Any]] = []
    overrideReason: dict[str, Any] | None = None

    def override_coding(self) -> dict[str, str] | None:
        """The override reason's system, code and display (strings only; None without a code)."""
        reason = self.overrideReason or {}
        coding = reason.get("reason") if isinstance(reason.get("reason"), dict) else reason
        read = {key: value for key in ("system", "code", "display") if (value := string(coding.get(key)))}
        return read if read.get("code") else None

    def override_comment(self) -> str | None:
        comment = (self.overrideReason or {}).get("userComment")
        return comment if isinstance(comment, str) and comment.strip() else None


class FeedbackRequest(_Lenient):
    feedback: list[Feedback] = Field(min_length=1)


def parse_feedback(body: bytes) -> FeedbackRequest:
    return _validate(FeedbackRequest, read_json_object(body), "feedback")


_EMPTY = (None, "", [], {})


def prune(value: Any) -> Any:
    """Drop None, "", [] and {} recursively: CDS Hooks forbids them in responses."""
    if type(value) is dict:
        pruned = {}
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                item = prune(item)
            if item not in _EMPTY:
                pruned[key] = item
        return pruned
    if type(value) is list:
        return [item for item in map(prune, value) if item not in _EMPTY]
    return value
