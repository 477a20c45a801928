"""DTR: the Questionnaire generated from a policy, and the round trip through a QuestionnaireResponse."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import fixture_request

SIGN = "/cds-services/order-sign-crd"
SELECT = "/cds-services/order-select-crd"
MISSING = "no-superficial-truncal-reflux"


def _without_truncal_reflux_duplex() -> dict:
    """The documented May-Thurner patient minus the duplex answer on superficial truncal reflux."""
    body = fixture_request("cohere-may-thurner-meets")
    entries = body["prefetch"]["observations"]["entry"]
    body["prefetch"]["observations"]["entry"] = [e for e in entries if not e["resource"]["id"].endswith("truncal-reflux")]
    return body


def _coverage(data: dict) -> dict[str, list[str]]:
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    found: dict[str, list[str]] = {}
    for part in parts:
        found.setdefault(part["url"], []).append(part.get("valueCode") or part.get("valueCanonical")
                                                 or part.get("valueString") or "")
    return found


def _response_to(questionnaire: dict, answers: dict[str, bool], patient: str) -> dict:
    def answer(items):
        out = []
        for item in items:
            if item["type"] == "group":
                inner = answer(item["item"])
                if inner:
                    out.append({"linkId": item["linkId"], "item": inner})
            elif item["linkId"] in answers:
                out.append({"linkId": item["linkId"], "answer": [{"valueBoolean": answers[item["linkId"]]}]})
        return out

    return {"resourceType": "QuestionnaireResponse", "id": "dtr-answers",
            "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}", "status": "completed",
            "subject": {"reference": f"Patient/{patient}"}, "authored": "2026-11-03T10:00:00Z",
            "item": answer(questionnaire["item"])}


def test_questionnaire_has_an_item_per_documentable_criterion(client, catalog):
    policy = catalog.policy("cohere-venous-stents")
    questionnaire = client.get("/fhir/Questionnaire/cohere-venous-stents").get_json()
    assert questionnaire["resourceType"] == "Questionnaire" and questionnaire["status"] == "active"
    assert questionnaire["version"] == policy.version
    link_ids = {i["linkId"] for group in questionnaire["item"] for i in group["item"]}
    assert MISSING in link_ids and "stent-material-allergy" in link_ids
    assert "adult" not in link_ids, "age comes from the record, it is not asked"
    item = next(i for group in questionnaire["item"] for i in group["item"] if i["linkId"] == MISSING)
    assert item["type"] == "boolean" and item["code"][0]["code"] == MISSING
    search = client.get(f"/fhir/Questionnaire?url={questionnaire['url']}").get_json()
    assert search["resourceType"] == "Bundle" and search["total"] == 1
    versioned = client.get(f"/fhir/Questionnaire?url={questionnaire['url']}|{policy.version}").get_json()
    assert versioned["total"] == 1
    assert client.get(f"/fhir/Questionnaire?url={questionnaire['url']}|0.0").get_json()["total"] == 0
    assert client.get("/fhir/Questionnaire/nope").status_code == 404
    codesystem = client.get("/fhir/CodeSystem/documentation-findings").get_json()
    assert codesystem["resourceType"] == "CodeSystem" and codesystem["concept"]


def test_order_select_then_form_then_order_sign_is_covered(client):
    body = _without_truncal_reflux_duplex()
    select = copy.deepcopy(body)
    select["hook"] = "order-select"
    select["context"]["selections"] = ["ServiceRequest/cohere-mt-order-37238"]
    selected = client.post(SELECT, json=select).get_json()
    assert "No superficial truncal reflux" in selected["cards"][0]["detail"]
    info = _coverage(selected)
    assert info["covered"] == ["conditional"] and "doc-needed" not in info and "questionnaire" not in info

    signed = client.post(SIGN, json=body).get_json()
    info = _coverage(signed)
    assert info["covered"] == ["conditional"] and info["doc-needed"] == ["clinical"]
    canonical = info["questionnaire"][0]
    url, version = canonical.split("|")
    questionnaire = client.get(f"/fhir/Questionnaire?url={url}&version={version}").get_json()["entry"][0]["resource"]

    answered = copy.deepcopy(body)
    response = _response_to(questionnaire, {MISSING: True}, "cohere-mt-patient")
    answered["prefetch"]["questionnaireResponses"]["entry"].append({"resource": response})
    covered = client.post(SIGN, json=answered).get_json()
    info = _coverage(covered)
    assert info["covered"] == ["covered"] and info["pa-needed"] == ["auth-needed"]
    assert "doc-needed" not in info
    assertion = client.get(f"/coverage-assertions/{info['coverage-assertion-id'][0]}").get_json()
    assert assertion["outcome"] == "meets-criteria" and assertion["missing_items"] == []


def test_form_answers_are_three_valued_evidence(client):
    questionnaire = client.get("/fhir/Questionnaire/cohere-venous-stents").get_json()
    # "No" on one indication's condition leaves the other indications open: still documentation needed.
    body = _without_truncal_reflux_duplex()
    body["prefetch"]["questionnaireResponses"]["entry"].append(
        {"resource": _response_to(questionnaire, {MISSING: False}, "cohere-mt-patient")})
    assert _coverage(client.post(SIGN, json=body).get_json())["covered"] == ["conditional"]
    # "Yes" on the stent-material allergy question is a met exclusion: not covered.
    body = fixture_request("cohere-may-thurner-meets")
    body["prefetch"]["questionnaireResponses"]["entry"].append(
        {"resource": _response_to(questionnaire, {"stent-material-allergy": True}, "cohere-mt-patient")})
    assert _coverage(client.post(SIGN, json=body).get_json())["covered"] == ["not-covered"]


@pytest.mark.parametrize("status", ["in-progress", "stopped"])
def test_an_unfinished_form_does_not_count(client, status):
    body = _without_truncal_reflux_duplex()
    questionnaire = client.get("/fhir/Questionnaire/cohere-venous-stents").get_json()
    response = _response_to(questionnaire, {MISSING: True}, "cohere-mt-patient")
    response["status"] = status
    body["prefetch"]["questionnaireResponses"]["entry"].append({"resource": response})
    assert _coverage(client.post(SIGN, json=body).get_json())["covered"] == ["conditional"]
