"""The patient record one hook call is evaluated against, indexed once per request.

Built from plain JSON dicts (prefetch values, FHIR search results, draft
orders). Indexing by resource type and code is cheap; full R4B validation is
done lazily, only for resources a predicate is about to count as evidence (``valid``).
"""

from __future__ import annotations

import functools
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
from .codes import coding_key
from .codes import codings
from .codes import loose_code
from .fhirjson import dicts
from .policy.timing import parse_fhir_date
from .r4b import is_valid

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


def _own_concepts(resource: dict, paths: tuple[tuple[str, ...], ...]) -> list[dict]:
    """The CodeableConcepts at *paths* of one resource (("component", "code") is every component's code)."""
    return [concept for _resource, concept in _concept_pairs((resource,), paths)]


def _concept_pairs(resources: list[dict] | tuple[dict, ...], paths: tuple[tuple[str, ...], ...]) -> list[tuple[dict, dict]]:
    """(resource, CodeableConcept) for every concept at *paths* of *resources*.

    A path is one element holding a CodeableConcept (``code``) or a repeating element and the
    concept in each repetition (``component.code``), the shapes FHIR defines for every indexed
    path; other shapes are invalid FHIR and never count as evidence anyway. This runs over every
    resource of an indexed type (hundreds of vital signs), so each path is one comprehension
    over all resources rather than a function call per resource.
    """
    pairs: list[tuple[dict, dict]] = []
    for path in paths:
        if len(path) == 1:
            pairs += [(r, c) for r in resources if type(c := r.get(path[0])) is dict]
        else:
            outer, inner = path
            pairs += [(r, c) for r in resources if type(items := r.get(outer)) is list
                      for item in items if type(item) is dict and type(c := item.get(inner)) is dict]
    return pairs


#: The same, split: ("component", "code") is every component's code.
CODE_PATHS = {rtype: tuple(tuple(p.split(".")) for p in paths) for rtype, paths in _CODE_PATHS.items()}


@functools.lru_cache(maxsize=16384)
def canonical_key(system: str | None, code: str) -> tuple[str, str]:
    """(canonical system, normalised code) as CodeSet.exact holds them; cached (a chart repeats its codes)."""
    canonical, normalized = coding_key(system, code)
    return canonical or "", normalized or ""


def _coding_key(coding: dict) -> tuple[str, str]:
    """(canonical system, normalised code) of an indexed coding, as CodeSet.exact holds them."""
    system = coding.get("system")
    return canonical_key(system if isinstance(system, str) else None, coding["code"])


# NegEx-style cues: before a term in its clause, they say the patient does not have it (or a relative
# does); after it, that it was ruled out. ICD-10-CM displays use them too ("without ... radiculopathy").
_NEGATION_BEFORE = re.compile(r"\b(?:no|not|without|denies|denied|negative for|rule out|ruled out|r/o|free of"
                              r"|absence of|family history|fh of)\b")
_NEGATION_AFTER = re.compile(r"\b(?:ruled out|excluded|unlikely|not confirmed|not present|absent)\b")
_CLAUSE_ENDS = ".;,:|\n"


def concept_words(concepts: Iterable[dict], *texts: str | None) -> str:
    """The *texts* and the concepts' texts and displays, lower-cased, each its own clause for ``affirms``."""
    words = [*texts] + [t for c in concepts for t in [c.get("text")] + [x.get("display") for x in dicts(c.get("coding"))]]
    return " | ".join(str(t) for t in words if t).lower()


def affirms(text: str, term: str) -> bool:
    """Whether lower-case *text* names *term* at least once without negating it in the same clause.

    Text criteria match words in concept texts and displays, where "Spondylosis without myelopathy
    or radiculopathy", "May-Thurner ruled out" or "Family history of multiple sclerosis" name a
    condition the patient does not have. A term may leave a gap ("severe … stenosis": up to four
    words between, within the clause, none a negation, "with" or another degree word) for the words
    reports put inside a phrase ("severe central and lateral recess stenosis").
    """
    return _may_name(text, term) and next(_affirmed(text, term), None) is not None


def affirmed_spans(text: str, term: str) -> list[tuple[int, int]]:
    """Where lower-case *text* names *term* without negating it (``affirms``), as (start, end)."""
    return list(_affirmed(text, term)) if _may_name(text, term) else []


def _may_name(text: str, term: str) -> bool:
    """Whether every written-out part of *term* is in *text* (most terms are in no text: nothing more to do)."""
    gapped = _gapped(term)
    return term in text if gapped is None else all(part in text for part in gapped[1])


def _affirmed(text: str, term: str) -> Iterator[tuple[int, int]]:
    for start, end in _occurrences(text, term):
        clause_start = max(text.rfind(mark, 0, start) for mark in _CLAUSE_ENDS) + 1
        clause_end = min((i for mark in _CLAUSE_ENDS if (i := text.find(mark, end)) != -1), default=len(text))
        if not _NEGATION_BEFORE.search(text, clause_start, start) and not _NEGATION_AFTER.search(text, end, clause_end):
            yield start, end


_GAP_MARK = re.compile(r"\s*(?:…|\.\.\.)\s*")
#: What a gap in a term spans: up to four words, no clause end, no negation ("mild disc bulge without
#: stenosis"), no "with" ("mild facet arthropathy with stenosis") and no other degree word ("mild disc bulge and
#: moderate stenosis" is not a mild stenosis).
_GAP = (r"(?:\s+(?!(?:no|not|without|free|absent|negative|with|mild\w*|minimal\w*|moderate\w*|severe\w*|marked\w*"
        r"|critical\w*)\b)[^\s.;,:|]+){0,4}\s+")


def _gapped(term: str) -> tuple[re.Pattern, tuple[str, ...]] | None:
    """The pattern and written-out parts of a term with a gap; None for a plain term."""
    return _gap_pattern(term) if "…" in term or "..." in term else None


@functools.lru_cache(maxsize=1024)
def _gap_pattern(term: str) -> tuple[re.Pattern, tuple[str, ...]]:
    parts = tuple(_GAP_MARK.split(term))
    return re.compile(_GAP.join(map(re.escape, parts))), parts


def _occurrences(text: str, term: str) -> Iterator[tuple[int, int]]:
    """Where *term* occurs in *text*, as (start, end)."""
    gapped = _gapped(term)
    if gapped is not None:
        yield from (match.span() for match in gapped[0].finditer(text))
        return
    start = text.find(term)
    while start != -1:
        yield start, start + len(term)
        start = text.find(term, start + 1)


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
#: "L4-L5", "L4/5", "L2 to L4", and a slip "of L4 on L5" (the segment it names; "on" only before a vertebra
#: named in full, so "L3 on 4 views" names no segment).
_LEVEL_TEXT = re.compile(r"\b([CTLS])\s?(\d{1,2})\s*(?:-|–|/|to|through|on(?=\s*[CTLS]\s?\d))\s*([CTLS])?\s?(\d{1,2})\b",
                         re.IGNORECASE)
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


def _named_levels(match: re.Match) -> set[SpinalLevel]:
    """The interspaces a _LEVEL_TEXT match names ("L2-L4" is two)."""
    letter, first, letter2, second = match.groups()
    top, bottom = _vertebra(letter, first), _vertebra(letter2 or letter, second)
    if top is None or bottom is None or _POSITION[bottom] <= _POSITION[top]:
        return set()
    return {SpinalLevel.between(_VERTEBRAE[i], _VERTEBRAE[i + 1]) for i in range(_POSITION[top], _POSITION[bottom])}


def levels_in_text(text: str) -> tuple[set[SpinalLevel], set[str]]:
    """Interspaces ("L4-L5", "L4/5", "L2-L4" = two levels) and lone vertebrae named in text."""
    levels: set[SpinalLevel] = set()
    for match in _LEVEL_TEXT.finditer(text):
        levels |= _named_levels(match)
    remainder = _LEVEL_TEXT.sub(" ", text)
    vertebrae = {v for v in (_vertebra(a, b) for a, b in _VERTEBRA_TEXT.findall(remainder)) if v}
    return levels, vertebrae


_SENTENCE_BREAK = re.compile(r"(?<=[.;])\s+")
#: What may stand before a level that heads its sentence: "L4-5: …", "At the L4-L5 level, …", "2) L3-4 …".
_HEADING = re.compile(r"\W*(?:\d{1,2}[.)]\W*)?(?:at\s+)?(?:the\s+)?(?:level\s+)?", re.IGNORECASE)
#: What may join levels that share their words: "at L3-4 and L4-5", "L3-4, L4-5 and L5-S1".
_JOINED = re.compile(r"\s*(?:,\s*)?(?:and|or|&|as well as)?\s*(?:at\s+)?(?:the\s+)?", re.IGNORECASE)
_LAST_BREAK = re.compile(r".*[,;]", re.DOTALL)
_FIRST_CONJUNCTION = re.compile(r"\s(?:and|but|whereas|while)\s", re.IGNORECASE)


def _clause_break(sentence: str, start: int, end: int) -> int:
    """Where the words between two levels named after their words change level: at the last comma
    ("… at L3-4 with cord compression, and mild stenosis at L4-5"), else at the first conjunction."""
    comma = _LAST_BREAK.match(sentence, start, end)
    if comma:
        return comma.end()
    conjunction = _FIRST_CONJUNCTION.search(sentence, start, end)
    return conjunction.start() if conjunction else start


def level_passages(text: str) -> list[tuple[frozenset[SpinalLevel], str]]:
    """The passages of a narrative (an imaging report's impression), each with the interspaces it speaks of.

    A report grades each level in its own words ("Severe stenosis at L4-5 and mild stenosis at
    L3-4"; "L4-L5: disc bulge. Severe central stenosis."): a level that heads its sentence owns the
    words after it, and the sentences after that until another level is named; a level named after
    its words owns them back to the previous level's clause, and the rest of its own clause ("at
    L3-4 with compression of the cauda equina, and …"). Lone vertebrae ("the L5 nerve root") are words.
    """
    passages: list[tuple[frozenset[SpinalLevel], str]] = []
    heading: frozenset[SpinalLevel] | None = None
    for line in text.splitlines():
        # A numbered finding on a new line is a new subject, unless the line above only named a level.
        heading = heading if passages and _HEADING.fullmatch(_LEVEL_TEXT.sub("", passages[-1][1]).strip(" :.")) \
            else None
        for sentence in _SENTENCE_BREAK.split(line):
            groups: list[list] = []  # [start, end, levels] of levels named together
            for match in _LEVEL_TEXT.finditer(sentence):
                levels = _named_levels(match)
                if not levels:
                    continue
                if groups and _JOINED.fullmatch(sentence, groups[-1][1], match.start()):
                    groups[-1][1:] = [match.end(), groups[-1][2] | levels]
                else:
                    groups.append([match.start(), match.end(), levels])
            if not groups:
                if heading:
                    passages.append((heading, sentence))
                continue
            if _HEADING.fullmatch(sentence, 0, groups[0][0]):
                bounds = [(start, following[0]) for (start, _, _), following in zip(groups, groups[1:])]
                bounds.append((groups[-1][0], len(sentence)))
                heading = frozenset(groups[-1][2])
            else:
                cuts = [0] + [_clause_break(sentence, done[1], following[0])
                              for done, following in zip(groups, groups[1:])] + [len(sentence)]
                bounds = list(zip(cuts, cuts[1:]))
                heading = None
            passages.extend((frozenset(levels), sentence[start:end])
                            for (start, end), (_, _, levels) in zip(bounds, groups))
    return passages


def body_site_levels(concepts: Iterable[dict]) -> tuple[set[SpinalLevel], set[str]]:
    """Spinal levels and lone vertebrae named by bodySite CodeableConcepts (codes or text).

    Consecutive vertebrae named together (L4 + L5, the usual SNOMED coding of a segment) are their
    interspace, not each a vertebra touching the levels above and below.
    """
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
        for text in [concept.get("text")] + [c.get("display") for c in dicts(concept.get("coding"))]:
            if isinstance(text, str):
                found_levels, found_vertebrae = levels_in_text(text)
                levels |= found_levels
                vertebrae |= found_vertebrae
    ordered = sorted(vertebrae, key=_POSITION.__getitem__)
    paired = set()
    for top, bottom in zip(ordered, ordered[1:]):
        if _POSITION[bottom] == _POSITION[top] + 1:
            levels.add(SpinalLevel.between(top, bottom))
            paired |= {top, bottom}
    return levels, vertebrae - paired


def order_levels(concepts: Iterable[dict], extra_text: Iterable[str] = ()) -> tuple[SpinalLevel, ...]:
    """The interspaces an order names (consecutive vertebrae, L4 + L5, make an interspace)."""
    levels, _ = body_site_levels(concepts)
    for text in extra_text:
        found, _ = levels_in_text(text)
        levels |= found
    return tuple(sorted(levels))


# --- orders -------------------------------------------------------------------------

#: The draft order types that get CRD coverage information, and the elements naming what each
#: orders (the first concept found is the order's code). These are the order types in the
#: ext-coverage-information context of CRD 2.0.1 except CommunicationRequest, which names no
#: orderable service; VisionPrescription joined the context only in 2.2.
ORDER_CODE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "ServiceRequest": ("code",),
    "DeviceRequest": ("codeCodeableConcept",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "NutritionOrder": ("enteralFormula.baseFormulaType", "supplement.type", "oralDiet.type"),
}


def _order_concepts(resource: dict) -> list[dict]:
    """The CodeableConcepts naming what *resource* orders (elements may repeat at any step)."""
    found: list[dict] = []
    for path in ORDER_CODE_ELEMENTS.get(resource.get("resourceType"), ()):
        values: list = [resource]
        for name in path.split("."):
            values = [v for parent in values if isinstance(parent, dict)
                      for v in (parent.get(name) if isinstance(parent.get(name), list) else [parent.get(name)])]
        found += [v for v in values if isinstance(v, dict)]
    return found


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
    text: str  # the order code's text, if any

    @classmethod
    def from_resource(cls, resource: dict) -> "Order":
        named = _order_concepts(resource)
        code = named[0] if named else {}
        found: list[tuple[str, str, str | None]] = []
        concepts = named + [
            ext.get("valueCodeableConcept") for ext in dicts(code.get("extension"))
            if ext.get("url") == BILLING_OPTIONS
        ]
        for concept in concepts:
            for coding in codings(concept):
                system = canonical_system(coding.get("system")) or ""
                found.append((system, str(coding["code"]).strip(), coding.get("display")))
        reasons = tuple(
            (canonical_system(c.get("system")) or "", str(c["code"]))
            for concept in dicts(resource.get("reasonCode")) for c in codings(concept)
        )
        reason_refs = tuple(
            ref["reference"] for ref in dicts(resource.get("reasonReference")) if isinstance(ref.get("reference"), str)
        )
        texts = [t for t in (code.get("text"),) if isinstance(t, str)]
        return cls(
            resource=resource,
            resource_type=str(resource.get("resourceType")),
            id=resource.get("id") if isinstance(resource.get("id"), str) else None,
            codings=tuple(found),
            reason_codings=reasons,
            reason_references=reason_refs,
            levels=order_levels(dicts(resource.get("bodySite")), texts),
            authored_on=parse_fhir_date(resource.get("authoredOn")),
            text=code["text"].strip() if isinstance(code.get("text"), str) else "",
        )

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}" if self.id else self.resource_type

    @property
    def display(self) -> str:
        """What a clinician calls this order: code text, else the first coding's display or code."""
        if self.text:
            return self.text
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
        #: id(resource) -> its place in the record, to give lookups in record order
        self._place: dict[int, int] = {}
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                continue
            rtype, rid = resource["resourceType"], resource.get("id")
            if isinstance(rid, str):
                ref = f"{rtype}/{rid}"
                if ref in self._by_ref:
                    continue  # the first copy wins (prefetch before fetched, case data before bundle)
                self._by_ref[ref] = resource
            self._by_type.setdefault(rtype, []).append(resource)
            self._place[id(resource)] = len(self._place)
        #: type -> loose code -> (resource, coding); built on first use
        self._code_index: dict[str, dict[str, list[tuple[dict, dict]]]] = {}
        self._texts: dict[int, str] = {}
        self._found: dict[tuple[str, int], tuple[CodeSet, list[dict]]] = {}
        self._mentions: dict[tuple[str, tuple[str, ...]], list[dict]] = {}
        self._passages: dict[str, list[tuple[frozenset[SpinalLevel], str]]] = {}
        #: text_of each resource in resources() order, and all of them as lines of one string
        self._type_texts: dict[str, tuple[list[str], str]] = {}
        self._valid: dict[int, bool] = {}
        self._bundle: dict | None = None

    def _index(self, rtype: str) -> dict[str, list[tuple[dict, dict]]]:
        """Loose code -> (resource, coding) pairs for *rtype*, built on first use.

        Keyed by the bare code string only: canonicalising every coding's system would cost
        time on hundreds of vital signs no policy asks about, so systems are checked in
        ``find``, where few candidates remain.
        """
        index = self._code_index.get(rtype)
        if index is not None:
            return index
        by_code: dict[str, list[tuple[dict, dict]]] = {}
        resources = self._by_type.get(rtype, [])
        if rtype in _CODE_REFERENCES:
            pairs = [(resource, concept) for resource in resources for concept in self.concepts_of(resource)]
        else:
            pairs = _concept_pairs(resources, CODE_PATHS.get(rtype, ()))
        for resource, concept in pairs:
            codings = concept.get("coding")
            if type(codings) is not list:
                continue
            for coding in codings:
                code = coding.get("code") if type(coding) is dict else None
                if type(code) is str and code:
                    entries = by_code.get(code)
                    if entries is None:
                        by_code[code] = [(resource, coding)]
                    else:
                        entries.append((resource, coding))
        # Reduced once per distinct code, not per coding: a chart repeats a few codes hundreds of times.
        index = self._code_index[rtype] = {}
        for code, entries in by_code.items():
            index.setdefault(loose_code(code), []).extend(entries)
        return index

    def concepts_of(self, resource: dict) -> list[dict]:
        """The coded concepts that identify *resource* (its own code, or a referenced Device/Medication's)."""
        rtype = resource["resourceType"]
        concepts = _own_concepts(resource, CODE_PATHS.get(rtype, ()))
        if rtype in _CODE_REFERENCES:
            element, target_type = _CODE_REFERENCES[rtype]
            target = self.resolve(resource.get(element), resource)
            if target is not None and target.get("resourceType") == target_type:
                concepts += _own_concepts(target, CODE_PATHS[target_type])
        return concepts

    def text_of(self, resource: dict) -> str:
        """Lower-cased words of a resource's coded concepts (texts and displays), for text criteria."""
        key = id(resource)
        if key not in self._texts:
            self._texts[key] = concept_words(self.concepts_of(resource))
        return self._texts[key]

    # -- lookups -------------------------------------------------------------------

    def resources(self, resource_type: str) -> list[dict]:
        return self._by_type.get(resource_type, [])

    def find(self, resource_type: str, codes: CodeSet) -> list[dict]:
        """Resources of *resource_type* carrying any code in *codes* (ICD prefixes and ranges too), in record order.

        Answers are kept for the request: the same criterion is asked again per level and per order.
        """
        key = (resource_type, id(codes))
        found = self._found.get(key)
        if found is None:
            index = self._index(resource_type)
            hits: dict[int, dict] = {}
            wanted = codes.by_loose_code
            for code in index.keys() & wanted.keys():
                pairs = wanted[code]
                for resource, coding in index[code]:
                    if _coding_key(coding) in pairs:
                        hits[id(resource)] = resource
            if codes.icd_ranges:
                # The chart's few distinct codes against the ranges (for ICD-10-CM the loose code is the normalised one).
                for code, entries in index.items():
                    if codes.in_icd_ranges(code):
                        for resource, coding in entries:
                            if _coding_key(coding)[0] == ICD10CM:
                                hits[id(resource)] = resource
            # In record order: a set of codes iterates in an order that changes with the process's hash seed.
            in_order = sorted(hits.values(), key=lambda resource: self._place[id(resource)]) if len(hits) > 1 \
                else list(hits.values())
            found = self._found[key] = (codes, in_order)  # codes kept: its id stays unique
        return list(found[1])

    def mentioning(self, resource_type: str, words: tuple[str, ...]) -> list[dict]:
        """Resources of *resource_type* whose concept texts or displays contain any of *words*.

        Case-insensitive substring match, not negated (``affirms``); kept for the request like ``find``.
        """
        key = (resource_type, words)
        found = self._mentions.get(key)
        if found is None:
            resources = self.resources(resource_type)
            cached = self._type_texts.get(resource_type)
            if cached is None:
                texts = [self.text_of(r) for r in resources]
                # Most words are in no resource: one search of all the texts tells.
                cached = self._type_texts[resource_type] = texts, "\n".join(texts)
            texts, everything = cached
            hits: set[int] = set()
            for word in words:  # word by word: a handful of words, tens of resources
                word = word.lower()
                if _may_name(everything, word):
                    hits.update([i for i, text in enumerate(texts) if affirms(text, word)])
            found = self._mentions[key] = [resources[i] for i in sorted(hits)]
        return list(found)

    def level_passages(self, text: str) -> list[tuple[frozenset[SpinalLevel], str]]:
        """``level_passages(text)``, worked out once for the request (each level-read criterion asks)."""
        found = self._passages.get(text)
        if found is None:
            found = self._passages[text] = level_passages(text)
        return found

    def resolve(self, reference: Any, within: dict | None = None) -> dict | None:
        """Resolve a Reference (dict or string): contained '#id', 'Type/id' or an absolute URL."""
        ref = reference.get("reference") if isinstance(reference, dict) else reference
        if isinstance(ref, str) and ref.startswith("#"):
            return next((c for c in dicts(within.get("contained")) if c.get("id") == ref[1:]), None) if within else None
        key = reference_key(ref)
        return self._by_ref.get(key) if key else None

    def as_bundle(self) -> dict:
        """All resources as one collection Bundle (the FHIRPath escape hatch's input), built once."""
        if self._bundle is None:
            entries = [{"resource": r} for rtype in sorted(self._by_type) for r in self._by_type[rtype]]
            self._bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        return self._bundle

    def valid(self, resource: dict) -> bool:
        """Whether *resource* is valid FHIR R4, decided once per request (see r4b.is_valid)."""
        key = id(resource)
        if key not in self._valid:
            self._valid[key] = is_valid(resource)
        return self._valid[key]

    @property
    def patient(self) -> dict | None:
        patients = self.resources("Patient")
        return patients[0] if patients else None

    def birth_date(self) -> date | None:
        patient = self.patient
        if patient is None or not self.valid(patient):
            return None
        return parse_fhir_date(patient.get("birthDate"))

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
            for link_id, value in _answers(dicts(response.get("item"))):
                current = best.get(link_id)
                if current is None or (authored or date.min) >= (current.authored or date.min):
                    best[link_id] = Answer(value, reference, authored)
        return best


def reference_key(reference: Any) -> str | None:
    """'Type/id' of a literal reference ('Type/id', an absolute URL, a versioned one); None for others."""
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return None
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _answers(items: list[dict]) -> Iterator[tuple[str, Any]]:
    for item in items:
        for answer in dicts(item.get("answer")):
            for key, value in answer.items():
                if key.startswith("value") and isinstance(item.get("linkId"), str):
                    yield item["linkId"], value
            yield from _answers(dicts(answer.get("item")))
        yield from _answers(dicts(item.get("item")))
