"""The one place that imports fhir.resources: R4B models (the package's R4-compatible release).

Predicates read the resources' JSON; full R4B validation is the gate a resource must pass
before it counts as evidence, so a malformed resource never decides an answer. Only
resources a predicate actually reaches are validated (not the hundreds of vital signs in a
prefetch), and the verdict is remembered by a digest of the resource's content: the same
chart arrives again with order-select and order-sign. The memory holds digests and
booleans only, never patient data.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

log = logging.getLogger(__name__)

_VERDICTS: OrderedDict[bytes, bool] = OrderedDict()
_VERDICTS_MAX = 100_000
_LOCK = threading.Lock()


def is_valid(resource: dict[str, Any]) -> bool:
    """True when *resource* is valid FHIR R4 (per fhir.resources R4B); invalid ones are logged by type/id."""
    try:
        # Key order as sent: the same client sends the same resource the same way, and a
        # different order only costs one more validation.
        digest = hashlib.sha256(orjson.dumps(resource)).digest()
    except (TypeError, orjson.JSONEncodeError):
        return False
    with _LOCK:
        verdict = _VERDICTS.get(digest)
        if verdict is not None:
            _VERDICTS.move_to_end(digest)
            return verdict
    verdict = _validate(resource)
    with _LOCK:
        _VERDICTS[digest] = verdict
        if len(_VERDICTS) > _VERDICTS_MAX:
            _VERDICTS.popitem(last=False)
    return verdict


def _validate(resource: dict[str, Any]) -> bool:
    resource_type = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(resource_type))
    except (KeyError, ValueError):
        return False
    try:
        model.model_validate(resource)
    except (ValidationError, ValueError, TypeError) as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        log.warning("ignoring invalid %s/%s (%d validation errors)", resource_type, resource.get("id"), count)
        return False
    return True
