"""Code systems, their aliases, and code validation and matching.

Real systems send the same code system under several URIs (HCPCS with http and
https, OIDs) and ICD-10-CM codes with or without the dot, so everything that
compares codes goes through :func:`canonical_system` and :func:`normalize_code`.
Policy files name systems by short keys (``icd10cm``, ``snomed`` …) that map to
the canonical URIs below.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from dataclasses import field

from .fhirjson import dicts

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"

#: Canonical base of the FHIR artefacts this service defines (CodeSystem, Questionnaires).
PROJECT_BASE = "http://example.org/fhir/cds-prior-auth"
#: Concepts that have no standard code (reflux duration, CEAP class, % relief …).
PROJECT_FINDINGS = f"{PROJECT_BASE}/CodeSystem/documentation-findings"

_ALIASES = {
    # THO canonical HCPCS is http; many EHRs (and the CRD IG examples) send https.
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
    # CMS Blue Button's claim code system, used by the CRD reference implementation and Inferno.
    "https://bluebutton.cms.gov/resources/codesystem/hcpcs": HCPCS,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "https://www.ama-assn.org/go/cpt": CPT,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
}

#: Short names used in policy files.
SYSTEM_KEYS = {
    "cpt": CPT,
    "hcpcs": HCPCS,
    "icd10cm": ICD10CM,
    "loinc": LOINC,
    "snomed": SNOMED,
    "rxnorm": RXNORM,
    "finding": PROJECT_FINDINGS,
}
SYSTEM_LABELS = {
    CPT: "CPT",
    HCPCS: "HCPCS",
    ICD10CM: "ICD-10-CM",
    LOINC: "LOINC",
    SNOMED: "SNOMED CT",
    RXNORM: "RxNorm",
    PROJECT_FINDINGS: "finding",
}


def canonical_system(system: object) -> str | None:
    """Return the canonical URI for *system* (aliases and a trailing slash folded); None for a non-string."""
    if not system or not isinstance(system, str):
        return None
    system = system.strip().rstrip("/")
    return _ALIASES.get(system, system)


def normalize_code(system: str | None, code: object) -> str | None:
    """Normalise *code* for comparison: ICD-10-CM loses its dot and is upper-cased; None for a non-string."""
    if not isinstance(code, str):
        return None
    code = code.strip()
    if not code:
        return None
    if system == ICD10CM:
        return code.replace(".", "").upper()
    if system in (CPT, HCPCS):
        return code.upper()
    return code


def coding_key(system: str | None, code: str | None) -> tuple[str | None, str | None]:
    """(canonical system, normalised code): how codes are compared.

    HCPCS Level I is CPT, so a CPT-shaped code sent under a HCPCS system (claims data, the
    CRD reference implementation) is the CPT code.
    """
    system = canonical_system(system)
    code = normalize_code(system, code)
    if system == HCPCS and code is not None and _CPT.match(code):
        return CPT, code
    return system, code


def loose_code(code: str) -> str:
    """A code reduced for indexing: the same for 'M54.16', 'm5416' and ' M54.16 '.

    Coarser than ``normalize_code`` and system-blind, so a match on it is a candidate
    that ``normalize_code`` then confirms.
    """
    return code.strip().replace(".", "").upper()


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def _verhoeff_ok(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
    return c == 0


_ICD10CM = re.compile(r"^[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?$")
_CPT = re.compile(r"^[0-9]{4}[0-9FTU]$")
_HCPCS = re.compile(r"^[A-V][0-9]{4}$")
_LOINC = re.compile(r"^([0-9]{1,7})-([0-9])$")
_SNOMED = re.compile(r"^[1-9][0-9]{5,17}$")
_RXNORM = re.compile(r"^[0-9]{1,9}$")


def code_problem(system: str, code: str) -> str | None:
    """Explain why *code* is not a well-formed code of *system*, or return None.

    Catches typos in policy files at load time: LOINC codes carry a mod-10 check
    digit and SNOMED CT identifiers a Verhoeff check digit plus a partition id.
    """
    if system == ICD10CM:
        return None if _ICD10CM.match(code.upper()) else "is not an ICD-10-CM code"
    if system == CPT:
        return None if _CPT.match(code) else "is not a CPT code (5 characters)"
    if system == HCPCS:
        return None if _HCPCS.match(code.upper()) else "is not a HCPCS Level II code (letter + 4 digits)"
    if system == LOINC:
        m = _LOINC.match(code)
        if not m:
            return "is not a LOINC code (digits-checkdigit)"
        return None if _luhn_ok(m.group(1) + m.group(2)) else "has a wrong LOINC check digit"
    if system == SNOMED:
        if not _SNOMED.match(code):
            return "is not a SNOMED CT identifier"
        if code[-3:-1] not in ("00", "10"):
            return "is not a SNOMED CT concept id (partition must be 00 or 10)"
        return None if _verhoeff_ok(code) else "has a wrong SNOMED CT check digit"
    if system == RXNORM:
        return None if _RXNORM.match(code) else "is not an RxNorm concept id"
    return None


_ICD_VERDICTS_MAX = 4096


@dataclass(frozen=True)
class IcdRange:
    """An ICD-10-CM prefix (``G35``) or range of prefixes (``Q20-Q26``), dot-free."""

    low: str
    high: str

    def contains(self, normalized_code: str) -> bool:
        head = normalized_code[: len(self.low)]
        return self.low <= head <= self.high


@dataclass(frozen=True)
class CodeSet:
    """A compiled set of codes: exact (system, code) pairs plus ICD-10-CM prefixes/ranges."""

    exact: frozenset[tuple[str, str]] = frozenset()
    icd_ranges: tuple[IcdRange, ...] = ()
    labels: tuple[str, ...] = field(default=(), compare=False)

    @functools.cached_property
    def by_loose_code(self) -> dict[str, frozenset[tuple[str, str]]]:
        """The exact pairs by ``loose_code``, for intersecting with a record's code index."""
        grouped: dict[str, set[tuple[str, str]]] = {}
        for system, code in self.exact:
            grouped.setdefault(loose_code(code), set()).add((system, code))
        return {code: frozenset(pairs) for code, pairs in grouped.items()}

    @functools.cached_property
    def _icd_verdicts(self) -> dict[str, bool]:
        return {}

    def __bool__(self) -> bool:
        return bool(self.exact or self.icd_ranges)

    def in_icd_ranges(self, code: str) -> bool:
        """Whether a normalised ICD-10-CM code falls in one of the ranges.

        Remembered per code (at most 4,096): a condition criterion asks this of every
        diagnosis code on the chart, and the answer depends on the policy alone.
        """
        verdicts = self._icd_verdicts
        verdict = verdicts.get(code)
        if verdict is None:
            if len(verdicts) >= _ICD_VERDICTS_MAX:
                verdicts.clear()
            verdict = verdicts[code] = any(r.contains(code) for r in self.icd_ranges)
        return verdict

    def contains(self, system: str | None, code: str | None) -> bool:
        system, code = coding_key(system, code)
        if system is None or code is None:
            return False
        if (system, code) in self.exact:
            return True
        return system == ICD10CM and bool(self.icd_ranges) and self.in_icd_ranges(code)

    def matches_concept(self, concept: dict | None) -> bool:
        """True when any Coding of a CodeableConcept dict is in the set."""
        if not isinstance(concept, dict):
            return False
        return any(self.contains(c.get("system"), c.get("code")) for c in dicts(concept.get("coding")))

    def systems(self) -> set[str]:
        found = {system for system, _ in self.exact}
        if self.icd_ranges:
            found.add(ICD10CM)
        return found

    def union(self, other: "CodeSet") -> "CodeSet":
        return CodeSet(self.exact | other.exact, self.icd_ranges + other.icd_ranges, self.labels + other.labels)


def compile_codes(spec: dict[str, list[str]]) -> CodeSet:
    """Compile ``{system_key: [codes]}`` from a policy file. Raises ValueError on bad codes."""
    exact: set[tuple[str, str]] = set()
    ranges: list[IcdRange] = []
    labels: list[str] = []
    for key, codes in spec.items():
        system = SYSTEM_KEYS.get(key)
        if system is None:
            raise ValueError(f"unknown code system '{key}' (expected one of {', '.join(SYSTEM_KEYS)})")
        for raw in codes:
            raw = str(raw).strip()
            labels.append(f"{SYSTEM_LABELS[system]} {raw}")
            if system == ICD10CM:
                ranges.append(_compile_icd(raw))
                continue
            problem = code_problem(system, raw)
            if problem:
                raise ValueError(f"{SYSTEM_LABELS[system]} code '{raw}' {problem}")
            exact.add((system, normalize_code(system, raw)))
    return CodeSet(frozenset(exact), tuple(ranges), tuple(labels))


def _compile_icd(raw: str) -> IcdRange:
    low, _, high = raw.partition("-")
    high = high or low
    for part in (low, high):
        if code_problem(ICD10CM, part):
            raise ValueError(f"ICD-10-CM code '{raw}' is not an ICD-10-CM code, prefix or range")
    low_n, high_n = normalize_code(ICD10CM, low), normalize_code(ICD10CM, high)
    if len(low_n) != len(high_n) or low_n > high_n:
        raise ValueError(f"ICD-10-CM range '{raw}' must have bounds of equal length in ascending order")
    return IcdRange(low_n, high_n)


def codings(concept: dict | None) -> list[dict]:
    """The non-empty Codings of a CodeableConcept dict (real clients send ``[{}]``)."""
    if not isinstance(concept, dict):
        return []
    return [c for c in dicts(concept.get("coding")) if c.get("code")]
