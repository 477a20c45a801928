"""Golden cases: for every case file, the engine gives the expected outcome and item ids.

A policy author adds a case by dropping a YAML file in cards/cases/<policy-id>/; see
docs/policy-format.md. No Python needed.
"""

from __future__ import annotations

from datetime import date

import pytest

import orjson

from cds_service.intake import EvidenceFilter
from cds_service.intake import read_hook_body
from cds_service.policy.engine import Outcome
from cds_service.policy.engine import evaluate_order
from cds_service.prefetch import searched_codes
from cds_service.record import PatientRecord
from tests.support.cases import all_cases

CASES = all_cases()


def test_every_policy_has_cases(catalog):
    covered = {case.policy_id for case in CASES}
    assert {p.id for p in catalog.policies} <= covered


@pytest.mark.parametrize("case", CASES, ids=[f"{c.policy_id}/{c.path.stem}" for c in CASES])
def test_policy_case(case, catalog):
    policy = catalog.policy(case.policy_id)
    assert policy is not None, f"{case.path}: no policy '{case.policy_id}'"
    record, order = case.record_and_order()
    assert order.authored_on is not None, f"{case.path}: the order needs authoredOn so the case never rots"
    payer = case.data.get("payer") or next((p for p in policy.payers if p != "*"), catalog.payers.default_payer)
    match = catalog.rule_for(payer, order)
    expect = case.expect
    if expect["outcome"] == Outcome.NO_POLICY.value and match is None:
        return
    assert match is not None and match[0].id == policy.id, f"{case.path}: order not covered by {policy.id}"
    evaluation = evaluate_order(*match, order, record, date.today())
    assert evaluation.outcome.value == expect["outcome"], _explain(evaluation)
    assert sorted(evaluation.missing_ids) == sorted(expect.get("missing", [])), _explain(evaluation)
    assert sorted(evaluation.failed_ids) == sorted(expect.get("failed", [])), _explain(evaluation)
    assert sorted(evaluation.unresolved_ids) == sorted(expect.get("unresolved", [])), _explain(evaluation)
    met_ids = {f.id for f in evaluation.met}
    assert set(expect.get("met", [])) <= met_ids, _explain(evaluation)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.policy_id}/{c.path.stem}" for c in CASES])
def test_policy_case_through_intake(case, catalog):
    """The same evaluation, evidence cited included, when the chart arrives as one prefetched
    searchset that ignored the templates' code filters and intake drops what no policy searches for."""
    chart, orders, unavailable = case.chart()
    body = {"hook": "order-sign", "hookInstance": "case", "context": {
        "patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o.resource} for o in orders]}},
        "prefetch": {"chart": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in chart]}}}
    data = read_hook_body(orjson.dumps(body), EvidenceFilter(searched_codes(catalog)))
    kept = [entry["resource"] for entry in data["prefetch"]["chart"]["entry"]]
    payer = case.data.get("payer") or next((p for p in catalog.policy(case.policy_id).payers if p != "*"),
                                           catalog.payers.default_payer)
    match = catalog.rule_for(payer, orders[0])
    if match is None:
        return
    whole = evaluate_order(*match, orders[0], PatientRecord(chart, orders, unavailable), date.today())
    filtered = evaluate_order(*match, orders[0], PatientRecord(kept, orders, unavailable), date.today())
    assert _answer(filtered) == _answer(whole), _explain(filtered)


def _answer(evaluation) -> tuple:
    return (evaluation.outcome, [(f.id, f.level, f.evidence, f.reason) for f in evaluation.missing + evaluation.failed],
            [(f.id, f.level, f.evidence) for f in evaluation.met], [(f.id, f.evidence) for f in evaluation.unresolved])


def _explain(evaluation) -> str:
    lines = [f"outcome={evaluation.outcome.value}"]
    lines += [f"  missing {f.id}: {f.text} ({f.reason})" for f in evaluation.missing]
    lines += [f"  failed  {f.id}: {f.text} ({f.reason})" for f in evaluation.failed]
    lines += [f"  met     {f.id}: {', '.join(f.evidence)}" for f in evaluation.met]
    lines += [f"  unresolved {f.id}: {f.text} ({f.reason})" for f in evaluation.unresolved]
    return "\n".join(lines)
