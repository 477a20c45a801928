"""The one place that imports fhir.resources: R4B models (the package's R4-compatible release).

Only resources a predicate actually looks at are validated (see
``record.PatientRecord.typed``); validating every vital sign in a 500-resource
prefetch would cost time for nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

log = logging.getLogger(__name__)


def validate_resource(resource: dict[str, Any]) -> Any | None:
    """Return the R4B model for *resource*, or None (logged by type/id only) if it is invalid."""
    resource_type = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(resource_type))
    except (KeyError, ValueError):
        return None
    try:
        return model.model_validate(resource)
    except (ValidationError, ValueError, TypeError) as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        log.warning("ignoring invalid %s/%s (%d validation errors)", resource_type, resource.get("id"), count)
        return None
