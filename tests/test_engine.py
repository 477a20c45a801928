"""The engine's three-valued logic, and the guarantee that undocumented never becomes "meets criteria"."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import date

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cds_service.codes import PROJECT_FINDINGS
from cds_service.policy.engine import Outcome
from cds_service.policy.engine import evaluate_order
from cds_service.policy.schema import Policy
from cds_service.record import Order
from cds_service.record import PatientRecord

CITE = {"section": "s", "quote": "q"}
ORDER = Order.from_resource({"resourceType": "ServiceRequest", "id": "o", "status": "draft", "intent": "order",
                             "authoredOn": "2026-11-02", "subject": {"reference": "Patient/p"},
                             "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "37238"}]}})


def leaf(i: int) -> dict:
    return {"id": f"leaf-{i}", "text": f"leaf {i}", "cite": CITE, "documentation": "d",
            "observation": {"codes": {"finding": [f"leaf-{i}"]}, "value_boolean": True}}


def policy(criteria: dict, exclusions: list[dict] = ()) -> Policy:
    return Policy.model_validate({
        "id": "test-policy", "title": "t", "summary": "s", "payers": ["*"],
        "provenance": {"publisher": "p", "document": "d", "version": "1", "source_file": "x.txt"},
        "rules": [{"id": "r", "title": "r", "codes": {"cpt": ["37238"]}, "criteria": criteria,
                   "exclusions": list(exclusions)}],
    })


def record(statuses: dict[int, str]) -> PatientRecord:
    """One Observation per leaf: true = met, false = not met, absent = undocumented."""
    resources = [
        {"resourceType": "Observation", "id": f"o{i}", "status": "final", "subject": {"reference": "Patient/p"},
         "code": {"coding": [{"system": PROJECT_FINDINGS, "code": f"leaf-{i}"}]},
         "effectiveDateTime": "2026-10-01", "valueBoolean": status == "met"}
        for i, status in statuses.items() if status != "undocumented"
    ]
    return PatientRecord(resources, [ORDER])


def run(criteria: dict, statuses: dict[int, str], exclusions: list[dict] = ()):
    p = policy(criteria, exclusions)
    return evaluate_order(p, p.rules[0], ORDER, record(statuses), date(2026, 11, 21))


def test_all_of_any_of_not_kleene():
    both = {"all_of": [leaf(1), leaf(2)]}
    assert run(both, {1: "met", 2: "met"}).outcome is Outcome.MEETS_CRITERIA
    assert run(both, {1: "met", 2: "undocumented"}).outcome is Outcome.DOCUMENTATION_NEEDED
    assert run(both, {1: "not-met", 2: "undocumented"}).outcome is Outcome.NOT_MEDICALLY_NECESSARY
    either = {"any_of": [leaf(1), leaf(2)], "text": "either"}
    assert run(either, {1: "undocumented", 2: "met"}).outcome is Outcome.MEETS_CRITERIA
    assert run(either, {1: "undocumented", 2: "not-met"}).outcome is Outcome.DOCUMENTATION_NEEDED
    assert run(either, {1: "not-met", 2: "not-met"}).outcome is Outcome.NOT_MEDICALLY_NECESSARY
    negated = {"not": leaf(1), "id": "n", "text": "not 1", "cite": CITE, "documentation": "d"}
    assert run(negated, {1: "not-met"}).outcome is Outcome.MEETS_CRITERIA
    assert run(negated, {1: "undocumented"}).missing_ids == ("n",)


def test_at_least_and_when():
    three = {"at_least": 2, "of": [leaf(1), leaf(2), leaf(3)], "text": "two of three", "id": "two"}
    assert run(three, {1: "met", 2: "met", 3: "not-met"}).outcome is Outcome.MEETS_CRITERIA
    assert run(three, {1: "met", 2: "undocumented", 3: "not-met"}).outcome is Outcome.DOCUMENTATION_NEEDED
    assert run(three, {1: "met", 2: "not-met", 3: "not-met"}).outcome is Outcome.NOT_MEDICALLY_NECESSARY
    implication = {"when": leaf(1), "then": leaf(2)}
    assert run(implication, {1: "not-met", 2: "undocumented"}).outcome is Outcome.MEETS_CRITERIA
    assert run(implication, {1: "met", 2: "undocumented"}).missing_ids == ("leaf-2",)
    assert run(implication, {1: "undocumented", 2: "not-met"}).outcome is Outcome.DOCUMENTATION_NEEDED


def test_any_form_lets_a_documented_contradiction_stand():
    forms = {"any_form": [leaf(1), leaf(2)], "id": "finding", "text": "one finding, two encodings"}
    assert run(forms, {1: "met", 2: "not-met"}).outcome is Outcome.MEETS_CRITERIA
    assert run(forms, {1: "not-met", 2: "undocumented"}).outcome is Outcome.NOT_MEDICALLY_NECESSARY
    assert run(forms, {1: "undocumented", 2: "undocumented"}).missing_ids == ("finding",)
    either = {"any_of": [leaf(1), leaf(2)], "id": "either", "text": "either"}
    assert run(either, {1: "not-met", 2: "undocumented"}).outcome is Outcome.DOCUMENTATION_NEEDED


def test_a_met_exclusion_overrides_met_criteria():
    evaluation = run(leaf(1), {1: "met", 2: "met"}, exclusions=[leaf(2)])
    assert evaluation.outcome is Outcome.NOT_MEDICALLY_NECESSARY and evaluation.failed_ids == ("leaf-2",)
    assert run(leaf(1), {1: "met", 2: "undocumented"}, exclusions=[leaf(2)]).outcome is Outcome.MEETS_CRITERIA


def test_partially_documented_alternative_is_what_the_card_asks_for():
    criteria = {"any_of": [{"all_of": [leaf(1), leaf(2)], "id": "a", "text": "a"}, leaf(3)], "text": "x", "id": "x"}
    assert run(criteria, {1: "met", 2: "undocumented", 3: "undocumented"}).missing_ids == ("leaf-2",)
    assert run(criteria, {1: "undocumented", 2: "undocumented", 3: "undocumented"}).missing_ids == ("x",)


# --- the guarantee, checked on random trees ------------------------------------------------

LEAVES = 6


def trees(depth: int = 3):
    leaves = st.integers(0, LEAVES - 1).map(lambda i: ("leaf", i))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda c: ("all", c)),
        st.lists(inner, min_size=1, max_size=3).map(lambda c: ("any", c)),
        inner.map(lambda c: ("not", c)),
        st.tuples(inner, inner).map(lambda c: ("when", c)),
        st.lists(inner, min_size=2, max_size=3).flatmap(
            lambda c: st.integers(1, len(c)).map(lambda n: ("atleast", (n, c)))),
    ), max_leaves=8)


def to_policy_node(tree, counter=itertools.count()) -> dict:
    kind, body = tree
    n = next(counter)
    if kind == "leaf":
        return leaf(body)
    if kind == "all":
        return {"all_of": [to_policy_node(c, counter) for c in body]}
    if kind == "any":
        return {"any_of": [to_policy_node(c, counter) for c in body], "text": f"any {n}", "id": f"any-{n}"}
    if kind == "not":
        return {"not": to_policy_node(body, counter), "id": f"not-{n}", "text": "not", "cite": CITE,
                "documentation": "d"}
    if kind == "when":
        return {"when": to_policy_node(body[0], counter), "then": to_policy_node(body[1], counter)}
    count, children = body
    return {"at_least": count, "of": [to_policy_node(c, counter) for c in children], "text": "n of",
            "id": f"atleast-{n}"}


def truth(tree, values: dict[int, bool]) -> bool:
    kind, body = tree
    if kind == "leaf":
        return values[body]
    if kind == "all":
        return all(truth(c, values) for c in body)
    if kind == "any":
        return any(truth(c, values) for c in body)
    if kind == "not":
        return not truth(body, values)
    if kind == "when":
        return (not truth(body[0], values)) or truth(body[1], values)
    count, children = body
    return sum(truth(c, values) for c in children) >= count


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), statuses=st.lists(st.sampled_from(["met", "not-met", "undocumented"]),
                                       min_size=LEAVES, max_size=LEAVES))
def test_outcome_is_sound_for_every_completion_of_the_undocumented(tree, statuses):
    assignment = dict(enumerate(statuses))
    evaluation = run(to_policy_node(tree, itertools.count()), assignment)
    unknown = [i for i, s in assignment.items() if s == "undocumented"]
    completions = []
    for bits in itertools.product([True, False], repeat=len(unknown)):
        values = {i: s == "met" for i, s in assignment.items()}
        values.update(dict(zip(unknown, bits)))
        completions.append(truth(tree, values))
    if evaluation.outcome is Outcome.MEETS_CRITERIA:
        assert all(completions), "meets criteria although some documentation could still fail it"
        assert not evaluation.missing
    if evaluation.outcome is Outcome.NOT_MEDICALLY_NECESSARY:
        assert not any(completions), "not medically necessary although documentation could still satisfy it"
    if evaluation.outcome is Outcome.DOCUMENTATION_NEEDED:
        assert evaluation.missing, "documentation needed must say what is missing"


def test_an_undated_procedure_was_done_but_cannot_be_placed_in_a_window():
    undated = {"resourceType": "Procedure", "id": "pr", "status": "completed", "subject": {"reference": "Patient/p"},
               "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36475"}]}}
    chart = PatientRecord([undated], [ORDER])

    def outcome(procedure: dict):
        p = policy({"id": "done", "text": "t", "cite": CITE, "documentation": "d", "absent": "not-met",
                    "procedure": {"codes": {"cpt": ["36475"]}, **procedure}})
        return evaluate_order(p, p.rules[0], ORDER, chart, date(2026, 11, 21))

    assert outcome({}).outcome is Outcome.MEETS_CRITERIA  # "was it ever done": yes
    within = outcome({"within": "6 months"})
    assert within.outcome is Outcome.DOCUMENTATION_NEEDED  # not "not met": it was done, the date is missing
    assert within.missing[0].reason == "performed date not recorded"


def test_a_procedure_before_the_latest_result_it_should_have_settled_does_not_count():
    ablation = {"resourceType": "Procedure", "id": "pr", "status": "completed", "subject": {"reference": "Patient/p"},
                "performedDateTime": "2026-09-15",
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36475"}]}}
    duplex = {"resourceType": "Observation", "id": "ob", "status": "final", "subject": {"reference": "Patient/p"},
              "effectiveDateTime": "2026-10-01", "code": {"coding": [{"system": PROJECT_FINDINGS, "code": "leaf-1"}]}}
    p = policy({"id": "ablated-first", "text": "t", "cite": CITE, "documentation": "d", "absent": "not-met",
                "procedure": {"codes": {"cpt": ["36475"]},
                              "after_latest_result": {"codes": {"finding": ["leaf-1"]}}}})

    def outcome(resources: list[dict], unavailable: tuple[str, ...] = ()):
        return evaluate_order(p, p.rules[0], ORDER, PatientRecord(resources, [ORDER], unavailable), date(2026, 11, 21))

    assert outcome([ablation]).outcome is Outcome.MEETS_CRITERIA  # no later result to contradict it
    later = outcome([ablation, duplex])
    assert later.outcome is Outcome.NOT_MEDICALLY_NECESSARY
    assert set(later.failed[0].evidence) == {"Procedure/pr", "Observation/ob"}
    assert outcome([ablation, {**duplex, "effectiveDateTime": "2026-09-01"}]).outcome is Outcome.MEETS_CRITERIA
    unknown = outcome([ablation], unavailable=("Observation",))
    assert unknown.outcome is Outcome.DOCUMENTATION_NEEDED and "came first" in unknown.missing[0].reason
    assert outcome([], unavailable=("Observation",)).outcome is Outcome.NOT_MEDICALLY_NECESSARY  # none on record


def test_results_before_the_latest_procedure_at_the_level_do_not_count():
    order = Order.from_resource({**ORDER.resource, "bodySite": [{"text": "L4-L5"}]})
    films = {"resourceType": "Observation", "id": "ob", "status": "final", "subject": {"reference": "Patient/p"},
             "effectiveDateTime": "2026-01-12", "bodySite": {"text": "L4-L5"}, "valueBoolean": True,
             "code": {"coding": [{"system": PROJECT_FINDINGS, "code": "leaf-1"}]}}

    def fusion(site: str | None) -> dict:
        return {"resourceType": "Procedure", "id": "pr", "status": "completed", "subject": {"reference": "Patient/p"},
                "performedDateTime": "2026-03-10", "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                                                       "code": "22633"}]},
                **({"bodySite": [{"text": site}]} if site else {})}

    p = policy({"id": "each-level", "text": "t", "cite": CITE, "documentation": "d", "per_level": {
        "id": "current-films", "text": "t", "cite": CITE, "documentation": "d",
        "observation": {"codes": {"finding": ["leaf-1"]}, "value_boolean": True, "within": "1 year", "at_level": True,
                        "after_latest_procedure": {"cpt": ["22633"]}}}})

    def outcome(resources: list[dict]) -> Outcome:
        return evaluate_order(p, p.rules[0], order, PatientRecord(resources, [order]), date(2026, 11, 21)).outcome

    assert outcome([films]) is Outcome.MEETS_CRITERIA
    assert outcome([films, fusion("L4-L5")]) is Outcome.DOCUMENTATION_NEEDED  # the films show what it fused
    assert outcome([films, fusion("L3-S1")]) is Outcome.DOCUMENTATION_NEEDED  # a range naming the level
    assert outcome([films, fusion("L2-L3")]) is Outcome.MEETS_CRITERIA  # another level: still current here
    assert outcome([films, fusion(None)]) is Outcome.DOCUMENTATION_NEEDED  # level not named: may have been this one
    assert outcome([{**films, "effectiveDateTime": "2026-04-01"}, fusion("L4-L5")]) is Outcome.MEETS_CRITERIA


def test_a_follow_up_report_counts_only_long_enough_after_the_latest_treatment():
    """Imaging that assesses a treatment must follow it by the gap ("longer-term imaging (3-6 months)"
    after an ablation); without the treatment on record any report counts."""
    p = policy({"id": "follow-up-duplex", "text": "t", "cite": CITE, "documentation": "d", "report": {
        "codes": {"loinc": ["39420-5"]}, "after_latest_procedure": {"cpt": ["36475"]}, "min_gap": "3 months"}})
    duplex = {"resourceType": "DiagnosticReport", "id": "us", "status": "final", "subject": {"reference": "Patient/p"},
              "code": {"coding": [{"system": "http://loinc.org", "code": "39420-5"}]}, "effectiveDateTime": "2026-09-10"}

    def ablation(day: str, status: str = "completed") -> dict:
        return {"resourceType": "Procedure", "id": f"rfa-{day}", "status": status, "performedDateTime": day,
                "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "36475"}]}}

    def decided(*resources: dict):
        evaluation = evaluate_order(p, p.rules[0], ORDER, PatientRecord(list(resources), [ORDER]), date(2026, 11, 21))
        return evaluation.outcome, [f.reason for f in evaluation.missing]

    assert decided(duplex) == (Outcome.MEETS_CRITERIA, [])
    assert decided(duplex, ablation("2026-06-10")) == (Outcome.MEETS_CRITERIA, [])  # exactly 3 months later
    assert decided(duplex, ablation("2026-06-11")) == (Outcome.DOCUMENTATION_NEEDED, [
        "latest report is from 2026-09-10, less than 3 months after the 2026-06-11 treatment"])
    assert decided(duplex, ablation("2026-02-01"), ablation("2026-07-20")) == (Outcome.DOCUMENTATION_NEEDED, [
        "latest report is from 2026-09-10, less than 3 months after the 2026-07-20 treatment"])  # the latest counts
    assert decided(duplex, ablation("2026-07-20", "not-done")) == (Outcome.MEETS_CRITERIA, [])
    assert decided(ablation("2026-07-20")) == (Outcome.DOCUMENTATION_NEEDED, [None])  # no report at all


def test_a_gap_needs_the_procedure_it_follows():
    with pytest.raises(ValidationError, match="min_gap is the time after the latest procedure"):
        policy({"id": "gap", "text": "t", "cite": CITE, "documentation": "d",
                "report": {"codes": {"loinc": ["39420-5"]}, "min_gap": "3 months"}})


def test_relief_is_worked_out_from_the_scores_before_and_after_the_latest_procedure():
    """Charts record a pain score before and after a block, not a percentage: 8 then 1 is 88 %."""
    p = policy({"id": "relief", "text": "t", "cite": CITE, "documentation": "d", "score_relief": {
        "codes": {"loinc": ["72514-3"]}, "procedure": {"cpt": ["64493"]}, "value": ">= 80 %", "within": "6 months",
        "baseline_within": "30 days", "measured_within": "1 day"}})

    def block(when: str, rid: str = "mbb", code: str = "64493") -> dict:
        return {"resourceType": "Procedure", "id": rid, "status": "completed", "performedDateTime": when,
                "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]}}

    def score(rid: str, when: str, value: float, linked: str | None = None) -> dict:
        return {"resourceType": "Observation", "id": rid, "status": "final", "effectiveDateTime": when,
                "subject": {"reference": "Patient/p"}, "valueQuantity": {"value": value, "code": "{score}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
                **({"partOf": [{"reference": f"Procedure/{linked}"}]} if linked else {})}

    def decided(*resources: dict) -> tuple[Outcome, str | None]:
        evaluation = evaluate_order(p, p.rules[0], ORDER, PatientRecord(list(resources), [ORDER]), date(2026, 11, 21))
        findings = evaluation.missing + evaluation.failed
        return evaluation.outcome, findings[0].reason if findings else evaluation.met[0].reason

    same_day = block("2026-10-20T10:00:00-05:00")
    assert decided(same_day, score("pre", "2026-10-20T09:30:00-05:00", 8), score("post", "2026-10-20T11:00:00-05:00", 1)) == (
        Outcome.MEETS_CRITERIA, "score 8 before and 1 after the 2026-10-20 procedure: 88% relief")
    assert decided(same_day, score("pre", "2026-10-20T09:30:00-05:00", 8), score("post", "2026-10-20T11:00:00-05:00", 3))[0] \
        is Outcome.NOT_MEDICALLY_NECESSARY  # 62 %
    # The clock decides the same day; a baseline on an earlier day needs no time, one the same day does.
    assert decided(block("2026-10-20"), score("pre", "2026-10-01", 10), score("post", "2026-10-20", 2))[0] is Outcome.MEETS_CRITERIA
    assert decided(block("2026-10-20"), score("pre", "2026-10-20", 10), score("post", "2026-10-20", 2)) == (
        Outcome.DOCUMENTATION_NEEDED, "no score before the 2026-10-20 procedure")
    assert decided(block("2026-10-20"), score("pre", "2026-09-01", 10), score("post", "2026-10-20", 2))[0] \
        is Outcome.DOCUMENTATION_NEEDED  # the baseline is older than 30 days
    assert decided(block("2026-10-20"), score("pre", "2026-10-19", 10), score("post", "2026-10-23", 2)) == (
        Outcome.DOCUMENTATION_NEEDED, "no score after the 2026-10-20 procedure")  # measured days later
    # Scores linked to another procedure that day are its relief; scores linked to this one outweigh unlinked ones.
    tfesi = block("2026-10-20T10:30:00-05:00", "tfesi", "64483")
    assert decided(same_day, tfesi, score("pre", "2026-10-20T09:00:00-05:00", 7),
                   score("post-block", "2026-10-20T10:20:00-05:00", 7, "mbb"),
                   score("post-tfesi", "2026-10-20T11:30:00-05:00", 0, "tfesi"))[0] is Outcome.NOT_MEDICALLY_NECESSARY
    assert decided(same_day, score("pre", "2026-10-20T09:00:00-05:00", 7),
                   score("post-block", "2026-10-20T10:20:00-05:00", 6, "mbb"),
                   score("post-unlinked", "2026-10-20T11:30:00-05:00", 0))[0] is Outcome.NOT_MEDICALLY_NECESSARY
    # The latest block decides; a zero baseline leaves nothing to relieve.
    assert decided(block("2026-09-01", "old"), same_day, score("pre", "2026-09-01", 9), score("post", "2026-09-01", 0))[0] \
        is Outcome.DOCUMENTATION_NEEDED
    assert decided(same_day, score("pre", "2026-10-20T09:00:00-05:00", 0), score("post", "2026-10-20T11:00:00-05:00", 0)) == (
        Outcome.DOCUMENTATION_NEEDED, "score before the 2026-10-20 procedure is 0: no pain to relieve")


def test_score_relief_compares_a_percentage():
    with pytest.raises(ValidationError, match="compares a relief in %"):
        policy({"id": "relief", "text": "t", "cite": CITE, "documentation": "d", "score_relief": {
            "codes": {"loinc": ["72514-3"]}, "procedure": {"cpt": ["64493"]}, "value": ">= 3 {score}",
            "baseline_within": "30 days", "measured_within": "1 day"}})


def test_a_review_criterion_is_never_decided_by_the_record_or_the_form():
    """What a guideline leaves to individual review stays open: no record entry meets it, and the
    ordering clinician's "yes" on the documentation form (answered by criterion id) is not that review."""
    p = policy({"any_of": [leaf(1), {"id": "individual-review", "text": "t", "cite": CITE, "documentation": "d",
                                     "review": {}}], "text": "adult or reviewed"})
    answered = {"resourceType": "QuestionnaireResponse", "id": "qr", "status": "completed",
                "questionnaire": "http://example.org/fhir/cds-prior-auth/Questionnaire/test-policy",
                "authored": "2026-11-01", "subject": {"reference": "Patient/p"},
                "item": [{"linkId": "individual-review", "answer": [{"valueBoolean": True}]}]}
    chart = PatientRecord([answered], [ORDER])
    evaluation = evaluate_order(p, p.rules[0], ORDER, chart, date(2026, 11, 21))
    assert evaluation.outcome is Outcome.DOCUMENTATION_NEEDED
    assert [a.id for a in evaluation.missing[0].alternatives] == ["leaf-1", "individual-review"]
    assert run({"any_of": [leaf(1), {"id": "individual-review", "text": "t", "cite": CITE, "documentation": "d",
                                     "review": {}}], "text": "t"}, {1: "met"}).outcome is Outcome.MEETS_CRITERIA


def test_no_body_site_counts_only_results_that_name_no_site():
    """A finding read as at the site its diagnosis implies: one recorded at another site is not it."""
    lesion = {"resourceType": "Observation", "id": "ob", "status": "final", "subject": {"reference": "Patient/p"},
              "effectiveDateTime": "2026-10-01", "valueBoolean": True,
              "code": {"coding": [{"system": PROJECT_FINDINGS, "code": "leaf-1"}]}}
    popliteal = {**lesion, "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "43863001"}]}}
    p = policy({"id": "unsited", "text": "t", "cite": CITE, "documentation": "d",
                "observation": {"codes": {"finding": ["leaf-1"]}, "value_boolean": True, "no_body_site": True}})

    def outcome(resources: list[dict]) -> Outcome:
        return evaluate_order(p, p.rules[0], ORDER, PatientRecord(resources, [ORDER]), date(2026, 11, 21)).outcome

    assert outcome([lesion]) is Outcome.MEETS_CRITERIA
    assert outcome([popliteal]) is Outcome.DOCUMENTATION_NEEDED


def test_a_diagnosis_still_being_worked_up_neither_shows_nor_excludes_the_condition():
    """Provisional, differential and unconfirmed diagnoses are not established (ICD-10-CM outpatient
    guideline IV.H: "rule out" diagnoses are not coded): the criterion asks for confirmation, and an
    exclusion recorded that way does not turn the order down but is listed to rule out."""
    def diagnosis(verification: str) -> dict:
        return {"resourceType": "Condition", "id": f"c-{verification}", "subject": {"reference": "Patient/p"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "active"}]},
                "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                   "code": verification}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I87.1"}]}}

    compression = {"id": "compression", "text": "Iliac vein compression", "cite": CITE, "documentation": "d",
                   "condition": {"codes": {"icd10cm": ["I87.1"]}}}
    p = policy(compression, exclusions=[{**compression, "id": "excluded-compression"}])

    def evaluate(verification: str):
        chart = PatientRecord([diagnosis(verification)], [ORDER])
        return evaluate_order(p, p.rules[0], ORDER, chart, date(2026, 11, 21))

    assert evaluate("confirmed").outcome is Outcome.NOT_MEDICALLY_NECESSARY  # met, and so is the exclusion
    assert evaluate("refuted").outcome is Outcome.NOT_MEDICALLY_NECESSARY  # the criterion is contradicted
    assert evaluate("refuted").failed_ids == ("compression",)
    for verification in ("provisional", "differential", "unconfirmed"):
        evaluation = evaluate(verification)
        assert evaluation.outcome is Outcome.DOCUMENTATION_NEEDED, verification
        assert evaluation.missing_ids == ("compression",) and evaluation.failed_ids == ()
        assert evaluation.missing[0].reason == f"I87.1 recorded as {verification}, not confirmed"
        assert evaluation.missing[0].evidence == (f"Condition/c-{verification}",)  # what the reason is about
        assert evaluation.unresolved_ids == ("excluded-compression",)
        assert evaluation.unresolved[0].reason == f"I87.1 recorded as {verification}, not confirmed"
    assert evaluate("confirmed").unresolved == () and evaluate("refuted").unresolved == ()


def test_pure_core_imports_neither_flask_nor_requests():
    code = ("import sys, cds_service.policy.engine, cds_service.record, cds_service.catalog, "
            "cds_service.crd.cards, cds_service.crd.coverage, cds_service.dtr, cds_service.payers; "
            "bad = [m for m in ('flask', 'werkzeug', 'requests', 'sqlalchemy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"pure core pulled in {result.stdout.strip()} {result.stderr[-500:]}"
