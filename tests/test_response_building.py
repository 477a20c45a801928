"""The last steps of a hook answer: the systemAction copy of the order, and pruning empty values."""

from __future__ import annotations

import copy

from cds_service.cdshooks import prune
from cds_service.crd.coverage import EXTENSION_URL
from cds_service.crd.coverage import system_action


def _coverage_info(coverage: str, covered: str) -> dict:
    return {"url": EXTENSION_URL, "extension": [
        {"url": "coverage", "valueReference": {"reference": coverage}},
        {"url": "covered", "valueCode": covered},
    ]}


def test_system_action_replaces_the_same_coverages_answer_and_leaves_the_draft_order_alone():
    other_extension = {"url": "http://example.org/ext", "valueString": "kept"}
    order = {
        "resourceType": "ServiceRequest", "id": "sr-1", "status": "draft",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "37238"}]},
        "extension": [_coverage_info("Coverage/a", "conditional"), other_extension,
                      _coverage_info("Coverage/b", "covered")],
    }
    sent = copy.deepcopy(order)
    answer = _coverage_info("Coverage/a", "not-covered")

    action = system_action(order, answer)

    assert order == sent  # the request's draft order is not modified
    resource = action["resource"]
    assert action["type"] == "update"
    assert resource["extension"] == [other_extension, _coverage_info("Coverage/b", "covered"), answer]
    assert {k: v for k, v in resource.items() if k != "extension"} == \
        {k: v for k, v in sent.items() if k != "extension"}


def test_system_action_is_skipped_when_the_order_already_carries_the_same_answer():
    answer = _coverage_info("Coverage/a", "covered")
    order = {"resourceType": "ServiceRequest", "id": "sr-1", "extension": [copy.deepcopy(answer)]}
    assert system_action(order, answer) is None


def test_prune_drops_empty_values_at_any_depth_but_keeps_zero_and_false():
    card = {
        "summary": "Documentation needed", "detail": "", "indicator": None, "links": [],
        "source": {"label": "Payer", "topic": {"code": "guideline", "display": None}, "icon": {}},
        "suggestions": [{"label": "x", "actions": [{}, {"description": ""}]}, {}],
        "extension": {"count": 0, "flag": False, "items": [None, "", [], {}, "kept"]},
    }
    assert prune(card) == {
        "summary": "Documentation needed",
        "source": {"label": "Payer", "topic": {"code": "guideline"}},
        "suggestions": [{"label": "x"}],
        "extension": {"count": 0, "flag": False, "items": ["kept"]},
    }
