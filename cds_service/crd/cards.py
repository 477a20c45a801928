"""CDS cards rendered purely from the evaluations: what is missing, what fails, and why.

One coverage card per (policy, outcome) group of orders — each missing piece
of documentation and each failed criterion with the guideline sentence behind
it — plus, where they apply, a guideline (external reference) card, an
additional-orders card and a documentation-form card. Every card has a uuid,
a CRD ``source.topic``, the payer as ``source.label`` and the orders it is
about in ``davinci-crd.associated-resource``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from dataclasses import replace
from datetime import date
from typing import Iterable

from ..payers import PayerMatch
from ..policy.engine import Finding
from ..policy.engine import OrderEvaluation
from ..policy.engine import Outcome
from ..policy.engine import questionnaire_url
from ..policy.schema import Policy
from .coverage import CRD_TEMP
from .options import TOPICS
from .options import CrdOptions

SUMMARY_LIMIT = 139  # CDS Hooks: "<140 characters"; Inferno rejects 140
OVERRIDE_SYSTEM = "http://example.org/fhir/cds-prior-auth/CodeSystem/override-reason"
OVERRIDE_REASONS = [
    {"system": OVERRIDE_SYSTEM, "code": "documented-elsewhere", "display": "Documentation exists outside the EHR record"},
    {"system": OVERRIDE_SYSTEM, "code": "will-document", "display": "Will add the documentation before submission"},
    {"system": OVERRIDE_SYSTEM, "code": "clinical-judgment", "display": "Proceeding on clinical judgment"},
    {"system": OVERRIDE_SYSTEM, "code": "urgent", "display": "Urgent or emergent procedure"},
]


@dataclass(frozen=True)
class CardContext:
    hook: str
    payer: PayerMatch
    options: CrdOptions
    today: date
    patient_id: str
    policy_links: dict[str, str]  # policy id -> absolute guideline URL
    user_id: str | None = None  # the clinician in the hook context: requester of suggested orders


# --- helpers --------------------------------------------------------------------------


def _codes_label(evaluations: Iterable[OrderEvaluation]) -> str:
    by_system: dict[str, list[str]] = {}
    for evaluation in evaluations:
        label = evaluation.order.code_label
        system, _, code = label.partition(" ")
        if code and code not in by_system.setdefault(system, []):
            by_system[system].append(code)
        elif not code:
            by_system.setdefault(label, [])
    return "; ".join(f"{system} {', '.join(codes)}".strip() for system, codes in by_system.items())


def _fit(summary: str) -> str:
    return summary if len(summary) <= SUMMARY_LIMIT else summary[: SUMMARY_LIMIT - 1].rstrip() + "…"


def _summary(prefix: str, rest: str) -> str:
    """Keep the outcome text whole; shorten the code list first."""
    room = SUMMARY_LIMIT - len(rest)
    if len(prefix) > room:
        prefix = prefix[: max(room - 1, 10)].rstrip(" ,;") + "…"
    return _fit(prefix + rest)


def _associated(evaluations: Iterable[OrderEvaluation]) -> dict:
    refs = [{"reference": e.order.reference} for e in evaluations if e.order.id]
    return {"davinci-crd.associated-resource": refs} if refs else {}


def _card(summary: str, indicator: str, topic: str, ctx: CardContext, evaluations: list[OrderEvaluation],
          detail: str | None = None, url: str | None = None, **fields) -> dict:
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": _fit(summary),
        "indicator": indicator,
        "detail": detail,
        "source": {"label": ctx.payer.payer.name, "url": url, "topic": TOPICS[topic]},
        "extension": _associated(evaluations),
    }
    card.update(fields)
    return card


def _quote(finding: Finding) -> str:
    if finding.cite is None:
        return ""
    return f'  \n  _Guideline ({finding.cite.section}): "{finding.cite.quote}"_'


def _where(finding: Finding) -> str:
    return f" at {finding.level}" if finding.level else ""


def _condition(finding: Finding) -> str:
    if finding.consequence:
        return f" — if so, also required (not on record): {finding.consequence}"
    if not finding.condition:
        return ""
    return f" — required because: {finding.condition}" if finding.condition_met else \
        f" — required if: {finding.condition}"


def _merge_levels(findings: Iterable[Finding]) -> list[Finding]:
    """One line per criterion: the same criterion open at several spinal levels names them all."""
    merged: dict[tuple, Finding] = {}
    for finding in findings:
        key = (finding.id, finding.text, finding.condition)
        if key in merged and finding.level:
            first = merged[key]
            levels = ", ".join(filter(None, [first.level, finding.level]))
            reasons = "; ".join(dict.fromkeys(filter(None, [first.reason, finding.reason])))
            merged[key] = replace(first, level=levels, reason=reasons or None,
                                  evidence=tuple(dict.fromkeys(first.evidence + finding.evidence)))
        else:
            merged.setdefault(key, finding)
    return list(merged.values())


def _missing_lines(findings: Iterable[Finding]) -> list[str]:
    lines = []
    for number, finding in enumerate(_merge_levels(findings), 1):
        what = f"{number}. **{finding.text}**{_where(finding)}{_condition(finding)}"
        if finding.documentation:
            what += f": {finding.documentation}"
        if finding.reason:
            what += f" _(on record: {finding.reason})_"
        lines.append(what + _quote(finding))
        if finding.alternatives:
            lines.append("   Any one of:")
            for alt in finding.alternatives:
                still = "; ".join(inner.text for inner in alt.alternatives)
                lines.append(f"   - {alt.text}{_where(alt)}" + (f" — still needs: {still}" if still else
                                                                  f": {alt.documentation}" if alt.documentation else ""))
        if finding.ruled_out:
            lines.append("   Ruled out by the record:")
            for alt in finding.ruled_out:
                why = "; ".join(f"{inner.text}" + (f" ({inner.reason})" if inner.reason else "")
                                for inner in alt.alternatives) or alt.reason
                lines.append(f"   - {alt.text}{_where(alt)}" + (f" — not met: {why}" if why else ""))
    return lines


def _failed_lines(findings: Iterable[Finding]) -> list[str]:
    lines = []
    for finding in _merge_levels(findings):
        what = f"- **{finding.text}**{_where(finding)}{_condition(finding)}"
        if finding.reason:
            what += f": {finding.reason}"
        if finding.evidence:
            what += f" (evidence: {', '.join(finding.evidence)})"
        lines.append(what + _quote(finding))
        lines += [f"  - {alt.text}{_where(alt)}" + (f": {alt.reason}" if alt.reason else "")
                  for alt in finding.alternatives]
    return lines


def _met_lines(findings: Iterable[Finding]) -> list[str]:
    return [f"- {f.text}{_where(f)}" + (f" ({', '.join(f.evidence)})" if f.evidence else "") for f in findings]


def _provenance(policy: Policy) -> str:
    source = policy.provenance
    edition = " ".join(p for p in (source.number, f"version {source.version}") if p)
    dates = f", effective {source.effective.isoformat()}" if source.effective else ""
    return f"_{source.publisher}: {source.document} ({edition}{dates}); encoding {policy.version}._"


def _order_heading(evaluations: list[OrderEvaluation]) -> str:
    names = []
    for evaluation in evaluations:
        order = evaluation.order
        levels = f" ({', '.join(level.label for level in order.levels)})" if order.levels else ""
        names.append(f"{order.display}{levels}")
    return "; ".join(names)


def _sections(evaluations: list[OrderEvaluation]) -> list[list[OrderEvaluation]]:
    """Orders with the same rule and the same open criteria share one section of the detail."""
    sections: dict[tuple, list[OrderEvaluation]] = {}
    for evaluation in evaluations:
        key = (evaluation.rule.id if evaluation.rule else None,
               tuple((f.id, f.level, f.condition) for f in evaluation.missing),
               tuple((f.id, f.level, f.condition) for f in evaluation.failed),
               evaluation.unresolved_ids)
        sections.setdefault(key, []).append(evaluation)
    return list(sections.values())


# --- cards ---------------------------------------------------------------------------


_OUTCOME_TEXT = {
    Outcome.DOCUMENTATION_NEEDED: "The record does not yet show everything the guideline requires. Document the "
                                  "items below (or answer the payer's documentation form) before requesting prior "
                                  "authorization.",
    Outcome.NOT_MEDICALLY_NECESSARY: "The record shows that the guideline's criteria are not met for these orders.",
    Outcome.MEETS_CRITERIA: "The documented record meets the guideline's criteria.",
}


def _coverage_card(policy: Policy, outcome: Outcome, evaluations: list[OrderEvaluation], ctx: CardContext) -> dict:
    payer = ctx.payer.payer.name
    codes = _codes_label(evaluations)
    missing = sum(len(e.missing) for e in _sections_first(evaluations))
    if outcome is Outcome.DOCUMENTATION_NEEDED:
        rest = f": {missing} documentation item{'s' if missing != 1 else ''} needed for {payer} criteria"
        indicator = "warning"
    elif outcome is Outcome.NOT_MEDICALLY_NECESSARY:
        rest = f": does not meet {payer} medical-necessity criteria"
        indicator = "critical" if any(f.safety for e in evaluations for f in e.failed) else "warning"
    else:
        pa = ctx.payer.payer.prior_auth
        rest = f": meets {payer} criteria" + ("; prior authorization required" if pa == "auth-needed" else "")
        unresolved = sum(len(e.unresolved) for e in _sections_first(evaluations))
        if unresolved:
            rest += f"; {unresolved} exclusion{'s' if unresolved != 1 else ''} to rule out"
        indicator = "warning" if unresolved else "info"
    lines = [f"**{policy.title}** — {_order_heading(evaluations)}", "", _OUTCOME_TEXT[outcome]]
    if ctx.payer.basis != "coverage":
        lines += ["", f"_No recognised active Coverage on the request: answered for {payer}._"]
    multiple = len(_sections(evaluations)) > 1
    for section in _sections(evaluations):
        first = section[0]
        if multiple:
            lines += ["", f"#### {_codes_label(section)} — {_order_heading(section)}"]
        if first.excluded:
            lines += ["", "**Excluded by the guideline**", *_failed_lines(first.excluded)]
        if first.unmet:
            lines += ["", "**Criteria not met**", *_failed_lines(first.unmet)]
        if first.unresolved:
            lines += ["", "**On record but not established** (if confirmed, the guideline excludes these orders)",
                      *_failed_lines(first.unresolved)]
        if first.missing:
            lines += ["", "**Documentation still needed**", *_missing_lines(first.missing)]
        if first.met and outcome is not Outcome.NOT_MEDICALLY_NECESSARY:
            lines += ["", "**Already documented**", *_met_lines(first.met)]
    lines += ["", _provenance(policy)]
    return _card(_summary(codes, rest), indicator, "coverage-info", ctx, evaluations, "\n".join(lines),
                 url=ctx.policy_links.get(policy.id), overrideReasons=OVERRIDE_REASONS)


def _sections_first(evaluations: list[OrderEvaluation]) -> list[OrderEvaluation]:
    return [section[0] for section in _sections(evaluations)]


def _gap_card(evaluations: list[OrderEvaluation], ctx: CardContext) -> dict:
    types = sorted({t for e in evaluations for t in e.evidence_gaps})
    codes = _codes_label(evaluations)
    detail = (f"The EHR's FHIR server did not return {', '.join(types)} in time or without error, so the "
              f"guideline could not be fully checked for {codes}. Coverage is reported as undetermined; "
              "retry, or complete the documentation form.")
    return _card(_summary(codes, ": coverage not determined, EHR data could not be retrieved"), "warning",
                 "coverage-info", ctx, evaluations, detail)


def _guideline_card(policy: Policy, evaluations: list[OrderEvaluation], ctx: CardContext) -> dict:
    url = ctx.policy_links[policy.id]
    links = [{"label": f"{policy.provenance.document}", "url": url, "type": "absolute"}]
    detail = f"{policy.summary}\n\n{_provenance(policy)}"
    return _card(f"{ctx.payer.payer.name} guideline: {policy.title}", "info", "guideline", ctx, evaluations,
                 detail, url=url, links=links)


def _orders_card(policy: Policy, evaluations: list[OrderEvaluation], ctx: CardContext,
                 drafted: set[tuple[str, str]]) -> dict | None:
    wanted = []
    for evaluation in evaluations:
        for suggestion in evaluation.suggestions:
            if (suggestion.system_uri, suggestion.code) not in drafted and suggestion not in wanted:
                wanted.append(suggestion)
    if not wanted:
        return None
    order = evaluations[0].order.resource
    suggestions = []
    for s in wanted:
        resource = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "code": {"coding": [{"system": s.system_uri, "code": s.code, "display": s.display}], "text": s.display},
            "subject": {"reference": f"Patient/{ctx.patient_id}"},
            "authoredOn": ctx.today.isoformat(),
            # CRD's ServiceRequest profile requires a requester: the draft's, else the signing user.
            "requester": order.get("requester") or ({"reference": ctx.user_id} if ctx.user_id else None),
            "insurance": order.get("insurance"),
        }
        suggestions.append({"label": s.label, "uuid": str(uuid.uuid4()), "isRecommended": True,
                            "actions": [{"type": "create", "description": s.label, "resource": resource}]})
    summary = wanted[0].label if len(wanted) == 1 else f"{len(wanted)} orders the {policy.title} guideline requires"
    detail = "\n".join(f"- **{s.label}** ({s.display})" for s in wanted)
    return _card(summary, "info", "therapy-alternatives-req", ctx, evaluations, detail,
                 url=ctx.policy_links.get(policy.id), suggestions=suggestions, selectionBehavior="any")


SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"


def _form_card(policy: Policy, evaluations: list[OrderEvaluation], ctx: CardContext) -> dict:
    """A Task to complete the policy's Questionnaire, shaped as CRD's questionnaire Task example.

    The payer asks for it (requester); once answered, the response goes with the prior
    authorization, or with the claim when the payer needs none.
    """
    canonical = f"{questionnaire_url(policy)}|{policy.version}"
    payer = ctx.payer.payer
    requester: dict = {"display": payer.name}
    if payer.identifiers:
        requester["identifier"] = {"system": payer.identifiers[0].system, "value": payer.identifiers[0].value}
    with_pa = payer.prior_auth == "auth-needed"
    after = ("prior-auth-include", "Include in prior authorization") if with_pa else \
        ("initial-claim-include", "Include in initial claim")
    task = {
        "resourceType": "Task",
        "status": "ready",
        "intent": "order",
        "code": {"coding": [{"system": SDC_TEMP, "code": "complete-questionnaire"}]},
        "description": f"Complete the {policy.title} documentation form",
        "for": {"reference": f"Patient/{ctx.patient_id}"},
        "basedOn": [{"reference": e.order.reference} for e in evaluations if e.order.id],
        "authoredOn": ctx.today.isoformat(),
        "requester": requester,
        "input": [
            {"type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire"}]}, "valueCanonical": canonical},
            {"type": {"coding": [{"system": CRD_TEMP, "code": "after-completion-action"}]},
             "valueCodeableConcept": {"coding": [{"system": CRD_TEMP, "code": after[0], "display": after[1]}]}},
        ],
    }
    if with_pa:
        task["reasonCode"] = {"coding": [{"system": CRD_TEMP, "code": "reason-prior-auth"}],
                              "text": "Needed for prior authorization"}
    label = f"Add 'Complete the {policy.title} documentation form' to the task list"
    suggestion = {"label": label, "uuid": str(uuid.uuid4()),
                  "actions": [{"type": "create", "description": label, "resource": task}]}
    return _card(f"Complete the {ctx.payer.payer.name} documentation form for {_codes_label(evaluations)}", "info",
                 "coverage-info", ctx, evaluations, f"Questionnaire: {canonical}",
                 suggestions=[suggestion], selectionBehavior="at-most-one")


# Cards past max-cards are dropped from the end of this order of importance.
_PRIORITY = ("critical", "not-medically-necessary", "gap", "documentation-needed", "orders", "meets-criteria",
             "form", "guideline")


def _not_covered_card(evaluations: list[OrderEvaluation], ctx: CardContext) -> dict:
    payer, codes = ctx.payer.payer.name, _codes_label(evaluations)
    coverage = ctx.payer.coverage_reference
    if coverage:
        summary = f": {payer} coverage not in force"
        detail = f"{coverage} with {payer} is not in force ({ctx.payer.not_covering}), so {payer} will not cover {codes} under it."
    elif ctx.payer.basis == "ambiguous-coverage":
        summary = ": which coverage applies is unclear"
        detail = (f"{ctx.payer.not_covering}, so which one {codes} would fall under cannot be told. "
                  "Rank the primary one (Coverage.order) or send only it.")
    else:
        summary = ": no coverage on record"
        detail = f"No coverage ({ctx.payer.not_covering}), so {payer} cannot cover {codes}."
    detail += " Update the patient's coverage and sign again to see what the payer's guidelines need documented."
    return _card(_summary(codes, summary), "warning", "coverage-info", ctx, evaluations, detail)


def render_cards(evaluations: list[OrderEvaluation], ctx: CardContext) -> list[dict]:
    """All cards for the evaluated orders, most important first, honouring the CRD configuration.

    Without a Coverage in force nothing is covered, so that is the one thing said.
    """
    if ctx.payer.not_covering:
        return [_not_covered_card(evaluations, ctx)] if ctx.options.enabled("coverage-info") else []
    ranked: list[tuple[str, dict]] = []
    groups: dict[tuple[str, Outcome], list[OrderEvaluation]] = {}
    policies: dict[str, tuple[Policy, list[OrderEvaluation]]] = {}
    drafted = {(system, code) for e in evaluations for system, code, _ in e.order.codings}
    for evaluation in evaluations:
        if evaluation.policy is None or evaluation.outcome is Outcome.NO_POLICY:
            continue
        policies.setdefault(evaluation.policy.id, (evaluation.policy, []))[1].append(evaluation)
        if evaluation.outcome is Outcome.MEETS_CRITERIA and evaluation.evidence_gaps:
            continue  # "meets" on partial evidence is not said; the gap card says what is unknown
        groups.setdefault((evaluation.policy.id, evaluation.outcome), []).append(evaluation)
    options = ctx.options
    if options.enabled("coverage-info"):
        for (policy_id, outcome), members in groups.items():
            card = _coverage_card(policies[policy_id][0], outcome, members, ctx)
            ranked.append(("critical" if card["indicator"] == "critical" else outcome.value, card))
        gaps = [e for e in evaluations if e.evidence_gaps and e.outcome is not Outcome.NOT_MEDICALLY_NECESSARY]
        if gaps:
            ranked.append(("gap", _gap_card(gaps, ctx)))
    for policy, members in policies.values():
        open_orders = [e for e in members if e.outcome in (Outcome.DOCUMENTATION_NEEDED, Outcome.NOT_MEDICALLY_NECESSARY)]
        if options.enabled("therapy-alternatives-req") and open_orders:
            card = _orders_card(policy, open_orders, ctx, drafted)
            if card:
                ranked.append(("orders", card))
        undocumented = [e for e in members if e.outcome is Outcome.DOCUMENTATION_NEEDED]
        # The form card is a coverage-info card: with coverage-info off, no card of that type is sent.
        if options.enabled("request-form-completion") and options.enabled("coverage-info") and undocumented \
                and ctx.hook == "order-sign":
            ranked.append(("form", _form_card(policy, undocumented, ctx)))
        if options.enabled("guideline"):
            ranked.append(("guideline", _guideline_card(policy, members, ctx)))
    ranked.sort(key=lambda item: _PRIORITY.index(item[0]))
    return [card for _, card in ranked[: options.max_cards]]
