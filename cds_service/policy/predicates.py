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
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from decimal import InvalidOperation
from typing import Any
from typing import Callable

from ..codes import CodeSet
from ..codes import codings
from ..fhirjson import as_dict
from ..fhirjson import dicts
from ..fhirjson import string
from ..record import Order
from ..record import PatientRecord
from ..record import SpinalLevel
from ..record import affirmed_spans
from ..record import affirms
from ..record import body_site_levels
from ..record import concept_words
from ..record import levels_in_text
from .schema import AgePredicate
from .schema import AllergyPredicate
from .schema import ConditionPredicate
from .schema import DevicePredicate
from .schema import FhirPathPredicate
from .schema import LatestResult
from .schema import LevelScoped
from .schema import MedicationPredicate
from .schema import ObservationPredicate
from .schema import OrderPredicate
from .schema import OrderReasonPredicate
from .schema import ProcedurePredicate
from .schema import QuestionnairePredicate
from .schema import ReportPredicate
from .schema import ReviewPredicate
from .schema import ScoreReliefPredicate
from .timing import Duration
from .timing import age_on
from .timing import parse_fhir_date
from .timing import parse_fhir_moment
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


#: The most common outcome: nothing on record (built once, as most criteria come to it).
_NOTHING_FOUND = LeafOutcome(Status.UNDOCUMENTED, found=False)


def _undocumented(reason: str | None = None, found: bool = False) -> LeafOutcome:
    if reason is None and not found:
        return _NOTHING_FOUND
    return LeafOutcome(Status.UNDOCUMENTED, reason=reason, found=found)


def _ref(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


# --- reading the raw JSON ------------------------------------------------------------
# Predicates filter on the resources' JSON (codes, status, dates, sites) and then let only
# the survivors through full R4B validation (``_valid``): a malformed resource never counts
# as evidence, and the hundreds of resources no criterion reaches are never validated.


def _code(concept: Any) -> str | None:
    """First coding code of a CodeableConcept (clinicalStatus, verificationStatus …)."""
    for coding in dicts(as_dict(concept).get("coding")):
        if isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def _label(concept: Any) -> str:
    concept = as_dict(concept)
    for coding in dicts(concept.get("coding")):
        if coding.get("code"):
            return f"{coding['display']} ({coding['code']})" if coding.get("display") else str(coding["code"])
    return str(concept.get("text") or "result")


def _date(value: Any) -> date | None:
    return parse_fhir_date(value) if isinstance(value, str) else None


def _valid(ctx: Context, resource: dict) -> bool:
    return ctx.record.valid(resource)


def _at_site(ctx: Context, body_sites: list[dict], codes: CodeSet | None, at_level: bool,
             words: tuple[str, ...] = ()) -> bool:
    """Whether the sites are one of *codes* (or name one of *words*) and, *at_level*, at the level asked."""
    if codes is not None and not any(codes.matches_concept(c) for c in body_sites) and not (
            words and _names_any(concept_words(body_sites), words)):
        return False
    if at_level and ctx.level is not None:
        levels, vertebrae = body_site_levels(body_sites)
        return ctx.level in levels or any(ctx.level.touches(v) for v in vertebrae)
    return True


def _names_any(text: str, words: tuple[str, ...]) -> bool:
    """Whether lower-case *text* names one of *words*, not negated (``record.affirms``)."""
    return any(affirms(text, word.lower()) for word in words)


def _at_level(p: LevelScoped, body_sites: list[dict]) -> bool:
    """Whether *p* asks the level of a resource with these sites (one naming none may speak for every level)."""
    return p.at_level and not (p.unsited_is_every_level and not body_sites)


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
#: Diagnoses still being worked up. ICD-10-CM outpatient guideline IV.H: a "probable", "suspected" or
#: "rule out" diagnosis is not coded as established, so it neither shows nor excludes the condition.
_UNCONFIRMED = {"unconfirmed", "provisional", "differential"}


def condition(p: ConditionPredicate, ctx: Context) -> LeafOutcome:
    candidates = ctx.record.find("Condition", p.codes) if p.codes is not None else []
    if p.text:
        seen = {id(c) for c in candidates}
        candidates += [c for c in ctx.record.mentioning("Condition", p.text) if id(c) not in seen]
    supporting, contradicting, refuted, reasons = [], [], [], []
    partial = []  # on record, but not enough to establish the criterion (cited beside the reason)
    for resource in candidates:
        sites = dicts(resource.get("bodySite"))
        if not _at_site(ctx, sites, p.body_site, _at_level(p, sites)) or not _valid(ctx, resource):
            continue
        verification, clinical = _code(resource.get("verificationStatus")), _code(resource.get("clinicalStatus"))
        label = _label(resource.get("code"))
        if verification in _REFUTED:
            refuted.append(resource)
            reasons.append(f"{label} recorded as {verification}")
        elif clinical is not None and clinical not in _ACTIVE and not p.history:
            contradicting.append(resource)
            reasons.append(f"{label} is {clinical}")
        elif verification in _UNCONFIRMED:
            partial.append(resource)
            reasons.append(f"{label} recorded as {verification}, not confirmed")
        elif p.onset_before is not None and not _onset_before(resource, p.onset_before, ctx.as_of):
            partial.append(resource)
            reasons.append(f"{label} began less than {p.onset_before} before the order (or its onset is not recorded)")
        elif p.severity is not None and not p.severity.matches_concept(resource.get("severity")):
            if resource.get("severity") is None:
                partial.append(resource)
                reasons.append(f"{label} without a documented severity")
            else:
                contradicting.append(resource)
                reasons.append(f"{label} with severity {_label(resource['severity'])}")
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
    if partial:
        return LeafOutcome(Status.UNDOCUMENTED, tuple(map(_ref, partial)), "; ".join(reasons))
    return _undocumented()  # every reason above belongs to a resource in one of the lists


def _onset_before(condition: dict, period: Duration, as_of: date) -> bool:
    onset = _date(condition.get("onsetDateTime")) or _date(as_dict(condition.get("onsetPeriod")).get("start")) \
        or _date(condition.get("recordedDate"))
    return onset is not None and onset <= period.before(as_of)


_FINAL = {"final", "amended", "corrected", "appended"}


def _effective(resource: dict) -> date | None:
    period = as_dict(resource.get("effectivePeriod"))
    return (_date(resource.get("effectiveDateTime")) or _date(resource.get("effectiveInstant"))
            or _date(period.get("end")) or _date(period.get("start")) or _date(resource.get("issued")))


def _observation_values(obs: dict, codes: CodeSet) -> list[dict]:
    """The observation and/or its components that carry the value for *codes*."""
    holders = [obs] if codes.matches_concept(obs.get("code")) else []
    holders += [c for c in dicts(obs.get("component")) if codes.matches_concept(c.get("code"))]
    return holders


def _value_test(p: ObservationPredicate, holder: dict, since: int = 0) -> tuple[Status, str | None]:
    """Test one value; *since* is the days from the result to the order (for ``duration_grows``)."""
    if p.value is not None:
        quantity = as_dict(holder.get("valueQuantity"))
        raw = quantity.get("value")
        if not isinstance(raw, (int, float)) or isinstance(raw, bool):
            if isinstance(holder.get("valueString"), str):
                return Status.UNDOCUMENTED, f"result recorded as '{holder['valueString']}', not a measurement"
            return Status.UNDOCUMENTED, "result recorded without a measurable value"
        unit = quantity.get("code") or quantity.get("unit")
        try:
            measured = convert(Decimal(str(raw)), unit if isinstance(unit, str) else None, p.value.unit)
        except InvalidOperation:
            measured = None
        if measured is None:
            return Status.UNDOCUMENTED, f"unit '{unit}' cannot be compared with {p.value.unit}"
        shown = f"{raw} {quantity.get('unit') or unit or ''}".strip()
        if p.duration_grows and since > 0:
            measured += convert(Decimal(since), "d", p.value.unit)
            shown += f" when recorded, {measured:.1f} {p.value.unit} by the order"
        if p.value.holds(measured):
            return Status.MET, shown
        return Status.NOT_MET, f"{shown} (needs {p.value})"
    if p.value_in is not None or p.value_not_in is not None:
        concept = holder.get("valueCodeableConcept")
        if p.value_in is not None and p.value_in.matches_concept(concept):
            return Status.MET, None
        if p.value_not_in is not None and p.value_not_in.matches_concept(concept):
            return Status.NOT_MET, f"{_label(holder.get('code'))}: {_label(concept)}"
        return Status.UNDOCUMENTED, "result not recorded as a recognised coded answer"
    if p.value_boolean is not None:
        value = holder.get("valueBoolean")
        if not isinstance(value, bool):
            return Status.UNDOCUMENTED, "result not recorded as yes/no"
        shown = f"{_label(holder.get('code'))}: {'yes' if value else 'no'}"
        return (Status.MET, None) if value == p.value_boolean else (Status.NOT_MET, shown)
    return Status.MET, None


def _procedure_links(ctx: Context, observation: dict) -> tuple[list[dict], bool]:
    """The Procedures on record a result is linked to (partOf/focus), and whether it is linked
    to any Procedure at all (one outside the record included)."""
    refs = [ref for key in ("partOf", "focus") for ref in dicts(observation.get(key))]
    resolved = [ctx.record.resolve(ref, observation) for ref in refs]
    procedures = [r for r in resolved if r is not None and r.get("resourceType") == "Procedure"]
    unresolved = any(r is None and isinstance(ref.get("reference"), str) and "Procedure/" in ref["reference"]
                     for ref, r in zip(refs, resolved))
    return procedures, bool(procedures) or unresolved


def _linked_to(ctx: Context, procedures: list[dict], codes: CodeSet) -> bool:
    return any(codes.matches_concept(c) for r in procedures for c in ctx.record.concepts_of(r))


def _about_procedure(ctx: Context, observation: dict, codes: CodeSet) -> bool:
    """Whether a result may be about a procedure with *codes*: it is linked (partOf/focus) to no
    Procedure, or to one with such a code. A linked Procedure missing from the record is another
    one: the Procedure query asks for these codes, so one with them would have been returned."""
    procedures, linked = _procedure_links(ctx, observation)
    return not linked or _linked_to(ctx, procedures, codes)


def _performed(procedure: dict, as_of: date) -> tuple[date | None, date | None]:
    """First and last day a Procedure was performed (one in progress runs to *as_of*)."""
    return _bounds(procedure.get("performedDateTime") or procedure.get("performedString"),
                   procedure.get("performedPeriod"), as_of, procedure.get("status") == "in-progress")


def _latest_procedure(ctx: Context, codes: CodeSet, at_level: bool = False) -> date | None:
    """The last day of the latest completed Procedure with *codes*, if any. With *at_level*, one
    naming other spinal levels only does not count (one naming no level may have been at this one)."""
    days = [_performed(r, ctx.as_of)[1] for r in ctx.record.find("Procedure", codes) if r.get("status") == "completed"
            and (not at_level or _names_level_or_none(ctx, dicts(r.get("bodySite"))))]
    return max((d for d in days if d is not None), default=None)


def _names_level_or_none(ctx: Context, body_sites: list[dict]) -> bool:
    levels, vertebrae = body_site_levels(body_sites)
    return not (levels or vertebrae) or _at_site(ctx, body_sites, None, True)


def observation(p: ObservationPredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    treated = _latest_procedure(ctx, p.after_latest_procedure, p.at_level) if p.after_latest_procedure else None
    if treated is not None and (start is None or treated > start):
        start = treated  # results before the treatment describe what it treated
    dated: list[tuple[date, dict]] = []
    older: date | None = None
    for resource in ctx.record.find("Observation", p.codes):
        when = _effective(resource)
        if string(resource.get("status")) not in _FINAL or when is None:
            continue
        if p.part_of is not None and not _about_procedure(ctx, resource, p.part_of):
            continue
        sites = dicts(resource.get("bodySite"))
        if p.no_body_site and sites:
            continue
        if not _at_site(ctx, sites, p.body_site, _at_level(p, sites), p.body_site_text):
            continue
        if start is not None and when < start:
            older = max(older or when, when)
            continue
        dated.append((when, resource))
    # Only the latest day's results decide; validate those (a malformed one gives way to the day before).
    dated.sort(key=lambda item: item[0], reverse=True)
    while dated and not all(_valid(ctx, r) for when, r in dated if when == dated[0][0]):
        dated = [(when, r) for when, r in dated if _valid(ctx, r)]
    if not dated:
        if older is not None:
            if start == treated:
                return _undocumented(f"latest result is from {older}, before the {treated} treatment", found=True)
            return _undocumented(f"latest result is from {older}, before {start} ({p.within} window)", found=True)
        return _undocumented()
    latest = dated[0][0]
    since = (ctx.as_of - latest).days
    deciding = [resource for when, resource in dated if when == latest]
    if p.part_of is not None:
        # A result linked to the procedure outweighs an unlinked one the same day (another injection's relief).
        linked = [r for r in deciding if _linked_to(ctx, _procedure_links(ctx, r)[0], p.part_of)]
        deciding = linked or deciding
    statuses = [(*_value_test(p, holder, since), resource) for resource in deciding
                for holder in _observation_values(resource, p.codes)]
    for wanted in (Status.MET, Status.NOT_MET, Status.UNDOCUMENTED):
        chosen = [(reason, resource) for status, reason, resource in statuses if status is wanted]
        if chosen:
            reasons = [reason for reason, _ in chosen if reason]
            reason = f"{latest}: {'; '.join(dict.fromkeys(reasons))}" if reasons else None
            return LeafOutcome(wanted, tuple(dict.fromkeys(_ref(res) for _, res in chosen)), reason, found=True)
    return _undocumented()


def _bounds(moment: Any, period: Any, as_of: date, ongoing: bool) -> tuple[date | None, date | None]:
    """First and last day of a dateTime or Period (an open Period of something ongoing ends today)."""
    period = as_dict(period)
    if period:
        start, end = _date(period.get("start")), _date(period.get("end"))
        end = end or (as_of if ongoing else start)
        return start or end, end
    day = _date(moment)
    return day, day


def _span_check(spans: list[tuple[date, date]], min_span: Duration | None, what: str) -> tuple[bool, str | None]:
    if min_span is None:
        return True, None
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    if min_span.after(first) <= last:
        return True, f"{what} from {first} to {last}"
    return False, f"{what} documented from {first} to {last} ({(last - first).days} days); needs at least {min_span}"


def _latest_result(ctx: Context, wanted: LatestResult) -> tuple[date, dict] | None:
    """The date and resource of the latest final Observation *wanted* describes, if any."""
    found = [(when, resource) for resource in ctx.record.find("Observation", wanted.codes)
             if string(resource.get("status")) in _FINAL and (when := _effective(resource)) is not None
             and _at_site(ctx, dicts(resource.get("bodySite")), wanted.body_site, False)]
    return max(found, key=lambda item: item[0]) if found else None


def procedure(p: ProcedurePredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    dates_matter = p.within is not None or p.min_span is not None
    settled_after = _latest_result(ctx, p.after_latest_result) if p.after_latest_result else None
    spans, matched, undated, superseded, site_unknown = [], [], [], [], []
    for resource in ctx.record.find("Procedure", p.codes):
        status = resource.get("status")
        if status not in ("completed", "in-progress"):
            continue
        sites = dicts(resource.get("bodySite"))
        site_coded = any(codings(site) for site in sites)
        if not _at_site(ctx, sites, p.body_site if site_coded else None, _at_level(p, sites)):
            continue  # done elsewhere (another vein, another level)
        first, last = _performed(resource, ctx.as_of)
        if (start is not None and last is not None and last < start) or not _valid(ctx, resource):
            continue
        if first is None or last is None:
            # Done, date not recorded: enough when only "was it done" is asked.
            (undated if dates_matter or settled_after else matched).append(resource)
            continue
        if settled_after is not None and last < settled_after[0]:
            if site_coded or p.body_site is None:
                superseded.append(resource)
            continue
        if p.body_site is not None and not site_coded:
            site_unknown.append(resource)  # may or may not be the site asked about
            continue
        spans.append((first, last))
        matched.append(resource)
    if matched and p.after_latest_result and "Observation" in ctx.record.unavailable:
        return LeafOutcome(Status.UNDOCUMENTED, tuple(map(_ref, matched)),
                           "Observation could not be retrieved from the EHR, so whether it came first is unknown")
    if not matched:
        if superseded:
            when, result = settled_after
            return LeafOutcome(Status.NOT_MET, (*map(_ref, superseded), _ref(result)),
                               f"done before the {when} result that still shows what it was to treat")
        if undated:
            return LeafOutcome(Status.UNDOCUMENTED, tuple(map(_ref, undated)), "performed date not recorded",
                               found=True)
        if site_unknown:
            return LeafOutcome(Status.UNDOCUMENTED, tuple(map(_ref, site_unknown)),
                               "the site treated is not coded (bodySite)", found=True)
        return _undocumented()
    evidence = tuple(map(_ref, matched))
    if len(matched) < p.min_count:
        return LeafOutcome(Status.UNDOCUMENTED, evidence, f"{len(matched)} documented; needs {p.min_count}")
    ok, reason = _span_check(spans, p.min_span, "performed")
    if not ok and p.calendar_weeks:
        weeks = {(first + timedelta(days=d)).isocalendar()[:2] for first, last in spans
                 for d in range((last - first).days + 1)}
        if len(weeks) >= p.min_span.amount:
            ok, reason = True, f"performed in {len(weeks)} calendar weeks, {min(spans)[0]} to {max(e for _, e in spans)}"
        else:
            reason += f", or in {p.min_span.amount} calendar weeks ({len(weeks)} on record)"
    return LeafOutcome(Status.MET if ok else Status.UNDOCUMENTED, evidence, reason)


def report(p: ReportPredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    treated = _latest_procedure(ctx, p.after_latest_procedure) if p.after_latest_procedure else None
    follows = p.min_gap.after(treated) if treated is not None and p.min_gap else treated
    superseding = _latest_result(ctx, p.superseded_by) if p.superseded_by else None
    hits, wrong_conclusion, contrary = [], [], []
    concluded = p.conclusion is not None or bool(p.conclusion_text)
    by_level = p.at_level and ctx.level is not None
    reports = []
    for resource in ctx.record.find("DiagnosticReport", p.codes):
        if string(resource.get("status")) not in _FINAL or not _valid(ctx, resource):
            continue
        passages = _passages_at_level(p, ctx, resource) if by_level else None
        if by_level and not passages:
            continue  # speaks of other levels
        reports.append((_effective(resource), resource, passages))
    latest = None
    if by_level and reports:  # the latest imaging of the level decides
        latest = max((when for when, _, _ in reports if when is not None), default=None)
        reports = [item for item in reports if item[0] == latest]
    said = None
    for when, resource, passages in reports:
        verdict, passage = _reading(p, resource, passages) if concluded else (True, None)
        if verdict:
            hits.append((when, resource))
            said = said or passage
        elif verdict is False and by_level:
            contrary.append((resource, passage))
        elif passages or resource.get("conclusionCode") or (p.conclusion_text and resource.get("conclusion")):
            wrong_conclusion.append(resource)  # concludes something else, in the form asked for
    if not concluded:
        for resource in ctx.record.find("DocumentReference", p.codes):
            if resource.get("status") != "current" or not _valid(ctx, resource):
                continue
            period = as_dict(as_dict(resource.get("context")).get("period"))
            hits.append((_date(resource.get("date")) or _date(period.get("end")) or _date(period.get("start")),
                         resource))
    recent = [(when, r) for when, r in hits if when is not None and (start is None or when >= start)
              and (follows is None or when >= follows)]
    current = [r for when, r in recent if superseding is None or when >= superseding[0]]
    if current:
        return LeafOutcome(Status.MET, tuple(map(_ref, current)),
                           f"{latest}: \"{_quote(said)}\" ({ctx.level.label})" if by_level and said else None)
    if recent:
        return _undocumented(f"the report predates {_ref(superseding[1])} of {superseding[0]}", found=True)
    older = max((w for w, _ in hits if w is not None), default=None)
    if older is not None and follows is not None and older < follows:
        gap = f"less than {p.min_gap} after" if p.min_gap else "before"
        return _undocumented(f"latest report is from {older}, {gap} the {treated} treatment", found=True)
    if older is not None:
        return _undocumented(f"latest report is from {older}, before {start} ({p.within} window)", found=True)
    if contrary:
        return LeafOutcome(Status.NOT_MET, tuple(_ref(r) for r, _ in contrary),
                           f"{latest}: \"{_quote(contrary[0][1])}\" ({ctx.level.label})")
    if wrong_conclusion and by_level:
        # Silent on it: like no report at all where absence decides (``absent``).
        return LeafOutcome(Status.UNDOCUMENTED, tuple(map(_ref, wrong_conclusion)),
                           f"the latest report on {ctx.level.label} ({latest}) does not state it", found=False)
    if wrong_conclusion:
        return _undocumented("report on record without the required finding", found=True)
    return _undocumented()


def _passages_at_level(p: ReportPredicate, ctx: Context, report: dict) -> list[str]:
    """What the conclusion says about the level asked (``unsited_is_every_level``: all of one naming no level)."""
    conclusion = string(report.get("conclusion"))
    passages = [text for levels, text in ctx.record.level_passages(conclusion) if ctx.level in levels]
    if not passages and p.unsited_is_every_level and conclusion and not levels_in_text(conclusion)[0]:
        passages = [conclusion]
    return passages


def _reading(p: ReportPredicate, report: dict, passages: list[str] | None) -> tuple[bool | None, str | None]:
    """Whether *report* concludes what *p* asks (True), states what rules it out (False, ``conclusion_text_not``)
    or neither (None), with the passage that tells. A coded conclusion, or the words in the conclusion
    narrative; in *passages*, the parts of it about one level, when given. Where a passage states both
    (moderate central, mild foraminal stenosis), what *p* asks wins."""
    if passages is None:
        concepts = dicts(report.get("conclusionCode"))
        if p.conclusion is not None and any(p.conclusion.matches_concept(c) for c in concepts):
            return True, None
        if not p.conclusion_text:
            return None, None
        passages = [concept_words(concepts, string(report.get("conclusion")))]
    contrary = None
    for passage in passages:
        text = passage.lower()
        if not p.conclusion_text_not:
            if _names_any(text, p.conclusion_text):
                return True, passage
            continue
        stated = [span for word in p.conclusion_text for span in affirmed_spans(text, word.lower())]
        if not stated:
            contrary = contrary or (passage if _names_any(text, p.conclusion_text_not) else None)
            continue
        # A phrase inside a ruling-out one is not stated: "mild to moderate stenosis" names "moderate … stenosis".
        ruled = [span for word in p.conclusion_text_not for span in affirmed_spans(text, word.lower())]
        if any(not any(r_start <= start and end <= r_end for r_start, r_end in ruled) for start, end in stated):
            return True, passage
        contrary = contrary or passage
    return (False, contrary) if contrary else (None, None)


def _quote(passage: str, limit: int = 160) -> str:
    passage = " ".join(passage.split())
    return passage if len(passage) <= limit else passage[:limit - 1] + "…"


def score_relief(p: ScoreReliefPredicate, ctx: Context) -> LeafOutcome:
    start = _window_start(ctx, p.within)
    done = [(moment, r) for r in ctx.record.find("Procedure", p.procedure) if r.get("status") == "completed"
            and (moment := parse_fhir_moment(r.get("performedDateTime") or as_dict(r.get("performedPeriod")).get("start")))
            and (start is None or moment[0] >= start) and _valid(ctx, r)]
    if not done:
        return _undocumented()
    (day, time), procedure = max(done, key=lambda item: _sort_key(item[0]))
    scores = []
    for resource in ctx.record.find("Observation", p.codes):
        moment = parse_fhir_moment(resource.get("effectiveDateTime") or resource.get("effectiveInstant")
                                   or as_dict(resource.get("effectivePeriod")).get("start"))
        # A 0-10 score is a number: charts send it as a Quantity ({score}) or as a plain valueInteger.
        raw = as_dict(resource.get("valueQuantity")).get("value", resource.get("valueInteger"))
        if moment is None or string(resource.get("status")) not in _FINAL or type(raw) not in (int, float) \
                or not _about_procedure(ctx, resource, p.procedure) or not _valid(ctx, resource):
            continue
        scores.append((moment, Decimal(str(raw)), resource))
    before = [s for s in scores if _earlier(s[0], (day, time)) and s[0][0] >= p.baseline_within.before(day)]
    after = [s for s in scores if not _earlier(s[0], (day, time)) and s[0][0] <= p.measured_within.after(day)]
    linked = [s for s in after if _procedure_links(ctx, s[2])[1]]
    if not linked and after and p.same_day_others is not None:
        others = [r for r in ctx.record.find("Procedure", p.same_day_others) if r.get("status") == "completed"
                  and _performed(r, ctx.as_of)[0] == day]
        if others:
            return _undocumented(f"{_ref(others[0])} was also done on {day}: a score not linked (partOf) to the "
                                 "block cannot tell which injection relieved the pain", found=True)
    after = linked or after
    if not before or not after:
        missing = "before" if not before else "after"
        return _undocumented(f"no score {missing} the {day} procedure", found=bool(scores))
    (_, baseline, first), (_, result, second) = max(before, key=lambda s: _sort_key(s[0])), min(after, key=lambda s: s[1])
    if baseline <= 0:
        return _undocumented(f"score before the {day} procedure is {baseline}: no pain to relieve", found=True)
    relief = (baseline - result) / baseline * 100
    status = Status.MET if p.value.holds(relief) else Status.NOT_MET
    return LeafOutcome(status, (_ref(procedure), _ref(first), _ref(second)),
                       f"score {baseline} before and {result} after the {day} procedure: {relief:.0f}% relief", found=True)


def _earlier(moment: tuple[date, datetime | None], than: tuple[date, datetime | None]) -> bool:
    """Whether *moment* comes before *than*: by the clock when both give a time, else by the day
    (a score the same day without a time cannot be the baseline)."""
    if moment[1] is not None and than[1] is not None:
        return moment[1] < than[1]
    return moment[0] < than[0]


def _sort_key(moment: tuple[date, datetime | None]) -> tuple[date, datetime]:
    """Orders moments by day, then by time (a time-less one first within its day)."""
    day, time = moment
    return day, time or datetime.min.replace(tzinfo=timezone.utc)


def allergy(p: AllergyPredicate, ctx: Context) -> LeafOutcome:
    supporting, contradicting = [], []
    for resource in ctx.record.resources("AllergyIntolerance"):
        texts = " | ".join([ctx.record.text_of(resource)] + [
            str(n.get("text", "")).lower() for n in dicts(resource.get("note"))])
        coded = p.codes is not None and any(p.codes.matches_concept(c) for c in ctx.record.concepts_of(resource))
        if not (coded or _names_any(texts, p.text)) or not _valid(ctx, resource):
            continue
        if _code(resource.get("verificationStatus")) in _REFUTED or \
                _code(resource.get("clinicalStatus")) in ("inactive", "resolved"):
            contradicting.append(resource)
        else:
            supporting.append(resource)
    if supporting:
        return LeafOutcome(Status.MET, tuple(map(_ref, supporting)))
    if contradicting:
        return LeafOutcome(Status.NOT_MET, tuple(map(_ref, contradicting)), "allergy recorded as refuted or resolved")
    return _undocumented()


# Where each kind of usage record keeps its timing: (moment, period, fallback moment).
_USAGE_TIMING = {
    "DeviceRequest": ("occurrenceDateTime", "occurrencePeriod", "authoredOn"),
    "DeviceUseStatement": ("timingDateTime", "timingPeriod", "recordedOn"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", None),
}


def _usage_span(resource: dict, as_of: date) -> tuple[date | None, date | None]:
    """When a device or drug was used; an active order or statement without an end runs until today."""
    ongoing = resource.get("status") == "active"
    if resource["resourceType"] == "MedicationRequest":
        validity = as_dict(resource.get("dispenseRequest")).get("validityPeriod")
        first, last = _bounds(resource.get("authoredOn"), validity, as_of, ongoing)
        return first, (as_of if ongoing and not validity else last)
    moment_key, period_key, fallback = _USAGE_TIMING[resource["resourceType"]]
    moment = resource.get(moment_key) or (resource.get(fallback) if fallback else None)
    first, last = _bounds(moment, resource.get(period_key), as_of, ongoing)
    if resource["resourceType"] == "DeviceRequest" and not resource.get(period_key) and ongoing:
        last = as_of
    return first, last


def _usage(types: tuple[str, ...], codes: CodeSet, min_duration: Duration | None, within: Duration | None,
           ctx: Context, what: str) -> LeafOutcome:
    candidates = [hit for rtype in types for hit in ctx.record.find(rtype, codes)]
    start = _window_start(ctx, within)
    spans = []
    for resource in candidates:
        if resource.get("status") not in ("active", "completed"):
            continue
        first, last = _usage_span(resource, ctx.as_of)
        if first is None or last is None or (start is not None and last < start) or not _valid(ctx, resource):
            continue
        spans.append((resource, first, last))
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
    others = [o for o in ctx.record.orders
              if o is not ctx.order and any(p.codes.contains(system, code) for system, code, _ in o.codings)]
    if p.level is None:
        return LeafOutcome(Status.MET, (others[0].reference,)) if others else \
            LeafOutcome(Status.NOT_MET, reason="not ordered together with this order")
    at_level = [o for o in others if any(level.label == p.level for level in o.levels)]
    if at_level:
        return LeafOutcome(Status.MET, (at_level[0].reference,))
    unnamed = [o for o in others if not o.levels]
    if unnamed:
        return _undocumented(f"{unnamed[0].reference} does not name its spinal levels", found=True)
    if others:
        return LeafOutcome(Status.NOT_MET, tuple(o.reference for o in others), f"not ordered at {p.level}")
    return LeafOutcome(Status.NOT_MET, reason="not ordered together with this order")


def order_reason(p: OrderReasonPredicate, ctx: Context) -> LeafOutcome:
    reasons = list(ctx.order.reason_codings)
    for reference in ctx.order.reason_references:
        target = ctx.record.resolve(reference, ctx.order.resource)
        for concept in (ctx.record.concepts_of(target) if target else ()):
            reasons += [(c.get("system"), c.get("code")) for c in dicts(concept.get("coding"))]
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


def review(p: ReviewPredicate, ctx: Context) -> LeafOutcome:
    return _undocumented("decided by individual review, not from the record")


EVALUATORS: dict[type, Callable[[Any, Context], LeafOutcome]] = {
    AgePredicate: age,
    ConditionPredicate: condition,
    ObservationPredicate: observation,
    ProcedurePredicate: procedure,
    ReportPredicate: report,
    ScoreReliefPredicate: score_relief,
    AllergyPredicate: allergy,
    DevicePredicate: device,
    MedicationPredicate: medication,
    QuestionnairePredicate: questionnaire,
    OrderPredicate: order,
    OrderReasonPredicate: order_reason,
    FhirPathPredicate: fhirpath,
    ReviewPredicate: review,
}
