"""CRD behaviour a client can steer: configuration options, versions, payers, and the CLI's view of it."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest

from cds_service.catalog import bundled_policy_dir
from cds_service.config import Settings
from tests.conftest import FIXTURES
from tests.conftest import fixture_request
from tests.support.crd import check_response
from tests.support.hooks import condition
from tests.support.hooks import full_prefetch
from tests.support.hooks import hook_request
from tests.support.hooks import service_request

SIGN = "/cds-services/order-sign-crd"


def _topics(data: dict) -> list[str]:
    return [c["source"]["topic"]["code"] for c in data["cards"]]


def _with_configuration(name: str, configuration: dict) -> dict:
    body = fixture_request(name)
    body["extension"] = {"davinci-crd.configuration": configuration}
    return body


def test_default_cards_for_a_documentation_gap(client):
    data = client.post(SIGN, json=fixture_request("sclero-seed-case")).get_json()
    assert _topics(data) == ["coverage-info", "therapy-alternatives-req", "guideline"]


@pytest.mark.parametrize("configuration, topics, actions", [
    ({"guideline": False}, ["coverage-info", "therapy-alternatives-req"], True),
    ({"therapy-alternatives-req": False}, ["coverage-info", "guideline"], True),
    ({"coverage-info": False}, ["therapy-alternatives-req", "guideline"], False),
    ({"coverage-info": False, "request-form-completion": True}, ["therapy-alternatives-req", "guideline"], False),
    ({"max-cards": 1}, ["coverage-info"], True),
    ({"max-cards": 0}, [], True),
    ({"request-form-completion": True}, ["coverage-info", "therapy-alternatives-req", "coverage-info", "guideline"], True),
    ({"alt-drug": True, "guideline": "no", "max-cards": -3}, ["coverage-info", "therapy-alternatives-req", "guideline"], True),
])
def test_configuration_options_are_honoured(client, configuration, topics, actions):
    body = _with_configuration("sclero-seed-case", configuration)
    response = client.post(SIGN, json=body)
    assert response.status_code == 200
    data = response.get_json()
    assert _topics(data) == topics
    assert bool(data.get("systemActions")) is actions
    if actions:
        assert not check_response(body, data, "order-sign")


def test_request_form_card_creates_a_task_for_the_questionnaire(client):
    data = client.post(SIGN, json=_with_configuration("sclero-seed-case", {"request-form-completion": True})).get_json()
    card = next(c for c in data["cards"] if c.get("suggestions") and
                c["suggestions"][0]["actions"][0]["resource"]["resourceType"] == "Task")
    task = card["suggestions"][0]["actions"][0]["resource"]
    assert task["code"]["coding"][0]["code"] == "complete-questionnaire"
    assert task["input"][0]["valueCanonical"].startswith("http://example.org/fhir/cds-prior-auth/Questionnaire/sclerotherapy|")
    # as CRD's questionnaire Task: coded inputs, the payer as requester, what to do with the answers
    assert task["input"][0]["type"]["coding"][0]["code"] == "questionnaire"
    assert task["input"][1]["type"]["coding"][0]["code"] == "after-completion-action"
    assert task["input"][1]["valueCodeableConcept"]["coding"][0]["code"] == "prior-auth-include"
    assert task["requester"]["display"] == card["source"]["label"]
    assert task["reasonCode"]["coding"][0]["code"] == "reason-prior-auth"
    assert {"reference": "ServiceRequest/sclero-seed-order-36470"} in task["basedOn"]


def test_suggested_order_without_a_drafted_requester_names_the_signing_user(client):
    body = fixture_request("sclero-seed-case")
    for entry in body["context"]["draftOrders"]["entry"]:
        entry["resource"].pop("requester", None)
    data = client.post(SIGN, json=body).get_json()
    created = [a["resource"] for c in data["cards"] for s in c.get("suggestions", []) for a in s["actions"]
               if a["resource"]["resourceType"] == "ServiceRequest"]
    assert created and all(r["requester"] == {"reference": body["context"]["userId"]} for r in created)


def test_additional_order_already_drafted_is_not_suggested_again(client):
    data = client.post(SIGN, json=fixture_request("sclero-sfj-reflux-with-ablation")).get_json()
    suggested = [a["resource"]["code"]["coding"][0]["code"] for c in data["cards"]
                 for s in c.get("suggestions", []) for a in s["actions"]]
    assert "36475" not in suggested


def test_requested_version_2_2_uses_indeterminate_when_evidence_is_missing(client):
    prefetch = full_prefetch(condition("I87.1", "c1", text="May-Thurner"))
    del prefetch["observations"]
    body = hook_request(service_request("37238"), prefetch=prefetch, fhirServer="http://127.0.0.1:1/fhir")
    for version, covered in (("2.2", "indeterminate"), ("2.0", "conditional"), ("9.9", "conditional")):
        body["extension"] = {"davinci-crd.requestedVersion": version}
        data = client.post(SIGN, json=body).get_json()
        parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
        assert next(p["valueCode"] for p in parts if p["url"] == "covered") == covered
        assert not check_response(body, data, "order-sign")


def _payer_body(payor: dict, organization: dict | None = None) -> dict:
    coverage = {"resourceType": "Coverage", "id": "cov", "status": "active", "beneficiary": {"reference": "Patient/p1"},
                "payor": [payor]}
    extra = [coverage] + ([organization] if organization else [])
    # Multiple sclerosis + venous angioplasty: Healthy Blue's guideline calls it investigational; Cohere's has no
    # such exclusion (and does not cover 37248 at all).
    return hook_request(service_request("37248"), prefetch=full_prefetch(condition("G35.D", "ms"), *extra))


@pytest.mark.parametrize("payor, organization, label", [
    ({"reference": "Organization/hb"}, {"resourceType": "Organization", "id": "hb", "name": "Somewhere",
                                         "identifier": [{"system": "http://example.org/fhir/payer-id",
                                                         "value": "healthy-blue"}]}, "Healthy Blue"),
    ({"identifier": {"system": "http://example.org/fhir/payer-id", "value": "healthy-blue"}}, None, "Healthy Blue"),
    ({"display": "healthy blue"}, None, "Healthy Blue"),
    ({"reference": "Organization/x"}, {"resourceType": "Organization", "id": "x", "name": "Healthy Blue"}, "Healthy Blue"),
])
def test_payer_comes_from_the_coverage(client, payor, organization, label):
    data = client.post(SIGN, json=_payer_body(payor, organization)).get_json()
    assert {c["source"]["label"] for c in data["cards"]} == {label}
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "not-covered"
    assert next(p["valueReference"] for p in parts if p["url"] == "coverage") == {"reference": "Coverage/cov"}


@pytest.mark.parametrize("change, why", [
    ({"status": "cancelled"}, "its status is cancelled"),
    ({"period": {"start": "2020-01-01", "end": "2025-12-31"}}, "its period ended 2025-12-31"),
    ({"period": {"start": "2099-01-01"}}, "its period starts 2099-01-01"),
])
def test_a_coverage_not_in_force_covers_nothing(client, change, why):
    body = _payer_body({"display": "Healthy Blue"})
    coverage = next(e["resource"] for e in body["prefetch"]["coverage"]["entry"]
                    if e["resource"]["resourceType"] == "Coverage")
    coverage.update(change)
    data = client.post(SIGN, json=body).get_json()
    assert [c["summary"] for c in data["cards"]] == ["CPT 37248: Healthy Blue coverage not in force"]
    assert why in data["cards"][0]["detail"]
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "not-covered"
    assert not any(p["url"] in ("pa-needed", "doc-needed", "questionnaire") for p in parts)
    reason = next(p["valueCodeableConcept"] for p in parts if p["url"] == "reason")
    assert reason["text"] == f"Coverage/cov is not in force: {why}" and "coding" not in reason
    assert not check_response(body, data, "order-sign")
    body["extension"] = {"davinci-crd.requestedVersion": "2.2"}
    parts = client.post(SIGN, json=body).get_json()["systemActions"][0]["resource"]["extension"][-1]["extension"]
    reason = next(p["valueCodeableConcept"] for p in parts if p["url"] == "reason")
    assert reason["coding"] == [{"system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                                 "code": "no-active-coverage"}]


def test_the_coverage_in_force_is_the_primary_one(client):
    body = _payer_body({"display": "Healthy Blue"})
    entries = body["prefetch"]["coverage"]["entry"]
    ended = {"resourceType": "Coverage", "id": "old", "status": "active", "beneficiary": {"reference": "Patient/p1"},
             "period": {"end": "2024-06-30"}, "payor": [{"display": "Cohere demo plan"}]}
    entries.insert(0, {"resource": ended})
    data = client.post(SIGN, json=body).get_json()
    assert {c["source"]["label"] for c in data["cards"]} == {"Healthy Blue"}
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueReference"] for p in parts if p["url"] == "coverage") == {"reference": "Coverage/cov"}
    # Of two in force, Coverage.order says which is primary.
    secondary = {**ended, "id": "second", "order": 2, "period": {"start": "2020-01-01"}}
    entries[0] = {"resource": secondary}
    next(e["resource"] for e in entries if e["resource"].get("id") == "cov")["order"] = 1
    data = client.post(SIGN, json=body).get_json()
    assert {c["source"]["label"] for c in data["cards"]} == {"Healthy Blue"}


def test_another_payers_coverage_in_force_does_not_hide_ours(client):
    """A secondary plan with a payer not configured here (even ranked first) is not this service's to answer."""
    body = _payer_body({"display": "Healthy Blue"})
    other = {"resourceType": "Coverage", "id": "medicare", "status": "active", "order": 1,
             "beneficiary": {"reference": "Patient/p1"}, "payor": [{"display": "Medicare Part B"}]}
    body["prefetch"]["coverage"]["entry"].insert(0, {"resource": other})
    data = client.post(SIGN, json=body).get_json()
    assert {c["source"]["label"] for c in data["cards"]} == {"Healthy Blue"}
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueReference"] for p in parts if p["url"] == "coverage") == {"reference": "Coverage/cov"}


def test_several_coverages_in_force_none_ranked_first_cover_nothing(client):
    """CRD: with more than one coverage in force and no way to tell which applies, the answer is not-covered."""
    body = _payer_body({"display": "Healthy Blue"})
    twin = {"resourceType": "Coverage", "id": "cov2", "status": "active", "beneficiary": {"reference": "Patient/p1"},
            "payor": [{"display": "Cohere demo plan"}]}
    body["prefetch"]["coverage"]["entry"].append({"resource": twin})
    body["extension"] = {"davinci-crd.requestedVersion": "2.2"}
    data = client.post(SIGN, json=body).get_json()
    assert [c["summary"] for c in data["cards"]] == ["CPT 37248: which coverage applies is unclear"]
    assert "2 Coverages are in force" in data["cards"][0]["detail"]
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "not-covered"
    assert next(p["valueReference"] for p in parts if p["url"] == "coverage") == {
        "display": "Several Coverages in force, none ranked primary"}
    reason = next(p["valueCodeableConcept"] for p in parts if p["url"] == "reason")
    assert reason["coding"][0]["code"] == "coverage-not-found" and "Coverage.order" in reason["text"]
    assert not check_response(body, data, "order-sign")
    # Ranking one first resolves it.
    twin["order"] = 2
    next(e["resource"] for e in body["prefetch"]["coverage"]["entry"] if e["resource"]["id"] == "cov")["order"] = 1
    data = client.post(SIGN, json=body).get_json()
    assert {c["source"]["label"] for c in data["cards"]} == {"Healthy Blue"}


def test_the_two_demo_payers_answer_with_their_own_policies(client):
    cohere = client.post(SIGN, json=_payer_body({"identifier": {"system": "http://example.org/fhir/payer-id",
                                                                 "value": "cohere-demo"}})).get_json()
    parts = cohere["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "covered"  # no Cohere policy for 37248
    assert next(p["valueCode"] for p in parts if p["url"] == "pa-needed") == "no-auth"
    assert cohere["cards"] == []


def test_without_coverage_the_default_payer_answers_and_says_so(client):
    body = hook_request(service_request("37238"), prefetch=full_prefetch())
    data = client.post(SIGN, json=body).get_json()
    assert data["cards"][0]["source"]["label"] == "Cohere demo plan"
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert any(p["url"] == "reason" and "No active Coverage" in p["valueCodeableConcept"]["text"] for p in parts)


def _client_with_payers_setting(tmp_path, make_client, setting: str, value: str):
    """A client whose cards/payers.yaml sets *setting* to *value* (the bundled file says "default")."""
    policies = tmp_path / "cards"
    shutil.copytree(bundled_policy_dir(), policies)
    payers = policies / "payers.yaml"
    payers.write_text(payers.read_text().replace(f"{setting}: default", f"{setting}: {value}"))
    return make_client(policy_dir=policies)


def test_unknown_payer_is_rejected_when_configured(tmp_path, make_client):
    client = _client_with_payers_setting(tmp_path, make_client, "unknown_payer", "reject")
    response = client.post(SIGN, json=_payer_body({"display": "Acme Health"}))
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.coverage"]


def test_without_coverage_a_payer_endpoint_can_answer_not_covered(tmp_path, make_client):
    client = _client_with_payers_setting(tmp_path, make_client, "no_coverage", "not-covered")
    body = hook_request(service_request("37238"), prefetch=full_prefetch(condition("I87.1", "c1", text="May-Thurner")),
                        extension={"davinci-crd.requestedVersion": "2.2"})
    data = client.post(SIGN, json=body).get_json()
    assert [c["summary"] for c in data["cards"]] == ["CPT 37238: no coverage on record"]
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "not-covered"
    assert next(p["valueReference"] for p in parts if p["url"] == "coverage") == {"display": "No active coverage on record"}
    reason = next(p["valueCodeableConcept"] for p in parts if p["url"] == "reason")
    assert reason["coding"][0]["code"] == "coverage-not-found" and reason["text"]
    assert not any(p["url"] in ("pa-needed", "doc-needed") for p in parts)
    assert not check_response(body, data, "order-sign")


def test_cli_evaluate_prints_the_three_valued_tree():
    result = subprocess.run([sys.executable, "-m", "cds_service.cli", "evaluate",
                             str(FIXTURES / "requests" / "mbb-seed-case.order-sign.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ServiceRequest/mbb-seed-order-64493 CPT 64493: not-medically-necessary" in out
    assert "[NOT MET]" in out and "[undocumented]" in out and "[met]" in out
    assert "cite:" in out and "evidence: Condition/mbb-seed-radiculopathy" in out
    bundle = subprocess.run([sys.executable, "-m", "cds_service.cli", "evaluate",
                             str(FIXTURES / "patients" / "fusion-meets.json"), "--order", "fusion-meets-order-22633"],
                            capture_output=True, text=True)
    assert bundle.returncode == 0 and "meets-criteria" in bundle.stdout


def test_settings_from_a_toml_file_and_environment(tmp_path, monkeypatch):
    config = tmp_path / "cds.toml"
    config.write_text('port = 9191\nfhir_allowlist = ["https://ehr.example.org/fhir"]\nhook_deadline_seconds = 3.5\n')
    monkeypatch.setenv("CDS_CONFIG_FILE", str(config))
    monkeypatch.setenv("CDS_PORT", "9292")
    settings = Settings()
    assert settings.port == 9292, "environment wins over the file"
    assert settings.fhir_allowlist == ["https://ehr.example.org/fhir"] and settings.hook_deadline_seconds == 3.5
    monkeypatch.setenv("CDS_FHIR_ALLOWLIST", "https://a.example/fhir, https://b.example")
    assert Settings().fhir_allowlist == ["https://a.example/fhir", "https://b.example"]
    monkeypatch.setenv("CDS_FHIR_ALLOWLIST", "ftp://nope")
    with pytest.raises(ValueError):
        Settings()


def test_order_select_answers_only_the_selected_orders(client):
    body = copy.deepcopy(fixture_request("mbb-seed-case"))
    body["hook"] = "order-select"
    body["context"]["selections"] = ["ServiceRequest/mbb-seed-order-64493"]
    data = client.post("/cds-services/order-select-crd", json=body).get_json()
    assert [a["resource"]["id"] for a in data["systemActions"]] == ["mbb-seed-order-64493"]
    assert not check_response(body, data, "order-select")


def test_a_suspected_exclusion_is_shown_to_rule_out_while_the_order_meets_criteria(client):
    body = fixture_request("mbb-meets")
    unconfirmed = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                               "code": "provisional"}]}
    body["prefetch"]["conditions"]["entry"].append({"resource": condition(
        "M54.16", "suspected-radiculopathy", patient="mbb-meets-patient", verificationStatus=unconfirmed)})

    data = client.post(SIGN, json=body).get_json()

    assert not check_response(body, data, "order-sign")
    card = next(c for c in data["cards"] if c["source"]["topic"]["code"] == "coverage-info")
    assert card["indicator"] == "warning"
    assert "meets" in card["summary"] and "1 exclusion to rule out" in card["summary"]
    assert "**On record but not established**" in card["detail"]
    assert "recorded as provisional, not confirmed (evidence: Condition/suspected-radiculopathy)" in card["detail"]
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "covered"
    reasons = [p["valueCodeableConcept"]["text"] for p in parts if p["url"] == "reason"]
    assert any(r.startswith("On record but not established, to rule out: Active or untreated radiculopathy")
               for r in reasons)


def _not_covered_reason(data: dict) -> str:
    parts = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    assert next(p["valueCode"] for p in parts if p["url"] == "covered") == "not-covered"
    return next(p["valueCodeableConcept"]["text"] for p in parts if p["url"] == "reason")


def test_an_exclusion_the_record_shows_is_stated_as_found(client):
    """The guideline excludes radiculopathy: the card and the coverage reason say it is there."""
    body = fixture_request("mbb-meets")
    body["prefetch"]["conditions"]["entry"].append(
        {"resource": condition("M54.16", "radiculopathy", patient="mbb-meets-patient")})

    data = client.post(SIGN, json=body).get_json()

    card = next(c for c in data["cards"] if c["source"]["topic"]["code"] == "coverage-info")
    assert "**Excluded by the guideline**\n- **Active or untreated radiculopathy" in card["detail"]
    assert "**Criteria not met**" not in card["detail"]
    assert _not_covered_reason(data).startswith("Not medically necessary: Active or untreated radiculopathy")


def test_a_requirement_the_record_contradicts_is_stated_as_not_met(client):
    """Pain for 2 months against "more than 3 months": the reason must not read as if the pain had lasted longer."""
    body = fixture_request("mbb-meets")
    duration = next(e["resource"] for e in body["prefetch"]["observations"]["entry"]
                    if e["resource"]["id"] == "mbb-meets-pain-duration")
    duration["valueQuantity"]["value"] = 2

    data = client.post(SIGN, json=body).get_json()

    card = next(c for c in data["cards"] if c["source"]["topic"]["code"] == "coverage-info")
    assert "**Criteria not met**\n- **Back pain present for more than 3 months**" in card["detail"]
    assert "**Excluded by the guideline**" not in card["detail"]
    reason = _not_covered_reason(data)
    assert reason.startswith("Not medically necessary: not met: Back pain present for more than 3 months (")
    assert "2026-10-14: 2 months when recorded" in reason


def test_an_indication_the_record_rules_out_is_shown_beside_the_open_ones(client):
    """May-Thurner with superficial truncal reflux: that route is not offered, and the card says why."""
    body = fixture_request("cohere-may-thurner-meets")
    reflux = next(e["resource"] for e in body["prefetch"]["observations"]["entry"]
                  if e["resource"]["id"] == "cohere-mt-truncal-reflux")
    reflux["valueBoolean"] = True

    data = client.post(SIGN, json=body).get_json()

    card = next(c for c in data["cards"] if c["source"]["topic"]["code"] == "coverage-info")
    assert "documentation item needed" in card["summary"]
    offered, ruled_out = card["detail"].split("Ruled out by the record:")
    assert "Iliac vein compression syndrome" not in offered.split("Any one of:")[1]
    assert "- Iliac vein compression syndrome with CEAP 4-6 changes and no superficial truncal reflux — not met: " \
           "No superficial truncal reflux on duplex ultrasound (" in ruled_out
