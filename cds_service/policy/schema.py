"""The policy file format: provenance, rules per billing code, and a tree of criteria.

A criterion is either a composite (``all_of``, ``any_of``, ``not``, ``at_least``,
``when``/``then``, ``per_level``, ``ref``) or a leaf carrying exactly one
predicate from the closed vocabulary in :data:`PREDICATES`. Anything else in a
policy file is a load error that names the file and line (see ``loader``).
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated
from typing import Any
from typing import Literal
from typing import Union

from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Discriminator
from pydantic import Field
from pydantic import Tag
from pydantic import field_validator
from pydantic import model_validator

from ..codes import CPT
from ..codes import HCPCS
from ..codes import CodeSet
from ..codes import compile_codes
from ..record import levels_in_text
from .fhirpath import CompiledFhirPath
from .fhirpath import compile_fhirpath
from .timing import Duration
from .units import convert
from .units import known_unit

_ID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _codes(value: Any) -> CodeSet:
    if isinstance(value, CodeSet):
        return value
    if not isinstance(value, dict) or not value:
        raise ValueError("codes must be a mapping like {icd10cm: [M54.16], snomed: ['33396006']}")
    spec = {}
    for key, codes in value.items():
        if isinstance(codes, (str, int)):
            codes = [codes]
        if not isinstance(codes, list) or not codes:
            raise ValueError(f"codes for '{key}' must be a non-empty list")
        spec[str(key)] = [str(c) for c in codes]
    return compile_codes(spec)


def _duration(value: Any) -> Duration:
    return value if isinstance(value, Duration) else Duration.parse(str(value))


Codes = Annotated[CodeSet, BeforeValidator(_codes)]
Period = Annotated[Duration, BeforeValidator(_duration)]

_COMPARISON = re.compile(r"^\s*(>=|<=|>|<|=)\s*(-?\d+(?:\.\d+)?)\s*(\S.*)?$")


class Comparison(BaseModel):
    """A threshold such as ``>= 500 ms``; the unit is UCUM."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    op: Literal[">", ">=", "<", "<=", "="]
    value: Decimal
    unit: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _COMPARISON.match(data)
            if not match:
                raise ValueError(f"'{data}' is not a comparison like '>= 500 ms' or '> 80 %'")
            return {"op": match.group(1), "value": match.group(2), "unit": (match.group(3) or "1").strip()}
        return data

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str) -> str:
        if not known_unit(unit):
            raise ValueError(f"unit '{unit}' is not a supported UCUM unit")
        return unit

    def holds(self, value: Decimal) -> bool:
        return {
            ">": value > self.value,
            ">=": value >= self.value,
            "<": value < self.value,
            "<=": value <= self.value,
            "=": value == self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value} {self.unit}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# --- predicates: the closed vocabulary -------------------------------------------------


class _Predicate(_Strict):
    """A predicate's parameters; ``kind`` (set by the leaf from its key) selects the model."""

    model_config = ConfigDict(populate_by_name=True)


class LevelScoped(_Predicate):
    """A predicate that can be asked per spinal level (inside ``per_level``)."""

    at_level: bool = False
    #: With ``at_level``: a resource naming no site at all speaks for every level (an examination's
    #: "findings correlate with the imaging"; a fusion whose level was not recorded may have been this
    #: one), one naming sites only for those.
    unsited_is_every_level: bool = False

    @model_validator(mode="after")
    def _unsited_needs_at_level(self) -> "LevelScoped":
        if self.unsited_is_every_level and not self.at_level:
            raise ValueError("unsited_is_every_level only applies with at_level: true")
        return self


class AgePredicate(_Predicate):
    """Patient age in completed years on the order date."""

    kind: Literal["age"] = Field("age", alias="__kind", exclude=True)

    min: int | None = None
    max: int | None = None


class ConditionPredicate(LevelScoped):
    """A Condition with one of the codes (or words in its text), clinically active and not refuted.

    The order's own reason codes count as a stated diagnosis unless severity,
    body site or level must be checked (a reason code carries none of them).
    ``text`` is for syndromes with no code of their own (nutcracker, May-Thurner).
    """

    kind: Literal["condition"] = Field("condition", alias="__kind", exclude=True)

    codes: Codes | None = None
    text: tuple[str, ...] = ()
    severity: Codes | None = None
    body_site: Codes | None = None
    #: "History of": a resolved or inactive Condition counts too (refuted never does).
    history: bool = False
    #: Chronic: the onset (or, failing that, the recorded date) is at least this long before the order.
    onset_before: Period | None = None

    @model_validator(mode="after")
    def _needs_something(self) -> "ConditionPredicate":
        if self.codes is None and not self.text:
            raise ValueError("condition needs codes or text")
        return self


class ObservationPredicate(LevelScoped):
    """The latest matching Observation in the window, optionally with a value test."""

    kind: Literal["observation"] = Field("observation", alias="__kind", exclude=True)

    codes: Codes
    within: Period | None = None
    value: Comparison | None = None
    value_in: Codes | None = None
    value_not_in: Codes | None = None
    value_boolean: bool | None = None
    body_site: Codes | None = None
    #: Words naming a site no code stands for (a varicose tributary), read in the bodySite's text
    #: and displays as an alternative to ``body_site``.
    body_site_text: tuple[str, ...] = ()
    #: Results linked (partOf/focus) to a Procedure count only if it has one of these codes:
    #: the relief after a TFESI is not the relief after the facet block done the same day.
    part_of: Codes | None = None
    #: Results dated before the latest completed Procedure with these codes do not count: a
    #: "serial" duplex must follow the treatment it assesses. With ``at_level``, a Procedure naming
    #: only other spinal levels does not count (films before a fusion at L4-L5 are stale there, not at L2-L3).
    after_latest_procedure: Codes | None = None
    #: The value is how long something had lasted when it was recorded (pain for 2 months):
    #: it has kept growing, so the time from the result to the order is added before comparing.
    duration_grows: bool = False
    #: Only results naming no bodySite count: a finding read as at the site the diagnosis itself
    #: implies (the iliac lesion of a May-Thurner syndrome), beside a criterion naming the site.
    no_body_site: bool = False

    @model_validator(mode="after")
    def _site_words_widen_site_codes(self) -> "ObservationPredicate":
        if self.body_site_text and self.body_site is None:
            raise ValueError("body_site_text is an alternative to body_site codes: give body_site too")
        return self

    @model_validator(mode="after")
    def _one_value_test(self) -> "ObservationPredicate":
        tests = [self.value is not None, self.value_in is not None or self.value_not_in is not None,
                 self.value_boolean is not None]
        if sum(tests) > 1:
            raise ValueError("use only one of value, value_in/value_not_in, value_boolean")
        if self.duration_grows and (self.value is None or convert(Decimal(1), "d", self.value.unit) is None):
            raise ValueError("duration_grows needs a value compared in a unit of time (d, wk, mo, a)")
        if self.no_body_site and (self.body_site is not None or self.at_level):
            raise ValueError("no_body_site excludes body_site and at_level")
        return self


class LatestResult(_Strict):
    """Final Observations with these codes (at this site): the latest one's date is what counts."""

    codes: Codes
    body_site: Codes | None = None


class ProcedurePredicate(LevelScoped):
    """Completed Procedures with one of the codes: how many, how recent, over what span."""

    kind: Literal["procedure"] = Field("procedure", alias="__kind", exclude=True)

    codes: Codes
    within: Period | None = None
    min_count: int = Field(1, ge=1)
    min_span: Period | None = None
    #: With ``min_span`` in weeks: therapy in that many different calendar weeks shows it too. A
    #: 6-week program of visits runs from the first week's Monday to the sixth week's Friday (39 days).
    calendar_weeks: bool = False
    #: The vein, joint … treated: a Procedure coded at another site does not count, and one whose
    #: site is not coded cannot be told apart (undocumented).
    body_site: Codes | None = None
    #: A procedure done before the latest of these results did not settle what the result still
    #: shows (an ablation followed by a duplex with the junction still refluxing): it does not count.
    after_latest_result: LatestResult | None = None

    @model_validator(mode="after")
    def _calendar_weeks_count_a_span_in_weeks(self) -> "ProcedurePredicate":
        if self.calendar_weeks and (self.min_span is None or self.min_span.unit != "week"):
            raise ValueError("calendar_weeks counts the weeks of a min_span given in weeks ('6 weeks')")
        return self


class ReportPredicate(LevelScoped):
    """A DiagnosticReport or DocumentReference of one of the types, optionally with a given conclusion.

    With ``at_level`` (and ``conclusion_text``), the conclusion is read level by level
    (``record.level_passages``): "Severe stenosis at L4-5 and mild stenosis at L3-4" shows severe
    stenosis at L4-L5 only. Of the reports whose conclusion names the level, the latest decides.
    """

    kind: Literal["report"] = Field("report", alias="__kind", exclude=True)

    codes: Codes
    within: Period | None = None
    conclusion: Codes | None = None
    #: Words the report's conclusion states (not negated, ``record.affirms``): findings no terminology
    #: codes are read where imaging reports put them ("Deep veins patent and compressible").
    #: With ``conclusion`` too, either one shows the finding.
    conclusion_text: tuple[str, ...] = ()
    #: Words that rule the finding out (with ``at_level``, in the passage about the level): the
    #: latest report stating them fails the criterion ("no significant stenosis at L2-3"). Words
    #: of ``conclusion_text`` inside such a phrase do not count ("mild to moderate stenosis" names
    #: "moderate … stenosis"); elsewhere in the passage they do (moderate central, mild foraminal).
    conclusion_text_not: tuple[str, ...] = ()
    #: Reports dated before the latest result with these codes do not count: a finding recorded
    #: later (the deep veins read not patent on a newer duplex) supersedes an older report's words.
    superseded_by: LatestResult | None = None
    #: Reports dated before the latest completed Procedure with these codes do not count, nor those
    #: less than ``min_gap`` after it: imaging that assesses a treatment's success must follow it
    #: by long enough ("longer-term imaging (3-6 months)" after an endovenous ablation).
    after_latest_procedure: Codes | None = None
    min_gap: Period | None = None

    @model_validator(mode="after")
    def _gap_after_a_procedure(self) -> "ReportPredicate":
        if self.min_gap is not None and self.after_latest_procedure is None:
            raise ValueError("min_gap is the time after the latest procedure: it needs after_latest_procedure")
        if self.conclusion_text_not and not self.conclusion_text:
            raise ValueError("conclusion_text_not qualifies conclusion_text: give conclusion_text too")
        if self.at_level and (not self.conclusion_text or self.conclusion is not None):
            raise ValueError("at_level reads the levels a conclusion names: it needs conclusion_text and no coded "
                             "conclusion (conclusionCode names no level)")
        return self


class ScoreReliefPredicate(_Predicate):
    """The relief a procedure gave, worked out from scores taken before and after it (pain 8 then 1: 88 %).

    No code records "% relief after a diagnostic block": charts record a pain score (LOINC 72514-3)
    before and after it. The latest completed procedure with ``procedure`` codes in the window decides.
    Its baseline is the latest score before it (earlier that day by the clock, or on an earlier day
    within ``baseline_within``); its result is the lowest score from the procedure to ``measured_within``
    after it. A score linked (partOf/focus) to another procedure is that one's, and scores linked to
    this one outweigh unlinked ones.
    """

    kind: Literal["score_relief"] = Field("score_relief", alias="__kind", exclude=True)

    codes: Codes
    procedure: Codes
    value: Comparison
    within: Period | None = None
    baseline_within: Period
    measured_within: Period
    #: Other pain procedures (an epidural): done the same day as the procedure, they leave scores not
    #: linked (partOf/focus) to either unattributable ("100% improvement following ... TFESI performed
    #: on the same date as the first diagnostic facet block").
    same_day_others: Codes | None = None

    @field_validator("value")
    @classmethod
    def _percent(cls, value: Comparison) -> Comparison:
        if value.unit != "%":
            raise ValueError("score_relief compares a relief in %, e.g. '>= 80 %'")
        return value


class AllergyPredicate(_Predicate):
    """An AllergyIntolerance to a substance, by code or by words in its text (e.g. nitinol)."""

    kind: Literal["allergy"] = Field("allergy", alias="__kind", exclude=True)

    codes: Codes | None = None
    text: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _needs_something(self) -> "AllergyPredicate":
        if self.codes is None and not self.text:
            raise ValueError("allergy needs codes or text")
        return self


class DevicePredicate(_Predicate):
    """A DeviceRequest or DeviceUseStatement for one of the devices, used for a minimum duration."""

    kind: Literal["device"] = Field("device", alias="__kind", exclude=True)

    codes: Codes
    min_duration: Period | None = None
    within: Period | None = None


class MedicationPredicate(_Predicate):
    """A MedicationRequest or MedicationStatement for one of the drugs, for a minimum duration."""

    kind: Literal["medication"] = Field("medication", alias="__kind", exclude=True)

    codes: Codes
    min_duration: Period | None = None
    within: Period | None = None


class QuestionnairePredicate(_Predicate):
    """An answer in a completed QuestionnaireResponse to a (third-party) questionnaire."""

    kind: Literal["questionnaire"] = Field("questionnaire", alias="__kind", exclude=True)

    questionnaire: str
    link_id: str
    answer: bool = True


class OrderPredicate(_Predicate):
    """Another order with one of the codes is in the same request (ordered together)."""

    kind: Literal["order"] = Field("order", alias="__kind", exclude=True)

    codes: Codes
    #: The other order must name this spinal level (e.g. "L5-S1": a fusion that reaches the sacrum).
    level: str | None = None

    @field_validator("level")
    @classmethod
    def _one_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        levels, _ = levels_in_text(value)
        if len(levels) != 1:
            raise ValueError(f"level '{value}' is not one spinal interspace such as 'L5-S1'")
        return next(iter(levels)).label


class OrderReasonPredicate(_Predicate):
    """The order's own reasonCode / reasonReference carries one of the codes."""

    kind: Literal["order_reason"] = Field("order_reason", alias="__kind", exclude=True)

    codes: Codes


class FhirPathPredicate(_Predicate):
    """Escape hatch: a FHIRPath boolean over the record (a Bundle); ``%order`` is the order.

    true = met, false = not met, empty = undocumented.
    """

    kind: Literal["fhirpath"] = Field("fhirpath", alias="__kind", exclude=True)

    expression: CompiledFhirPath

    @field_validator("expression", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> CompiledFhirPath:
        return compile_fhirpath(str(value))


class ReviewPredicate(_Predicate):
    """Only an individual (medical-director) review decides: nothing on record meets or refutes it.

    For what a guideline leaves to case-by-case review, e.g. a population it names but gives no
    criteria for. Never asked on the documentation form: the ordering clinician's "yes" is not that review.
    """

    kind: Literal["review"] = Field("review", alias="__kind", exclude=True)


#: The closed vocabulary: predicate key in a policy file -> its model.
PREDICATES: dict[str, type[_Strict]] = {
    "age": AgePredicate,
    "condition": ConditionPredicate,
    "observation": ObservationPredicate,
    "procedure": ProcedurePredicate,
    "report": ReportPredicate,
    "score_relief": ScoreReliefPredicate,
    "allergy": AllergyPredicate,
    "device": DevicePredicate,
    "medication": MedicationPredicate,
    "questionnaire": QuestionnairePredicate,
    "order": OrderPredicate,
    "order_reason": OrderReasonPredicate,
    "fhirpath": FhirPathPredicate,
    "review": ReviewPredicate,
}

#: Predicates the documentation form never asks, whatever a criterion's ``ask`` says (Leaf.asked).
_NOT_ASKED = (AgePredicate, OrderPredicate, OrderReasonPredicate, ReviewPredicate)

#: FHIR resource types each predicate reads (drives which evidence is fetched).
PREDICATE_RESOURCES: dict[type[_Strict], tuple[str, ...]] = {
    AgePredicate: ("Patient",),
    ConditionPredicate: ("Condition",),
    ObservationPredicate: ("Observation",),
    ProcedurePredicate: ("Procedure",),
    ReportPredicate: ("DiagnosticReport", "DocumentReference"),
    ScoreReliefPredicate: ("Observation", "Procedure"),
    AllergyPredicate: ("AllergyIntolerance",),
    DevicePredicate: ("DeviceRequest", "DeviceUseStatement", "Device"),
    MedicationPredicate: ("MedicationRequest", "MedicationStatement"),
    QuestionnairePredicate: ("QuestionnaireResponse",),
    OrderPredicate: (),
    OrderReasonPredicate: ("Condition",),
    ReviewPredicate: (),
    FhirPathPredicate: (
        "Condition", "Observation", "Procedure", "DiagnosticReport", "DocumentReference",
        "AllergyIntolerance", "MedicationRequest", "DeviceRequest", "DeviceUseStatement",
    ),
}


def predicate_code_sets(predicate: _Strict) -> list[CodeSet]:
    """Every code set a predicate holds, nested ones (``after_latest_result``) included."""
    found = []
    for value in predicate.__dict__.values():
        if isinstance(value, CodeSet):
            found.append(value)
        elif isinstance(value, _Strict):
            found += predicate_code_sets(value)
    return found


def deciding_resources(predicate: _Strict) -> tuple[str, ...]:
    """The resource types whose absence can decide one predicate: its kind's, plus the Procedures a
    ``part_of`` resolves or an ``after_latest_procedure`` dates. When one could not be retrieved,
    "not on record" proves nothing."""
    types = PREDICATE_RESOURCES[type(predicate)]
    if isinstance(predicate, ReportPredicate) and (predicate.conclusion is not None or predicate.conclusion_text):
        types = ("DiagnosticReport",)  # a DocumentReference has no conclusion to read
    if isinstance(predicate, ObservationPredicate) and (predicate.part_of or predicate.after_latest_procedure) or \
            isinstance(predicate, ReportPredicate) and predicate.after_latest_procedure:
        types += ("Procedure",)
    return types


def predicate_resources(predicate: _Strict) -> tuple[str, ...]:
    """The resource types one predicate reads (what hydration fetches): the deciding ones, plus the
    Observations an ``after_latest_result`` dates (the predicate itself handles their absence)."""
    types = deciding_resources(predicate)
    if isinstance(predicate, ProcedurePredicate) and predicate.after_latest_result is not None or \
            isinstance(predicate, ReportPredicate) and predicate.superseded_by is not None:
        types += ("Observation",)
    return types


# --- criteria tree ---------------------------------------------------------------------


class Citation(_Strict):
    """Where a criterion comes from: the section of the source and the sentence itself."""

    section: str
    quote: str


class Suggestion(_Strict):
    """An order the card can offer to create when this criterion is open (CRD additional orders)."""

    label: str
    code: str
    system: Literal["cpt", "hcpcs"] = "cpt"
    display: str
    when: Literal["undocumented", "not-met", "open"] = "undocumented"

    @property
    def system_uri(self) -> str:
        return CPT if self.system == "cpt" else HCPCS


class Node(_Strict):
    """Fields shared by every criterion node."""

    id: str | None = None
    text: str | None = None
    cite: Citation | None = None
    documentation: str | None = None
    #: On an exclusion: a patient-safety contraindication (the card becomes critical, not a warning).
    safety: bool = False

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError(f"id '{value}' must be lower-case letters, digits and hyphens")
        return value

    @field_validator("text")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value.strip() or len(value) > 200):
            raise ValueError("text must be one line of at most 200 characters")
        return value

    def children(self) -> tuple["Criterion", ...]:
        return ()


class Leaf(Node):
    """A single checkable statement, evaluated by one predicate."""

    id: str
    text: str
    cite: Citation
    documentation: str
    predicate: Annotated[
        Union[tuple(Annotated[model, Tag(key)] for key, model in PREDICATES.items())],  # type: ignore[misc]
        Field(discriminator="kind"),
    ] = Field(exclude=True)
    predicate_key: str
    absent: Literal["undocumented", "not-met"] = "undocumented"
    ask: bool = True
    suggest: Suggestion | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_predicate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a criterion must be a mapping")
        common = set(cls.model_fields) - {"predicate", "predicate_key"}
        extra = [k for k in data if k not in common]
        known = [k for k in extra if k in PREDICATES]
        unknown = [k for k in extra if k not in PREDICATES]
        if unknown:
            raise ValueError(
                f"unknown predicate or field '{unknown[0]}' (predicates: {', '.join(PREDICATES)}; "
                f"composites: {', '.join(COMPOSITE_KEYS)})"
            )
        if len(known) != 1:
            raise ValueError(f"a criterion needs exactly one predicate, found {len(known) or 'none'}")
        key = known[0]
        fields = {k: v for k, v in data.items() if k != key}
        payload = data[key]
        if isinstance(payload, _Predicate):
            return {**fields, "predicate_key": key, "predicate": payload}
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ValueError(f"'{key}' needs a mapping of parameters")
        return {**fields, "predicate_key": key, "predicate": {**payload, "__kind": key}}

    @property
    def at_level(self) -> bool:
        return bool(getattr(self.predicate, "at_level", False))

    @property
    def asked(self) -> bool:
        """Whether the documentation form (DTR) asks this criterion, so that an answer can decide it.

        Age, the other orders and the order's own reason are facts of the request, and a review is
        not the ordering clinician's to answer.
        """
        return self.ask and not isinstance(self.predicate, _NOT_ASKED)


class AllOf(Node):
    all_of: tuple["Criterion", ...] = Field(min_length=1)

    def children(self) -> tuple["Criterion", ...]:
        return self.all_of


class AnyOf(Node):
    text: str
    any_of: tuple["Criterion", ...] = Field(min_length=1)

    def children(self) -> tuple["Criterion", ...]:
        return self.any_of


class AnyForm(Node):
    """One finding recorded in several ways (a coded Observation, a Condition, ...).

    Met if any form shows it; not met if a form contradicts it and none shows it; else
    undocumented. Unlike ``any_of``, a documented contradiction is not undone by a form
    that is merely absent.
    """

    text: str
    any_form: tuple["Criterion", ...] = Field(min_length=2)

    def children(self) -> tuple["Criterion", ...]:
        return self.any_form


class AtLeast(Node):
    text: str
    at_least: int = Field(ge=1)
    of: tuple["Criterion", ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _reachable(self) -> "AtLeast":
        if self.at_least > len(self.of):
            raise ValueError(f"at_least {self.at_least} of only {len(self.of)} criteria can never be met")
        return self

    def children(self) -> tuple["Criterion", ...]:
        return self.of


class Not(Node):
    id: str
    text: str
    cite: Citation
    documentation: str
    not_: "Criterion" = Field(alias="not")

    model_config = ConfigDict(populate_by_name=True)

    def children(self) -> tuple["Criterion", ...]:
        return (self.not_,)


class When(Node):
    """Implication: the ``then`` criteria only apply when the ``when`` criterion is met."""

    when: "Criterion"
    then: "Criterion"

    def children(self) -> tuple["Criterion", ...]:
        return (self.when, self.then)


class PerLevel(Node):
    """Evaluate the criteria once per spinal level named on the order; every level must pass."""

    id: str
    text: str
    cite: Citation
    documentation: str
    per_level: "Criterion"

    def children(self) -> tuple["Criterion", ...]:
        return (self.per_level,)


class Ref(Node):
    """Use a named criterion from the policy's ``definitions``."""

    ref: str


COMPOSITE_KEYS = ("all_of", "any_of", "any_form", "not", "at_least", "when", "per_level", "ref")


def _node_kind(value: Any) -> str:
    if isinstance(value, Node):
        return _TAGS[type(value)]
    if isinstance(value, dict):
        for key in COMPOSITE_KEYS:
            if key in value:
                return key
    return "leaf"


Criterion = Annotated[
    Union[
        Annotated[AllOf, Tag("all_of")],
        Annotated[AnyOf, Tag("any_of")],
        Annotated[AnyForm, Tag("any_form")],
        Annotated[Not, Tag("not")],
        Annotated[AtLeast, Tag("at_least")],
        Annotated[When, Tag("when")],
        Annotated[PerLevel, Tag("per_level")],
        Annotated[Ref, Tag("ref")],
        Annotated[Leaf, Tag("leaf")],
    ],
    Discriminator(_node_kind),
]
_TAGS: dict[type[Node], str] = {
    AllOf: "all_of", AnyOf: "any_of", AnyForm: "any_form", Not: "not", AtLeast: "at_least",
    When: "when", PerLevel: "per_level", Ref: "ref", Leaf: "leaf",
}

for _model in (AllOf, AnyOf, AnyForm, Not, AtLeast, When, PerLevel):
    _model.model_rebuild()


# --- rules and policy ------------------------------------------------------------------


class Determination(_Strict):
    """A fixed answer for a code, e.g. "incidental to the other procedures, never separately necessary"."""

    id: str
    text: str
    cite: Citation


class Rule(_Strict):
    """The criteria that apply to a group of billing codes.

    ``applies_when`` narrows the rule's scope (e.g. intracranial stenting only when
    done for idiopathic intracranial hypertension); outside it no policy applies.
    """

    id: str
    title: str
    codes: Codes
    applies_when: Criterion | None = None
    criteria: Criterion | None = None
    exclusions: tuple[Criterion, ...] = ()
    not_medically_necessary: Determination | None = None

    @model_validator(mode="after")
    def _has_answer(self) -> "Rule":
        if (self.criteria is None) == (self.not_medically_necessary is None):
            raise ValueError("a rule needs either criteria or a not_medically_necessary determination")
        if not self.codes.systems() <= {CPT, HCPCS}:
            raise ValueError("rule codes must be CPT or HCPCS")
        return self


class Provenance(_Strict):
    """Which document a policy encodes, and which edition of it."""

    publisher: str
    document: str
    number: str | None = None
    version: str
    effective: date | None = None
    last_review: date | None = None
    url: str | None = None
    source_file: str

    @field_validator("version")
    @classmethod
    def _canonical_safe(cls, value: str) -> str:
        # The version ends up in the DTR Questionnaire's canonical (url|version).
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$", value):
            raise ValueError(f"version '{value}' may only use letters, digits, '.' and '-'")
        return value

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("url must be absolute (http or https)")
        return value


class Policy(_Strict):
    """One payer policy (guideline) as data."""

    id: str
    title: str
    revision: int = Field(1, ge=1, description="Revision of this encoding of the document")
    provenance: Provenance
    payers: tuple[str, ...] = Field(min_length=1)
    summary: str
    notes: str | None = None
    definitions: dict[str, Criterion] = {}
    exclusions: tuple[Criterion, ...] = ()
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _has_rules(self) -> "Policy":
        if not self.rules:
            raise ValueError("a policy needs at least one rule")
        return self

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"id '{value}' must be lower-case letters, digits and hyphens")
        return value

    @property
    def version(self) -> str:
        """Version stamp for assertions and the DTR Questionnaire: source edition + encoding revision."""
        return f"{self.provenance.version}-r{self.revision}"

    def rule_for(self, system: str | None, code: str | None) -> Rule | None:
        return next((rule for rule in self.rules if rule.codes.contains(system, code)), None)
