"""The patient record one hook call is evaluated against, indexed once per request.

Built from plain JSON dicts (prefetch values, FHIR search results, draft
orders). Indexing by resource type and code is cheap; full R4B validation is
done lazily, only for resources a predicate matched (``typed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field
from datetime import date
from typing import Any
from typing import Iterable
from typing import Iterator

from .codes import ICD10CM
from .codes import SNOMED
from .codes import SYSTEM_LABELS
from .codes import CodeSet
from .codes import canonical_system
from .codes import codings
from .codes import normalize_code
from .policy.timing import parse_fhir_date
from .r4b import validate_resource

BILLING_OPTIONS = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options"

# CodeableConcept paths (dotted, list-aware) whose codings index each resource type.
_CODE_PATHS: dict[str, tuple[str, ...]] = {
    "Condition": ("code",),
    "Observation": ("code", "component.code"),
    "Procedure": ("code",),
    "DiagnosticReport": ("code",),
    "DocumentReference": ("type",),
    "AllergyIntolerance": ("code", "reaction.substance"),
    "DeviceRequest": ("codeCodeableConcept",),
    "Device": ("type",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "Medication": ("code",),
}
# References to a resource whose code stands in for the referring resource's code.
_CODE_REFERENCES: dict[str, tuple[str, str]] = {
    "DeviceUseStatement": ("device", "Device"),
    "DeviceRequest": ("codeReference", "Device"),
    "MedicationRequest": ("medicationReference", "Medication"),
    "MedicationStatement": ("medicationReference", "Medication"),
}


def _values(resource: Any, dotted: str) -> Iterator[Any]:
    current: list[Any] = [resource]
    for part in dotted.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    yield from current


# --- spinal levels ------------------------------------------------------------------

_VERTEBRAE = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + \
             [f"L{i}" for i in range(1, 6)] + [f"S{i}" for i in range(1, 6)]
_POSITION = {name: i for i, name in enumerate(_VERTEBRAE)}
# SNOMED CT intervertebral discs and lumbar vertebrae (DICOM CID 7603/7604, mCODE).
_DISC_CODES = {
    "76206002": ("T12", "L1"), "80064006": ("L1", "L2"), "67459009": ("L2", "L3"),
    "62551000": ("L3", "L4"), "84020006": ("L4", "L5"), "715056000": ("L5", "S1"),
}
_VERTEBRA_CODES = {
    "66794005": "L1", "14293000": "L2", "36470004": "L3", "11994002": "L4", "49668003": "L5",
    "65985001": "S1", "61032001": "L1", "53983007": "L2", "55492004": "L3", "71996003": "L4",
    "21799000": "L5",
}
_LEVEL_TEXT = re.compile(r"\b([CTLS])\s?(\d{1,2})\s*(?:-|–|/|to|through)\s*([CTLS])?\s?(\d{1,2})\b", re.IGNORECASE)
_VERTEBRA_TEXT = re.compile(r"\b([CTLS])\s?(\d{1,2})\b", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class SpinalLevel:
    """A motion segment: the interspace between two adjacent vertebrae (e.g. L4-L5)."""

    position: int
    upper: str = field(compare=False)
    lower: str = field(compare=False)

    @classmethod
    def between(cls, upper: str, lower: str) -> "SpinalLevel":
        return cls(_POSITION[upper], upper, lower)

    @property
    def label(self) -> str:
        return f"{self.upper}-{self.lower}"

    def touches(self, vertebra: str) -> bool:
        return vertebra in (self.upper, self.lower)


def _vertebra(letter: str, number: str) -> str | None:
    name = f"{letter.upper()}{int(number)}"
    return name if name in _POSITION else None


def levels_in_text(text: str) -> tuple[set[SpinalLevel], set[str]]:
    """Interspaces ("L4-L5", "L4/5", "L2-L4" = two levels) and lone vertebrae named in text."""
    levels: set[SpinalLevel] = set()
    for letter, first, letter2, second in _LEVEL_TEXT.findall(text):
        top, bottom = _vertebra(letter, first), _vertebra(letter2 or letter, second)
        if top is None or bottom is None or _POSITION[bottom] <= _POSITION[top]:
            continue
        for i in range(_POSITION[top], _POSITION[bottom]):
            levels.add(SpinalLevel.between(_VERTEBRAE[i], _VERTEBRAE[i + 1]))
    remainder = _LEVEL_TEXT.sub(" ", text)
    vertebrae = {v for v in (_vertebra(a, b) for a, b in _VERTEBRA_TEXT.findall(remainder)) if v}
    return levels, vertebrae


def body_site_levels(concepts: Iterable[dict]) -> tuple[set[SpinalLevel], set[str]]:
    """Spinal levels and vertebrae named by bodySite CodeableConcepts (codes or text)."""
    levels: set[SpinalLevel] = set()
    vertebrae: set[str] = set()
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        for coding in codings(concept):
            if canonical_system(coding.get("system")) != SNOMED:
                continue
            code = str(coding["code"])
            if code in _DISC_CODES:
                levels.add(SpinalLevel.between(*_DISC_CODES[code]))
            elif code in _VERTEBRA_CODES:
                vertebrae.add(_VERTEBRA_CODES[code])
        for text in [concept.get("text")] + [c.get("display") for c in concept.get("coding") or () if c]:
            if isinstance(text, str):
                found_levels, found_vertebrae = levels_in_text(text)
                levels |= found_levels
                vertebrae |= found_vertebrae
    return levels, vertebrae


def order_levels(concepts: Iterable[dict], extra_text: Iterable[str] = ()) -> tuple[SpinalLevel, ...]:
    """The interspaces an order names; consecutive vertebrae (L4 + L5) make an interspace."""
    levels, vertebrae = body_site_levels(concepts)
    for text in extra_text:
        found, _ = levels_in_text(text)
        levels |= found
    ordered = sorted(vertebrae, key=_POSITION.__getitem__)
    for top, bottom in zip(ordered, ordered[1:]):
        if _POSITION[bottom] == _POSITION[top] + 1:
            levels.add(SpinalLevel.between(top, bottom))
    return tuple(sorted(levels))


# --- orders -------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """A draft order from the hook context, read leniently (real clients send sparse orders)."""

    resource: dict
    resource_type: str
    id: str | None
    codings: tuple[tuple[str, str, str | None], ...]  # (system, code, display), billing options included
    reason_codings: tuple[tuple[str, str], ...]
    reason_references: tuple[str, ...]
    levels: tuple[SpinalLevel, ...]
    authored_on: date | None

    @classmethod
    def from_resource(cls, resource: dict) -> "Order":
        code = resource.get("code") if isinstance(resource.get("code"), dict) else {}
        found: list[tuple[str, str, str | None]] = []
        concepts = [code] + [
            ext.get("valueCodeableConcept") for ext in code.get("extension") or ()
            if isinstance(ext, dict) and ext.get("url") == BILLING_OPTIONS
        ]
        for concept in concepts:
            for coding in codings(concept):
                system = canonical_system(coding.get("system")) or ""
                found.append((system, str(coding["code"]).strip(), coding.get("display")))
        reasons = tuple(
            (canonical_system(c.get("system")) or "", str(c["code"]))
            for concept in resource.get("reasonCode") or () for c in codings(concept)
        )
        reason_refs = tuple(
            ref["reference"] for ref in resource.get("reasonReference") or ()
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str)
        )
        texts = [t for t in (code.get("text"),) if isinstance(t, str)]
        return cls(
            resource=resource,
            resource_type=str(resource.get("resourceType")),
            id=resource.get("id") if isinstance(resource.get("id"), str) else None,
            codings=tuple(found),
            reason_codings=reasons,
            reason_references=reason_refs,
            levels=order_levels([b for b in resource.get("bodySite") or () if isinstance(b, dict)], texts),
            authored_on=parse_fhir_date(resource.get("authoredOn")),
        )

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}" if self.id else self.resource_type

    @property
    def display(self) -> str:
        """What a clinician calls this order: code text, else the first coding's display or code."""
        code = self.resource.get("code") if isinstance(self.resource.get("code"), dict) else {}
        if isinstance(code.get("text"), str) and code["text"].strip():
            return code["text"].strip()
        for _system, value, display in self.codings:
            return f"{display} ({value})" if display else value
        return self.resource_type

    @property
    def code_label(self) -> str:
        """Short code list for summaries, e.g. 'CPT 37238'."""
        for system, value, _display in self.codings:
            return f"{SYSTEM_LABELS.get(system, 'code')} {value}"
        return self.resource_type


# --- the record ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answer in a QuestionnaireResponse to one of our policy Questionnaires."""

    value: Any
    reference: str
    authored: date | None


class PatientRecord:
    """All evidence for one patient in one hook call, indexed by type and code."""

    def __init__(
        self,
        resources: Iterable[dict],
        orders: Iterable[Order] = (),
        unavailable: Iterable[str] = (),
    ):
        self.orders = tuple(orders)
        #: Resource types that could not be retrieved (FHIR server failed): absence there proves nothing.
        self.unavailable = frozenset(unavailable)
        self._by_type: dict[str, list[dict]] = {}
        self._by_ref: dict[str, dict] = {}
        seen: set[tuple[str, str]] = set()
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                continue
            rtype, rid = resource["resourceType"], resource.get("id")
            if isinstance(rid, str):
                if (rtype, rid) in seen:
                    continue
                seen.add((rtype, rid))
                self._by_ref[f"{rtype}/{rid}"] = resource
            self._by_type.setdefault(rtype, []).append(resource)
        self._code_index: dict[str, dict[tuple[str, str], list[dict]]] = {}
        for rtype in set(_CODE_PATHS) | set(_CODE_REFERENCES):
            self._code_index[rtype] = self._index_codes(rtype)
        self._typed: dict[int, Any] = {}
        self._bundle: dict | None = None

    def _index_codes(self, rtype: str) -> dict[tuple[str, str], list[dict]]:
        index: dict[tuple[str, str], list[dict]] = {}
        for resource in self._by_type.get(rtype, ()):
            for concept in self.concepts_of(resource):
                for coding in codings(concept):
                    system = canonical_system(coding.get("system")) or ""
                    key = (system, normalize_code(system, str(coding["code"])) or "")
                    bucket = index.setdefault(key, [])
                    if not bucket or bucket[-1] is not resource:
                        bucket.append(resource)
        return index

    def concepts_of(self, resource: dict) -> list[dict]:
        """The coded concepts that identify *resource* (its own code, or a referenced Device/Medication's)."""
        rtype = resource["resourceType"]
        concepts = [c for path in _CODE_PATHS.get(rtype, ()) for c in _values(resource, path) if isinstance(c, dict)]
        if rtype in _CODE_REFERENCES:
            element, target_type = _CODE_REFERENCES[rtype]
            target = self.resolve(resource.get(element), resource)
            if target is not None and target.get("resourceType") == target_type:
                concepts += [c for path in _CODE_PATHS[target_type] for c in _values(target, path) if isinstance(c, dict)]
        return concepts

    # -- lookups -------------------------------------------------------------------

    def resources(self, resource_type: str) -> list[dict]:
        return self._by_type.get(resource_type, [])

    def find(self, resource_type: str, codes: CodeSet) -> list[dict]:
        """Resources of *resource_type* carrying any code in *codes* (ICD prefixes and ranges too)."""
        index = self._code_index.get(resource_type, {})
        hits: dict[int, dict] = {}
        for key in codes.exact:
            for resource in index.get(key, ()):
                hits.setdefault(id(resource), resource)
        if codes.icd_ranges:
            for (system, code), bucket in index.items():
                if system == ICD10CM and any(r.contains(code) for r in codes.icd_ranges):
                    for resource in bucket:
                        hits.setdefault(id(resource), resource)
        return list(hits.values())

    def resolve(self, reference: Any, within: dict | None = None) -> dict | None:
        """Resolve a Reference (dict or string): contained '#id', 'Type/id' or an absolute URL."""
        ref = reference.get("reference") if isinstance(reference, dict) else reference
        if not isinstance(ref, str) or not ref:
            return None
        if ref.startswith("#") and within is not None:
            return next((c for c in within.get("contained") or () if isinstance(c, dict) and c.get("id") == ref[1:]), None)
        parts = ref.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        return self._by_ref.get("/".join(parts[-2:])) if len(parts) >= 2 else None

    def as_bundle(self) -> dict:
        """All resources as one collection Bundle (the FHIRPath escape hatch's input), built once."""
        if self._bundle is None:
            entries = [{"resource": r} for rtype in sorted(self._by_type) for r in self._by_type[rtype]]
            self._bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        return self._bundle

    def typed(self, resource: dict) -> Any | None:
        """The validated R4B model of *resource* (cached), or None if it is not valid FHIR."""
        key = id(resource)
        if key not in self._typed:
            self._typed[key] = validate_resource(resource)
        return self._typed[key]

    @property
    def patient(self) -> dict | None:
        patients = self.resources("Patient")
        return patients[0] if patients else None

    def birth_date(self) -> date | None:
        patient = self.patient
        typed = self.typed(patient) if patient else None
        return parse_fhir_date(typed.birthDate) if typed is not None else None

    def coverages(self) -> list[dict]:
        """Coverage resources, active ones first (CRD prefetch should hold only the primary one)."""
        found = self.resources("Coverage")
        return sorted(found, key=lambda c: c.get("status") != "active")

    def answers(self, questionnaire_url: str) -> dict[str, Answer]:
        """Latest answer per linkId in completed responses to *questionnaire_url* (any version)."""
        best: dict[str, Answer] = {}
        for response in self.resources("QuestionnaireResponse"):
            canonical = response.get("questionnaire")
            if not isinstance(canonical, str) or canonical.split("|")[0] != questionnaire_url:
                continue
            if response.get("status") not in ("completed", "amended"):
                continue
            authored = parse_fhir_date(response.get("authored"))
            reference = f"QuestionnaireResponse/{response.get('id')}"
            for link_id, value in _answers(response.get("item") or ()):
                current = best.get(link_id)
                if current is None or (authored or date.min) >= (current.authored or date.min):
                    best[link_id] = Answer(value, reference, authored)
        return best


def _answers(items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for item in items:
        if not isinstance(item, dict):
            continue
        for answer in item.get("answer") or ():
            if not isinstance(answer, dict):
                continue
            for key, value in answer.items():
                if key.startswith("value") and isinstance(item.get("linkId"), str):
                    yield item["linkId"], value
            yield from _answers(answer.get("item") or ())
        yield from _answers(item.get("item") or ())
