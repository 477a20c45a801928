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
from .policy.schema import ScoreReliefPredicate

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
    "Observation": ("code", (ObservationPredicate, ScoreReliefPredicate)),
    "Procedure": ("code", (ProcedurePredicate,)),
    "DiagnosticReport": ("code", (ReportPredicate,)),
    "DocumentReference": ("type", (ReportPredicate,)),
}


def build_templates(catalog: Catalog) -> tuple[PrefetchTemplate, ...]:
    """The prefetch templates for the loaded policies (called once at start-up)."""
    filters = {rtype: f"{_CODE_FILTERS[rtype][0]}={','.join(sorted(f'{s}|{c}' for s, c in codes))}"
               for rtype, codes in searched_codes(catalog).items()}
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


def searched_codes(catalog: Catalog) -> dict[str, frozenset[tuple[str, str]]]:
    """Per code-filtered type, every (canonical system, code) a policy searches it for.

    The templates' code filters, and what hook intake keeps of a prefetch that ignored them
    (``intake.EvidenceFilter``). A type searched by an ICD-10 range, and every type when a
    FHIRPath criterion is loaded, has no entry: it is read whole.
    """
    leaves = [node for policy in catalog.policies for rule in policy.rules
              for root in rule_roots(policy, rule) for node in walk(root, policy) if isinstance(node, Leaf)]
    if any(isinstance(leaf.predicate, FhirPathPredicate) for leaf in leaves):
        return {}  # a FHIRPath criterion may read anything
    filters = {}
    for rtype, (_param, predicate_types) in _CODE_FILTERS.items():
        sets = [leaf.predicate.codes for leaf in leaves if isinstance(leaf.predicate, predicate_types)]
        if rtype == "Observation":  # the results a procedure must not predate, or that supersede a report
            sets += [leaf.predicate.after_latest_result.codes for leaf in leaves
                     if isinstance(leaf.predicate, ProcedurePredicate) and leaf.predicate.after_latest_result]
            sets += [leaf.predicate.superseded_by.codes for leaf in leaves
                     if isinstance(leaf.predicate, ReportPredicate) and leaf.predicate.superseded_by]
        if rtype == "Procedure":  # the procedures results are linked to, or results and reports must follow
            sets += [codes for leaf in leaves if isinstance(leaf.predicate, ObservationPredicate)
                     for codes in (leaf.predicate.part_of, leaf.predicate.after_latest_procedure) if codes]
            sets += [leaf.predicate.after_latest_procedure for leaf in leaves
                     if isinstance(leaf.predicate, ReportPredicate) and leaf.predicate.after_latest_procedure]
            sets += [codes for leaf in leaves if isinstance(leaf.predicate, ScoreReliefPredicate)
                     for codes in (leaf.predicate.procedure, leaf.predicate.same_day_others) if codes]
        codes = frozenset(pair for s in sets for pair in s.exact)
        if codes and not any(s.icd_ranges for s in sets):  # ranges cannot be search tokens
            filters[rtype] = codes
    return filters


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
