"""Leaf predicates: one function per vocabulary entry, each returning a three-valued outcome.

The rule every predicate follows: no evidence is *undocumented*; evidence
that contradicts the criterion (a refuted or resolved diagnosis, a value on
the wrong side of a threshold) makes it *not met*; evidence that supports it
makes it *met* and is cited by reference.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from decimal import InvalidOperation
from typing import Any
from typing import Callable
from typing import Iterable

from ..codes import CodeSet
from ..record import Order
from ..record import PatientRecord
from ..record import SpinalLevel
from ..record import body_site_levels
from .schema import AgePredicate
from .schema import AllergyPredicate
from .schema import ConditionPredicate
from .schema import DevicePredicate
from .schema import FhirPathPredicate
from .schema import MedicationPredicate
from .schema import ObservationPredicate
from .schema import OrderPredicate
from .schema import OrderReasonPredicate
from .schema import ProcedurePredicate
from .schema import QuestionnairePredicate
from .schema import ReportPredicate
from .timing import Duration
from .timing import age_on
from .timing import parse_fhir_date
from .units import convert


class Status(str, enum.Enum):
    MET = "met"
    NOT_MET = "not-met"
    UNDOCUMENTED = "undocumented"


@dataclass(frozen=True)
class Context:
    """What a predicate may look at: the record, the order, the as-of date and the spinal level."""

    record: PatientRecord
    order: Order
    as_of: date
    level: SpinalLevel | None = None


@dataclass(frozen=True)
class LeafOutcome:
    status: Status
    evidence: tuple[str, ...] = ()
    reason: str | None = None
    #: False when nothing relevant was found at all (lets ``absent: not-met`` apply).
    found: bool = True


def _undocumented(reason: str | None = None, found: bool = False) -> LeafOutcome:
    return LeafOutcome(Status.UNDOCUMENTED, reason=reason, found=found)


def _ref(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _code(concept: Any) -> str | None:
    """First coding code of a typed CodeableConcept (clinicalStatus, verificationStatus …)."""
    if concept is None:
        return None
    for coding in concept.coding or ():
        if coding.code:
            return coding.code
    return None


def _concept_dicts(concepts: Iterable[Any] | None) -> list[dict]:
    return [c.model_dump(mode="json") for c in concepts or () if c is not None]


def _concept_dict(concept: Any) -> dict | None:
    return concept.model_dump(mode="json") if concept is not None else None


def _at_site(ctx: Context, body_sites: list[dict], codes: CodeSet | None, at_level: bool) -> bool:
    if codes is not None and not any(codes.matches_concept(c) for c in body_sites):
        return False
    if at_level and ctx.level is not None:
        levels, vertebrae = body_site_levels(body_sites)
        return ctx.level in levels or any(ctx.level.touches(v) for v in vertebrae)
    return True


def _typed(ctx: Context, resources: Iterable[dict]) -> list[tuple[dict, Any]]:
    return [(r, t) for r in resources if (t := ctx.record.typed(r)) is not None]


def _window_start(ctx: Context, within: Duration | None) -> date | None:
    return within.before(ctx.as_of) if within is not None else None


# --- predicates -------------------------------------------------------------------


def age(p: AgePredicate, ctx: Context) -> LeafOutcome:
    birth = ctx.record.birth_date()
    if birth is None:
        return _undocumented("date of birth not on record")
    years = age_on(birth, ctx.as_of)
    ok = (p.min is None or years >= p.min) and (p.max is None or years <= p.max)
    patient = ctx.record.patient
    evidence = (_ref(patient),) if patient else ()
    return LeafOutcome(Status.MET if ok else Status.NOT_MET, evidence, f"patient is {years} on {ctx.as_of}")


_ACTIVE = {"active", "recurrence", "relapse"}
_REFUTED = {"refuted", "entered-in-error"}


def _text_of(record: PatientRecord, resource: dict) -> str:
    """Lower-cased words of a resource's coded concepts (text and displays), for text predicates."""
    return " ".join(
        str(t) for c in record.concepts_of(resource)
        for t in [c.get("text")] + [x.get("display") for x in c.get("coding") or () if isinstance(x, dict)] if t
    ).lower()


def condition(p: ConditionPredicate, ctx: Context) -> LeafOutcome:
    candidates = ctx.record.find("Condition", p.codes) if p.codes is not None else []
    if p.text:
        words = [w.lower() for w in p.text]
        seen = {id(c) for c in candidates}
        candidates += [c for c in ctx.record.resources("Condition")
                       if id(c) not in seen and any(w in _text_of(ctx.record, c) for w in words)]
    supporting, contradicting, refuted, reasons = [], [], [], []
    for resource, typed in _typed(ctx, candidates):
        if not _at_site(ctx, _concept_dicts(typed.bodySite), p.body_site, p.at_level):
            continue
        verification, clinical = _code(typed.verificationStatus), _code(typed.clinicalStatus)
        label = _label(typed.code)
        if verification in _REFUTED:
            refuted.append(resource)
            reasons.append(f"{label} recorded as {verification}")
        elif clinical is not None and clinical not in _ACTIVE and not p.history:
            contradicting.append(resource)
            reasons.append(f"{label} is {clinical}")
        elif p.onset_before is not None and not _onset_before(typed, p.onset_before, ctx.as_of):
            reasons.append(f"{label} began less than {p.onset_before} before the order (or its onset is not recorded)")
        elif p.severity is not None and not p.severity.matches_concept(_concept_dict(typed.severity)):
            if typed.severity is None:
                reasons.append(f"{label} without a documented severity")
            else:
                contradicting.append(resource)
                reasons.append(f"{label} with severity {_label(typed.severity)}")
        else:
            supporting.append(resource)
    if supporting:
        return LeafOutcome(Status.MET, tuple(map(_ref, supporting)))
    # A refuted diagnosis outweighs the order's stated reason; a resolved one does not
    # (the order says the condition is current again).
    if refuted:
        return LeafOutcome(Status.NOT_MET, tuple(map(_ref, refuted + contradicting)), "; ".join(reasons))
    if p.codes is not None and p.severity is None and p.body_site is None and not p.at_level and not p.onset_before:
        if any(p.codes.contains(system, code) for system, code in ctx.order.reason_codings):
            return LeafOutcome(Status.MET, (ctx.order.reference,), "diagnosis stated on the order")
    if contradicting:
        return LeafOutcome(Status.NOT_MET, tuple(map(_ref, contradicting)), "; ".join(reasons))
    return _undocumented("; ".join(reasons) or None, found=bool(reasons))


def _onset_before(condition: Any, period: Duration, as_of: date) -> bool:
    onset = parse_fhir_date(condition.onsetDateTime or (condition.onsetPeriod.start if condition.onsetPeriod else None)
                            or condition.recordedDate)
    return onset is not None and onset <= period.before(as_of)


def _label(concept: Any) -> str:
    if concept is None:
        return "condition"
    for coding in concept.coding or ():
        if coding.code:
            return f"{coding.display} ({coding.code})" if coding.display else coding.code
    return concept.text or "condition"


_FINAL = {"final", "amended", "corrected", "appended"}


def _observation_date(obs: Any) -> date | None:
    period = obs.effectivePeriod
    return parse_fhir_date(
        obs.effectiveDateTime or obs.effectiveInstant or (period.end or period.start if period else None) or obs.issued
    )


def _observation_values(obs: Any, codes: CodeSet) -> list[Any]:
    """The observation(s) carrying the value for *codes*: itself and/or matching components."""
    holders = []
    if codes.matches_concept(_concept_dict(obs.code)):
        holders.append(obs)
    for component in obs.component or ():
        if codes.matches_concept(_concept_dict(component.code)):
            holders.append(component)
    return holders


def _value_test(p: ObservationPredicate, holder: Any) -> tuple[Status, str | None]:
    if p.value is not None:
        quantity = holder.valueQuantity
        if quantity is None or quantity.value is None:
            if getattr(holder, "valueString", None):
                return Status.UNDOCUMENTED, f"result recorded as '{holder.valueString}', not a measurement"
            return Status.UNDOCUMENTED, "result recorded without a measurable value"
        try:
            measured = convert(Decimal(str(quantity.value)), quantity.code or quantity.unit, p.value.unit)
        except InvalidOperation:
            measured = None
        if measured is None:
            return Status.UNDOCUMENTED, f"unit '{quantity.code or quantity.unit}' cannot be compared with {p.value.unit}"
        shown = f"{quantity.value} {quantity.unit or quantity.code or ''}".strip()
        if p.value.holds(measured):
            return Status.MET, shown
        return Status.NOT_MET, f"{shown} (needs {p.value})"
    if p.value_in is not None or p.value_not_in is not None:
        concept = _concept_dict(holder.valueCodeableConcept)
        if p.value_in is not None and p.value_in.matches_concept(concept):
            return Status.MET, None
        if p.value_not_in is not None and p.value_not_in.matches_concept(concept):
            return Status.NOT_MET, f"{_label(holder.code)}: {_label(holder.valueCodeableConcept)}"
        return Status.UNDOCUMENTED, "result not recorded as a recognised coded answer"
    if p.value_boolean is not None:
        value = getattr(holder, "valueBoolean", None)
        if value is None:
            return Status.UNDOCUMENTED, "result not recorded as yes/no"
        shown = f"{_label(holder.code)}: {'yes' if value else 'no'}"
        return (Status.MET, None) if value == p.value_boolean else (Status.NOT_MET, shown)
    return Status.MET, None


def observation(p: ObservationPredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    dated: list[tuple[date, dict, Any]] = []
    older: date | None = None
    for resource, typed in _typed(ctx, ctx.record.find("Observation", p.codes)):
        if typed.status not in _FINAL:
            continue
        if not _at_site(ctx, _concept_dicts([typed.bodySite]), p.body_site, p.at_level):
            continue
        when = _observation_date(typed)
        if when is None:
            continue
        if start is not None and when < start:
            older = max(older or when, when)
            continue
        dated.append((when, resource, typed))
    if not dated:
        if older is not None:
            return _undocumented(f"latest result is from {older}, before {start} ({p.within} window)", found=True)
        return _undocumented()
    latest = max(d for d, _, _ in dated)
    statuses: list[tuple[Status, str | None, dict]] = []
    for when, resource, typed in dated:
        if when != latest:
            continue
        for holder in _observation_values(typed, p.codes):
            status, reason = _value_test(p, holder)
            statuses.append((status, reason, resource))
    for wanted in (Status.MET, Status.NOT_MET, Status.UNDOCUMENTED):
        chosen = [(r, res) for s, r, res in statuses if s is wanted]
        if chosen:
            reasons = [r for r, _ in chosen if r]
            reason = f"{latest}: {'; '.join(dict.fromkeys(reasons))}" if reasons else None
            return LeafOutcome(wanted, tuple(dict.fromkeys(_ref(res) for _, res in chosen)), reason, found=True)
    return _undocumented()


def _period_bounds(date_value: Any, period: Any, as_of: date, ongoing: bool) -> tuple[date | None, date | None]:
    if period is not None:
        start = parse_fhir_date(period.start)
        end = parse_fhir_date(period.end) or (as_of if ongoing else start)
        return start or end, end
    day = parse_fhir_date(date_value)
    return day, day


def _span_check(spans: list[tuple[date, date]], min_span: Duration | None, what: str) -> tuple[bool, str | None]:
    if min_span is None:
        return True, None
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    if min_span.after(first) <= last:
        return True, f"{what} from {first} to {last}"
    return False, f"{what} documented from {first} to {last} ({(last - first).days} days); needs at least {min_span}"


def procedure(p: ProcedurePredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    spans, matched = [], []
    for resource, typed in _typed(ctx, ctx.record.find("Procedure", p.codes)):
        if typed.status not in ("completed", "in-progress"):
            continue
        if not _at_site(ctx, _concept_dicts(typed.bodySite), None, p.at_level):
            continue
        first, last = _period_bounds(typed.performedDateTime or typed.performedString, typed.performedPeriod,
                                     ctx.as_of, typed.status == "in-progress")
        if first is None or last is None or (start is not None and last < start):
            continue
        spans.append((first, last))
        matched.append(resource)
    if not matched:
        return _undocumented()
    evidence = tuple(map(_ref, matched))
    if len(matched) < p.min_count:
        return LeafOutcome(Status.UNDOCUMENTED, evidence, f"{len(matched)} documented; needs {p.min_count}")
    ok, reason = _span_check(spans, p.min_span, "performed")
    return LeafOutcome(Status.MET if ok else Status.UNDOCUMENTED, evidence, reason)


def report(p: ReportPredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    hits, older, wrong_conclusion = [], None, []
    for resource, typed in _typed(ctx, ctx.record.find("DiagnosticReport", p.codes)):
        if typed.status not in _FINAL:
            continue
        period = typed.effectivePeriod
        when = parse_fhir_date(typed.effectiveDateTime or (period.end or period.start if period else None) or typed.issued)
        if p.conclusion is not None:
            conclusions = _concept_dicts(typed.conclusionCode)
            if not any(p.conclusion.matches_concept(c) for c in conclusions):
                if conclusions:
                    wrong_conclusion.append(resource)
                continue
        hits.append((when, resource))
    if p.conclusion is None:
        for resource, typed in _typed(ctx, ctx.record.find("DocumentReference", p.codes)):
            if typed.status != "current":
                continue
            period = typed.context.period if typed.context else None
            hits.append((parse_fhir_date(typed.date or (period.end or period.start if period else None)), resource))
    recent = [r for when, r in hits if when is not None and (start is None or when >= start)]
    if recent:
        return LeafOutcome(Status.MET, tuple(map(_ref, recent)))
    older = max((w for w, _ in hits if w is not None), default=None)
    if older is not None:
        return _undocumented(f"latest report is from {older}, before {start} ({p.within} window)", found=True)
    if wrong_conclusion:
        return _undocumented("report on record without the required finding", found=True)
    return _undocumented()


def allergy(p: AllergyPredicate, ctx: Context) -> LeafOutcome:
    words = [w.lower() for w in p.text]
    supporting, contradicting = [], []
    for resource in ctx.record.resources("AllergyIntolerance"):
        texts = _text_of(ctx.record, resource) + " " + " ".join(
            str(n.get("text", "")) for n in resource.get("note") or () if isinstance(n, dict)).lower()
        coded = p.codes is not None and any(p.codes.matches_concept(c) for c in ctx.record.concepts_of(resource))
        if not coded and not any(w in texts for w in words):
            continue
        typed = ctx.record.typed(resource)
        if typed is None:
            continue
        if _code(typed.verificationStatus) in _REFUTED or _code(typed.clinicalStatus) in ("inactive", "resolved"):
            contradicting.append(resource)
        else:
            supporting.append(resource)
    if supporting:
        return LeafOutcome(Status.MET, tuple(map(_ref, supporting)))
    if contradicting:
        return LeafOutcome(Status.NOT_MET, tuple(map(_ref, contradicting)), "allergy recorded as refuted or resolved")
    return _undocumented()


def _usage_spans(ctx: Context, resources: list[tuple[dict, Any]]) -> list[tuple[dict, date, date]]:
    spans = []
    for resource, typed in resources:
        rtype = resource["resourceType"]
        if rtype == "DeviceRequest":
            if typed.status not in ("active", "completed"):
                continue
            first, last = _period_bounds(typed.occurrenceDateTime or typed.authoredOn, typed.occurrencePeriod,
                                         ctx.as_of, typed.status == "active")
            if typed.occurrencePeriod is None and typed.status == "active":
                last = ctx.as_of
        elif rtype == "DeviceUseStatement":
            if typed.status not in ("active", "completed"):
                continue
            first, last = _period_bounds(typed.timingDateTime or typed.recordedOn, typed.timingPeriod,
                                         ctx.as_of, typed.status == "active")
        elif rtype == "MedicationStatement":
            if typed.status not in ("active", "completed"):
                continue
            first, last = _period_bounds(typed.effectiveDateTime, typed.effectivePeriod, ctx.as_of, typed.status == "active")
        else:  # MedicationRequest
            if typed.status not in ("active", "completed"):
                continue
            validity = typed.dispenseRequest.validityPeriod if typed.dispenseRequest else None
            first, last = _period_bounds(typed.authoredOn, validity, ctx.as_of, typed.status == "active")
            if validity is None and typed.status == "active":
                last = ctx.as_of
        if first is not None and last is not None:
            spans.append((resource, first, last))
    return spans


def _usage(types: tuple[str, ...], codes: CodeSet, min_duration: Duration | None, within: Duration | None,
           ctx: Context, what: str) -> LeafOutcome:
    candidates = [hit for rtype in types for hit in ctx.record.find(rtype, codes)]
    spans = _usage_spans(ctx, _typed(ctx, candidates))
    start = _window_start(ctx, within)
    spans = [s for s in spans if start is None or s[2] >= start]
    if not spans:
        return _undocumented(found=bool(candidates))
    evidence = tuple(dict.fromkeys(_ref(r) for r, _, _ in spans))
    ok, reason = _span_check([(a, b) for _, a, b in spans], min_duration, what)
    return LeafOutcome(Status.MET if ok else Status.UNDOCUMENTED, evidence, reason)


def device(p: DevicePredicate, ctx: Context) -> LeafOutcome:
    return _usage(("DeviceRequest", "DeviceUseStatement"), p.codes, p.min_duration, p.within, ctx, "used")


def medication(p: MedicationPredicate, ctx: Context) -> LeafOutcome:
    return _usage(("MedicationStatement", "MedicationRequest"), p.codes, p.min_duration, p.within, ctx, "taken")


def questionnaire(p: QuestionnairePredicate, ctx: Context) -> LeafOutcome:
    answer = ctx.record.answers(p.questionnaire).get(p.link_id)
    if answer is None:
        return _undocumented()
    if isinstance(answer.value, bool):
        met = answer.value == p.answer
        return LeafOutcome(Status.MET if met else Status.NOT_MET, (answer.reference,))
    return _undocumented("answer is not yes/no", found=True)


def order(p: OrderPredicate, ctx: Context) -> LeafOutcome:
    # The draft orders are the whole set being signed, so "not among them" is a fact, not a gap.
    for other in ctx.record.orders:
        if other is ctx.order:
            continue
        if any(p.codes.contains(system, code) for system, code, _ in other.codings):
            return LeafOutcome(Status.MET, (other.reference,))
    return LeafOutcome(Status.NOT_MET, reason="not ordered together with this order")


def order_reason(p: OrderReasonPredicate, ctx: Context) -> LeafOutcome:
    reasons = list(ctx.order.reason_codings)
    for reference in ctx.order.reason_references:
        target = ctx.record.resolve(reference, ctx.order.resource)
        for concept in (ctx.record.concepts_of(target) if target else ()):
            reasons += [(c.get("system"), c.get("code")) for c in concept.get("coding") or () if c]
    if not reasons:
        return _undocumented("the order carries no reason code")
    if any(p.codes.contains(system, code) for system, code in reasons):
        return LeafOutcome(Status.MET, (ctx.order.reference,))
    return LeafOutcome(Status.NOT_MET, (ctx.order.reference,), "the order's reason codes do not match")


def fhirpath(p: FhirPathPredicate, ctx: Context) -> LeafOutcome:
    try:
        result = p.expression(ctx.record.as_bundle(), {"order": ctx.order.resource, "asOf": ctx.as_of.isoformat()})
    except Exception as exc:  # fhirpathpy raises bare Exception for evaluation errors
        return _undocumented(f"expression could not be evaluated ({type(exc).__name__})")
    if not result:
        return _undocumented()
    value = result[0] if len(result) == 1 else True
    if value is False:
        return LeafOutcome(Status.NOT_MET, reason="expression is false")
    return LeafOutcome(Status.MET)


EVALUATORS: dict[type, Callable[[Any, Context], LeafOutcome]] = {
    AgePredicate: age,
    ConditionPredicate: condition,
    ObservationPredicate: observation,
    ProcedurePredicate: procedure,
    ReportPredicate: report,
    AllergyPredicate: allergy,
    DevicePredicate: device,
    MedicationPredicate: medication,
    QuestionnairePredicate: questionnaire,
    OrderPredicate: order,
    OrderReasonPredicate: order_reason,
    FhirPathPredicate: fhirpath,
}
