"""Reading hook request bodies: parse the JSON, keep of the prefetch what can be evidence.

A prefetch answered without the templates' code filters (the CDS Hooks Sandbox, an EHR that
prefetches the whole chart) carries years of vital signs and labs that no guideline reads.
Indexing, validating and rendering around them costs more than everything the policies do with
the rest, so they are dropped on arrival. Nothing is dropped that the template's FHIR search
would return, so the prefetch and the FHIR-server path see the same evidence (a result coded
only in a component is kept, though ``code=`` does not search components).

Dropped entries never become Python objects. msgspec reads each prefetched searchset twice
without building it: once for what decides (each entry's type, id and codes, the codes left as
raw JSON), once for each entry's raw JSON. Only the entries kept are then parsed. A chart's few
hundred vital signs repeat a handful of codes, so the verdict on a code is kept per raw code.
Building and freeing the objects of every vital sign cost more than all the guideline
evaluation of a request. Whatever cannot be read that way (a searchset with a malformed entry,
a member a Bundle does not have) is kept whole: keeping more than the search would return never
changes an answer, dropping what it would return could.
"""

from __future__ import annotations

from typing import Any
from typing import Mapping

import msgspec
import orjson

from .errors import BadRequest
from .fhirjson import as_dict
from .fhirjson import dicts
from .fhirjson import string
from .record import CODE_PATHS
from .record import canonical_key
from .record import reference_key

UNSET = msgspec.UNSET


class _Coded(msgspec.Struct):
    code: msgspec.Raw = None


class _ResourceHead(msgspec.Struct):
    """What decides whether a resource is kept: its type and id, and its codes (CODE_PATHS) unread."""

    resourceType: str | None = None
    id: str | None = None
    code: msgspec.Raw = None
    component: list[_Coded] = []
    type: msgspec.Raw = None


class _EntryHead(msgspec.Struct):
    resource: _ResourceHead | None = None


class _SearchsetHeads(msgspec.Struct):
    resourceType: Any = None
    entry: list[_EntryHead] | msgspec.UnsetType = UNSET


class _Searchset(msgspec.Struct, forbid_unknown_fields=True):
    """A FHIR R4 Bundle with each entry as raw JSON (the members of an R4 Bundle, no others)."""

    resourceType: Any = UNSET
    id: Any = UNSET
    meta: Any = UNSET
    implicitRules: Any = UNSET
    language: Any = UNSET
    identifier: Any = UNSET
    type: Any = UNSET
    timestamp: Any = UNSET
    total: Any = UNSET
    link: Any = UNSET
    entry: list[msgspec.Raw] = []
    signature: Any = UNSET


class _HookBody(msgspec.Struct):
    """A CDS Hooks request, prefetch values unread (other members are ignored, as HookRequest does)."""

    hook: Any = UNSET
    hookInstance: Any = UNSET
    fhirServer: Any = UNSET
    fhirAuthorization: Any = UNSET
    context: Any = UNSET
    prefetch: dict[str, msgspec.Raw] | None | msgspec.UnsetType = UNSET
    extension: Any = UNSET


_READ_BODY = msgspec.json.Decoder(_HookBody).decode
_READ_HEADS = msgspec.json.Decoder(_SearchsetHeads).decode
_READ_SEARCHSET = msgspec.json.Decoder(_Searchset).decode
#: The CODE_PATHS a _ResourceHead holds.
_HEAD_PATHS = {("code", None), ("component", "code"), ("type", None)}
_MAX_VERDICTS = 4096
#: What reading a body lazily raises on input orjson reads, or rejects with a message (then a 400).
_UNREADABLE = (msgspec.MsgspecError, orjson.JSONDecodeError, RecursionError, UnicodeDecodeError)


class EvidenceFilter:
    """Which prefetched resources can be evidence.

    *codes*: per code-filtered resource type, the (canonical system, code) pairs some policy
    searches it for (``prefetch.searched_codes``). A resource of such a type is kept when one of
    the codes PatientRecord indexes it by is among them, or when a draft order refers to it (a
    reason reference); resources of every other type are kept.
    """

    def __init__(self, codes: Mapping[str, frozenset[tuple[str, str]]]):
        self.codes = dict(codes)
        self._paths = {rtype: tuple((path[0], path[1] if len(path) > 1 else None) for path in CODE_PATHS[rtype])
                       for rtype in self.codes}
        unread = {rtype: paths for rtype, paths in self._paths.items() if not set(paths) <= _HEAD_PATHS}
        if unread:
            raise ValueError(f"intake cannot read the codes of {unread}: add them to _ResourceHead")
        #: per type, raw CodeableConcept -> whether it has a searched coding (a chart repeats a few codes)
        self._verdicts: dict[str, dict[bytes, bool]] = {rtype: {} for rtype in self.codes}

    def keeps(self, head: _ResourceHead | None, referenced: Mapping[str, frozenset]) -> bool:
        """Whether the resource *head* describes stays (*referenced*: type -> ids the draft orders refer to)."""
        if head is None:
            return True  # an entry without a resource: left for lenient reading downstream to ignore
        rtype = head.resourceType
        paths = self._paths.get(rtype)
        if paths is None:
            return True
        for element, inner in paths:  # the shapes PatientRecord indexes (record._concept_pairs)
            value = getattr(head, element)
            if inner is None:
                if value is not None and self._wanted(rtype, value):
                    return True
                continue
            for item in value:
                concept = getattr(item, inner)
                if concept is not None and self._wanted(rtype, concept):
                    return True
        return head.id in referenced.get(rtype, ())

    def _wanted(self, rtype: str, concept: msgspec.Raw) -> bool:
        """Whether a CodeableConcept (raw JSON) has a coding *rtype* is searched for."""
        verdicts = self._verdicts[rtype]
        key = bytes(concept)
        verdict = verdicts.get(key)
        if verdict is None:
            if len(verdicts) >= _MAX_VERDICTS:
                verdicts.clear()
            value = orjson.loads(key)
            wanted = self.codes[rtype]
            verdict = verdicts[key] = any(
                type(code := coding.get("code")) is str and code
                and canonical_key(string(coding.get("system")), code) in wanted
                for coding in (dicts(value.get("coding")) if type(value) is dict else ()))
        return verdict


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
    if evidence is not None:
        try:
            return _read_filtered(body, evidence)
        except _UNREADABLE:
            pass  # not JSON, too deep, not an object, a prefetch that is not one: read whole, or said what is wrong
    return read_json_object(body)


def _read_filtered(body: bytes, evidence: EvidenceFilter) -> dict[str, Any]:
    data = _members(_READ_BODY(body))
    prefetch = data.get("prefetch")
    if prefetch:
        referenced = _order_references(data)
        data["prefetch"] = {key: _prefetch_value(raw, evidence, referenced) for key, raw in prefetch.items()}
    return data


def _prefetch_value(raw: msgspec.Raw, evidence: EvidenceFilter, referenced: Mapping[str, frozenset]) -> Any:
    """A prefetch value; a searchset's entries only where *evidence* keeps their resource."""
    try:
        heads = _READ_HEADS(raw)
        if heads.resourceType == "Bundle" and heads.entry is not UNSET:
            searchset = _READ_SEARCHSET(raw)
            value = _members(searchset)
            value["entry"] = [orjson.loads(memoryview(entry)) for entry, head in zip(searchset.entry, heads.entry)
                              if evidence.keeps(head.resource, referenced)]
            return value
    except msgspec.ValidationError:
        pass  # a single resource, or a searchset not read entry by entry: kept whole
    return orjson.loads(memoryview(raw))


def _order_references(data: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Per resource type, the ids of the resources the draft orders give as their reasons."""
    entries = dicts(as_dict(as_dict(data.get("context")).get("draftOrders")).get("entry"))
    orders = [as_dict(entry.get("resource")) for entry in entries]
    keys = [key for order in orders for ref in dicts(order.get("reasonReference"))
            if (key := reference_key(ref.get("reference")))]
    by_type: dict[str, set[str]] = {}
    for key in keys:
        rtype, rid = key.split("/")
        by_type.setdefault(rtype, set()).add(rid)
    return {rtype: frozenset(ids) for rtype, ids in by_type.items()}


def _members(struct: msgspec.Struct) -> dict[str, Any]:
    """The members a decoded Struct found in the JSON, as a dict."""
    return {name: value for name in struct.__struct_fields__ if (value := getattr(struct, name)) is not UNSET}
