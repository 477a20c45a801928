"""Prefetch templates: declared once, advertised by discovery and used by hydration.

Only CDS Hooks 2.0 tokens are used (``{{context.patientId}}``). Where the
policies name exact codes, the search carries them (``code=system|code,...``)
so an EHR does not page through years of vital signs the guidelines never
read; types read by text, ICD-10 ranges or FHIRPath are fetched whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .catalog import Catalog
from .codes import CodeSet
from .policy.loader import rule_roots
from .policy.loader import walk
from .policy.schema import FhirPathPredicate
from .policy.schema import Leaf
from .policy.schema import ObservationPredicate
from .policy.schema import ProcedurePredicate
from .policy.schema import ReportPredicate

PATIENT_TOKEN = "{{context.patientId}}"


@dataclass(frozen=True)
class PrefetchTemplate:
    key: str
    query: str
    resource_types: tuple[str, ...]
    #: Needed on every call that has an order to answer (age, payer), whatever the policy.
    always: bool = False

    def render(self, patient_id: str) -> str:
        return self.query.replace(PATIENT_TOKEN, patient_id)


# key, resource type searched, search parameters besides the patient, extra types returned
_DECLARATIONS: tuple[tuple[str, str, str, tuple[str, ...], bool], ...] = (
    ("patient", "Patient", "", (), True),
    ("coverage", "Coverage", "status=active&_include=Coverage:payor", ("Organization",), True),
    ("conditions", "Condition", "", (), False),
    ("observations", "Observation", "", (), False),
    ("procedures", "Procedure", "", (), False),
    ("diagnosticReports", "DiagnosticReport", "", (), False),
    ("documentReferences", "DocumentReference", "", (), False),
    ("allergies", "AllergyIntolerance", "", (), False),
    ("medicationRequests", "MedicationRequest", "", (), False),
    ("medicationStatements", "MedicationStatement", "", (), False),
    ("deviceRequests", "DeviceRequest", "", (), False),
    ("deviceUseStatements", "DeviceUseStatement", "", (), False),
    ("devices", "Device", "", (), False),
    ("questionnaireResponses", "QuestionnaireResponse", "", (), False),
)

# Code-filtered types: the search parameter and the predicates whose codes it lists.
_CODE_FILTERS = {
    "Observation": ("code", (ObservationPredicate,)),
    "Procedure": ("code", (ProcedurePredicate,)),
    "DiagnosticReport": ("code", (ReportPredicate,)),
    "DocumentReference": ("type", (ReportPredicate,)),
}


def build_templates(catalog: Catalog) -> tuple[PrefetchTemplate, ...]:
    """The prefetch templates for the loaded policies (called once at start-up)."""
    filters = _code_filters(catalog)
    templates = []
    for key, rtype, params, extra_types, always in _DECLARATIONS:
        if rtype == "Patient":
            query = f"Patient/{PATIENT_TOKEN}"
        else:
            parts = [f"patient={PATIENT_TOKEN}"] + ([params] if params else [])
            if rtype in filters:
                parts.append(filters[rtype])
            query = f"{rtype}?{'&'.join(parts)}"
        templates.append(PrefetchTemplate(key, query, (rtype, *extra_types), always))
    return tuple(templates)


def _code_filters(catalog: Catalog) -> dict[str, str]:
    leaves = [node for policy in catalog.policies for rule in policy.rules
              for root in rule_roots(policy, rule) for node in walk(root, policy) if isinstance(node, Leaf)]
    if any(isinstance(leaf.predicate, FhirPathPredicate) for leaf in leaves):
        return {}  # a FHIRPath criterion may read anything
    filters = {}
    for rtype, (param, predicate_types) in _CODE_FILTERS.items():
        sets = [leaf.predicate.codes for leaf in leaves if isinstance(leaf.predicate, predicate_types)]
        if rtype == "Observation":  # the results a procedure must not predate
            sets += [leaf.predicate.after_latest_result.codes for leaf in leaves
                     if isinstance(leaf.predicate, ProcedurePredicate) and leaf.predicate.after_latest_result]
        if rtype == "Procedure":  # the procedures results are linked to, or must follow
            sets += [codes for leaf in leaves if isinstance(leaf.predicate, ObservationPredicate)
                     for codes in (leaf.predicate.part_of, leaf.predicate.after_latest_procedure) if codes]
        tokens = _tokens(sets)
        if tokens:
            filters[rtype] = f"{param}={','.join(tokens)}"
    return filters


def _tokens(sets: list[CodeSet]) -> list[str]:
    if any(s.icd_ranges for s in sets):
        return []  # ranges cannot be expressed as search tokens
    return sorted({f"{system}|{code}" for s in sets for system, code in s.exact})


def templates_by_key(templates: Iterable[PrefetchTemplate]) -> dict[str, str]:
    """The discovery ``prefetch`` object."""
    return {t.key: t.query for t in templates}


def answer_prefetch(templates: Iterable[PrefetchTemplate], resources: list[dict]) -> dict:
    """What a client would prefetch for these templates from a chart: every key answered.

    Used to build example requests (fhir_fixtures/, the benchmark, tests); searches become
    searchset Bundles (empty when nothing matches), the patient read the Patient itself.
    """
    prefetch: dict = {}
    for template in templates:
        matches = [r for r in resources if r.get("resourceType") in template.resource_types]
        if "?" not in template.query:
            prefetch[template.key] = matches[0] if matches else None
            continue
        primary = template.resource_types[0]
        prefetch[template.key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": sum(1 for r in matches if r["resourceType"] == primary),
            "entry": [
                {"fullUrl": f"http://ehr.example.org/fhir/{r['resourceType']}/{r.get('id')}", "resource": r,
                 "search": {"mode": "match" if r["resourceType"] == primary else "include"}}
                for r in matches
            ],
        }
    return prefetch
