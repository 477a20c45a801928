"""Da Vinci CRD coverage information: the decision per order, the extension, the systemAction.

The extension satisfies the invariants of both CRD 2.0.1 (what Inferno checks)
and 2.2: ``pa-needed`` is present exactly when the order is not "not-covered";
``info-needed`` is present exactly when something is "conditional";
``questionnaire`` only with ``doc-needed``; order-select never asks for
documentation (hook-19). When the EHR could not provide the evidence the
answer is never "covered": 2.2's indeterminate/technical when the client asked
for 2.2, else conditional with the reason in text.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from ..codes import CPT
from ..codes import HCPCS
from ..fhirjson import as_dict
from ..fhirjson import dicts
from ..fhirjson import string
from ..payers import PayerMatch
from ..policy.engine import Finding
from ..policy.engine import OrderEvaluation
from ..policy.engine import Outcome
from ..policy.engine import questionnaire_url

EXTENSION_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
CRD_TEMP = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"

OUTCOME_EVIDENCE_UNAVAILABLE = "evidence-unavailable"
#: Why nothing is covered (PayerMatch.basis) -> the stored outcome and CRD 2.2's reason code.
NOT_COVERING = {"inactive-coverage": ("coverage-inactive", "no-active-coverage"),
                "coverage-not-found": ("coverage-not-found", "coverage-not-found"),
                "ambiguous-coverage": ("coverage-ambiguous", "coverage-not-found")}


@dataclass(frozen=True)
class Reason:
    text: str
    code: str | None = None  # a CRD temp code (2.2 reasons such as "technical")

    def extension(self) -> dict:
        concept: dict = {"text": self.text}
        if self.code:
            concept["coding"] = [{"system": CRD_TEMP, "code": self.code}]
        return {"url": "reason", "valueCodeableConcept": concept}


@dataclass(frozen=True)
class CoverageDecision:
    """What the payer asserts about one order (stored, and rendered as the extension)."""

    assertion_id: str
    outcome: str  # an Outcome value, or "evidence-unavailable"
    covered: str
    pa_needed: str | None = None
    doc_needed: str | None = None
    doc_purpose: str | None = None
    info_needed: str | None = None
    questionnaire: str | None = None
    reasons: tuple[Reason, ...] = ()


def _what_was_found(finding: Finding) -> str:
    """What the record shows against a requirement (its own reason, or its parts')."""
    return "; ".join(dict.fromkeys(r for part in finding.walk() if (r := part.reason)))


def decide(evaluation: OrderEvaluation, payer: PayerMatch, hook: str, version: str) -> CoverageDecision:
    """Map an evaluation to the CRD answer for the payer."""
    assertion_id = str(uuid.uuid4())
    if payer.basis in NOT_COVERING:  # CRD: no active coverage is "not-covered" (2.2 codes the reason)
        outcome, code = NOT_COVERING[payer.basis]
        text = (f"{payer.coverage_reference} is not in force: {payer.not_covering}" if payer.coverage_reference
                else f"Coverage not resolved: {payer.not_covering}" if payer.basis == "ambiguous-coverage"
                else f"No coverage: {payer.not_covering}")
        return CoverageDecision(assertion_id, outcome, "not-covered",
                                reasons=(Reason(text, code if version == "2.2" else None),))
    reasons: list[Reason] = []
    if payer.basis == "no-coverage":
        reasons.append(Reason(f"No active Coverage found; answered for {payer.payer.name}"))
    elif payer.basis == "unknown-payer":
        reasons.append(Reason(f"Coverage payer not recognised; answered for {payer.payer.name}"))
    outcome = evaluation.outcome

    if outcome is Outcome.NOT_MEDICALLY_NECESSARY:
        why = "; ".join([f.text for f in evaluation.excluded] + [
            f"not met: {f.text}" + (f" ({found})" if (found := _what_was_found(f)) else "")
            for f in evaluation.unmet])[:900]
        return CoverageDecision(assertion_id, outcome.value, "not-covered",
                                reasons=(*reasons, Reason(f"Not medically necessary: {why}")))
    if evaluation.evidence_gaps:
        text = (f"{', '.join(evaluation.evidence_gaps)} could not be retrieved from the EHR, so coverage "
                "could not be determined")
        if version == "2.2":
            return CoverageDecision(assertion_id, OUTCOME_EVIDENCE_UNAVAILABLE, "indeterminate", "indeterminate",
                                    reasons=(*reasons, Reason(text, "technical")))
        return CoverageDecision(assertion_id, OUTCOME_EVIDENCE_UNAVAILABLE, "conditional", "conditional",
                                info_needed="OTH", reasons=(*reasons, Reason(text)))
    if outcome is Outcome.NO_POLICY and not evaluation.order.codings:
        # What is ordered must be coded before anyone can answer: 2.2 says so with info-needed
        # "detail-code"; in 2.0.1 that code is a reason, with info-needed OTH.
        text = "The order carries no code for what is ordered; code it so the payer can answer"
        if version == "2.2":
            return CoverageDecision(assertion_id, outcome.value, "conditional", "conditional",
                                    info_needed="detail-code", reasons=(*reasons, Reason(text)))
        return CoverageDecision(assertion_id, outcome.value, "conditional", "conditional", info_needed="OTH",
                                reasons=(*reasons, Reason(text, "detail-code")))
    if outcome is Outcome.NO_POLICY:
        answer = payer.payer.no_policy
        conditional = "conditional" in (answer.covered, answer.pa_needed)
        if conditional:
            reasons.append(Reason("No guideline on file for this service; the payer reviews it case by case"))
        return CoverageDecision(assertion_id, outcome.value, answer.covered, answer.pa_needed,
                                info_needed="OTH" if conditional else None, reasons=tuple(reasons))
    if evaluation.unresolved:
        suspected = "; ".join(f"{f.text} ({f.reason})" if f.reason else f.text for f in evaluation.unresolved)
        reasons.append(Reason(f"On record but not established, to rule out: {suspected}"[:900]))
    pa_needed = payer.payer.prior_auth
    if outcome is Outcome.MEETS_CRITERIA:
        return CoverageDecision(assertion_id, outcome.value, "covered", pa_needed, reasons=tuple(reasons))
    # documentation needed
    count = len(evaluation.missing)
    need = Reason(f"Coverage depends on {count} documentation item{'s' if count != 1 else ''} the guideline requires")
    if hook == "order-select":  # secondary hook: no documentation requests (CRD hook-19)
        return CoverageDecision(assertion_id, outcome.value, "conditional", pa_needed, info_needed="OTH",
                                reasons=(*reasons, need))
    policy = evaluation.policy
    return CoverageDecision(
        assertion_id, outcome.value, "conditional", pa_needed,
        doc_needed="clinical",
        doc_purpose="withpa" if pa_needed == "auth-needed" else "withclaim",
        info_needed="OTH",
        questionnaire=f"{questionnaire_url(policy)}|{policy.version}",
        reasons=(*reasons, need),
    )


def coverage_extension(decision: CoverageDecision, evaluation: OrderEvaluation, payer: PayerMatch,
                       today: date, version: str, policy_link: str | None) -> dict:
    """The ext-coverage-information extension (sub-extensions in the StructureDefinition's order)."""
    coverage = payer.coverage_reference
    parts: list[dict] = [
        {"url": "coverage", "valueReference": {"reference": coverage} if coverage
         else {"display": "Several Coverages in force, none ranked primary" if payer.basis == "ambiguous-coverage"
               else "No active coverage on record"}},
        {"url": "covered", "valueCode": decision.covered},
    ]
    for url, value in (("pa-needed", decision.pa_needed), ("doc-needed", decision.doc_needed),
                       ("doc-purpose", decision.doc_purpose), ("info-needed", decision.info_needed)):
        if value:
            parts.append({"url": url, "valueCode": value})
    for system, code, display in evaluation.order.codings:
        if system in (CPT, HCPCS):
            coding = {"system": system, "code": code}
            if display:
                coding["display"] = display
            parts.append({"url": "billingCode", "valueCoding": coding})
    parts += [reason.extension() for reason in decision.reasons]
    if version == "2.2" and policy_link:
        parts.append({"url": "detail", "extension": [
            {"url": "category", "valueCode": "cat-other"},
            {"url": "code", "valueCodeableConcept": {"coding": [{"system": CRD_TEMP, "code": "policy-link"}]}},
            {"url": "value", "valueUrl": policy_link},
        ]})
    if decision.questionnaire:
        parts.append({"url": "questionnaire", "valueCanonical": decision.questionnaire})
    parts += [
        {"url": "date", "valueDate": today.isoformat()},
        {"url": "coverage-assertion-id", "valueString": decision.assertion_id},
    ]
    return {"url": EXTENSION_URL, "extension": parts}


_COMPARED = ("covered", "pa-needed", "doc-needed", "info-needed", "questionnaire")


def _essence(extension: dict) -> tuple:
    values = {}
    for part in dicts(extension.get("extension")):
        if part.get("url") in _COMPARED:
            values.setdefault(part["url"], set()).add(string(part.get("valueCode")) or string(part.get("valueCanonical")))
    coverage = next((string(as_dict(p.get("valueReference")).get("reference")) for p in dicts(extension.get("extension"))
                     if p.get("url") == "coverage"), None)
    return coverage, tuple(sorted((k, tuple(sorted(map(str, v)))) for k, v in values.items()))


def system_action(order_resource: dict, extension: dict) -> dict | None:
    """An ``update`` of the order carrying *extension*, or None when the order already says the same.

    The order is returned unchanged except for its coverage-information for the same Coverage,
    which is replaced (CRD: a systemAction SHALL NOT change any other element).
    """
    existing = [e for e in dicts(order_resource.get("extension")) if e.get("url") == EXTENSION_URL]
    if any(_essence(e) == _essence(extension) for e in existing):
        return None
    key = _essence(extension)[0]
    kept = [e for e in dicts(order_resource.get("extension"))
            if not (e.get("url") == EXTENSION_URL and _essence(e)[0] == key)]
    # A shallow copy is enough: only the top-level extension list differs, and it is a new list.
    resource = {**order_resource, "extension": kept + [extension]}
    return {"type": "update", "description": "Record the payer's coverage information on the order",
            "resource": resource}
