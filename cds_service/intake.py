"""Reading hook request bodies: parse the JSON, keep of the prefetch what can be evidence.

A prefetch answered without the templates' code filters (the CDS Hooks Sandbox, an EHR that
prefetches the whole chart) carries years of vital signs and labs that no guideline reads.
Indexing, validating and rendering around them costs more than everything the policies do with
the rest, so they are dropped on arrival. Nothing is dropped that the template's FHIR search
would return, so the prefetch and the FHIR-server path see the same evidence (a result coded
only in a component is kept, though ``code=`` does not search components).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import Mapping

import orjson

from .errors import BadRequest
from .fhirjson import as_dict
from .fhirjson import dicts
from .fhirjson import string
from .record import CODE_PATHS
from .record import canonical_key
from .record import reference_key


@dataclass(frozen=True)
class EvidenceFilter:
    """Which prefetched resources can be evidence.

    *codes*: per code-filtered resource type, the (canonical system, code) pairs some policy
    searches it for (``prefetch.searched_codes``). A resource of such a type is kept when one of
    the codes PatientRecord indexes it by is among them, or when a draft order refers to it (a
    reason reference); resources of every other type are kept.
    """

    codes: Mapping[str, frozenset[tuple[str, str]]]

    def keeps(self, resource: Any, referenced: frozenset[str]) -> bool:
        """Whether *resource* stays (*referenced*: 'Type/id' the draft orders refer to)."""
        if type(resource) is not dict:
            return True  # not a resource: left for lenient reading downstream to ignore
        rtype = resource.get("resourceType")
        wanted = self.codes.get(rtype) if type(rtype) is str else None
        if wanted is None or (referenced and f"{rtype}/{resource.get('id')}" in referenced):
            return True
        # The shapes PatientRecord indexes (record._concept_pairs): this runs on every vital sign.
        for path in CODE_PATHS[rtype]:
            if len(path) == 1:
                concepts = [resource.get(path[0])]
            else:
                items = resource.get(path[0])
                concepts = [item.get(path[1]) for item in items if type(item) is dict] if type(items) is list else []
            for concept in concepts:
                codings = concept.get("coding") if type(concept) is dict else None
                for coding in codings if type(codings) is list else ():
                    code = coding.get("code") if type(coding) is dict else None
                    if type(code) is str and code and canonical_key(string(coding.get("system")), code) in wanted:
                        return True
        return False


def read_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; BadRequest when it is not valid JSON or not an object."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def read_hook_body(body: bytes, evidence: EvidenceFilter | None) -> dict[str, Any]:
    """The hook request, its prefetched searchsets holding only what *evidence* keeps."""
    data = read_json_object(body)
    prefetch = data.get("prefetch")
    if evidence is not None and type(prefetch) is dict:
        referenced = _order_references(data)
        data["prefetch"] = {key: _filtered(value, evidence, referenced) for key, value in prefetch.items()}
    return data


def _filtered(value: Any, evidence: EvidenceFilter, referenced: frozenset[str]) -> Any:
    """A prefetch value; a searchset's entries only where *evidence* keeps their resource."""
    if type(value) is not dict or value.get("resourceType") != "Bundle" or type(value.get("entry")) is not list:
        return value
    kept = [entry for entry in value["entry"]
            if type(entry) is not dict or evidence.keeps(entry.get("resource"), referenced)]
    return value if len(kept) == len(value["entry"]) else value | {"entry": kept}


def _order_references(data: dict[str, Any]) -> frozenset[str]:
    """'Type/id' of the resources the draft orders give as their reasons."""
    entries = dicts(as_dict(as_dict(data.get("context")).get("draftOrders")).get("entry"))
    orders = [as_dict(entry.get("resource")) for entry in entries]
    return frozenset(key for order in orders for ref in dicts(order.get("reasonReference"))
                     if (key := reference_key(ref.get("reference"))))
