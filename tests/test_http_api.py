"""The CDS Hooks HTTP surface: discovery, routing, bad input, CORS, feedback, health."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from tests.conftest import ROOT
from tests.conftest import SHARED
from tests.conftest import load_json
from tests.support.hooks import condition
from tests.support.hooks import full_prefetch
from tests.support.hooks import hook_request
from tests.support.hooks import service_request

SIGN = "/cds-services/order-sign-crd"
SELECT = "/cds-services/order-select-crd"


def _outcome(response) -> list[dict]:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] == "error" and i["diagnostics"] for i in body["issue"])
    return body["issue"]


def test_discovery_lists_both_services_with_prefetch_and_crd_options(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.get_json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign"}
    for service in services.values():
        assert service["description"] and service["title"]
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert service["prefetch"]["coverage"].startswith("Coverage?patient={{context.patientId}}&status=active")
        for query in service["prefetch"].values():  # CDS Hooks 2.0 tokens only
            assert "{{context.patientId}}" in query and "draftOrders" not in query
        options = service["extension"]["davinci-crd.configuration-options"]
        codes = [o["code"] for o in options]
        assert len(codes) == len(set(codes)) and {"coverage-info", "guideline", "therapy-alternatives-req"} <= set(codes)
        assert all(o["type"] in ("boolean", "integer") and o["name"] and o["description"] for o in options)


def test_hook_answers_with_cards_and_coverage_information(client):
    order = service_request("37238")
    body = hook_request(order, prefetch=full_prefetch(condition("I87.1", "c1")))
    response = client.post(SIGN, json=body)
    assert response.status_code == 200
    data = response.get_json()
    assert data["cards"] and data["cards"][0]["summary"].startswith("CPT 37238")
    action = data["systemActions"][0]
    assert action["type"] == "update" and action["resource"]["id"] == "sr1"


@pytest.mark.parametrize("body, expression", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'"a string"', None),
    (json.dumps({"hookInstance": "x", "context": {}}).encode(), "hook"),
    (json.dumps({"hook": "order-sign", "context": {"patientId": "p", "draftOrders": {
        "resourceType": "Bundle"}}}).encode(), "hookInstance"),
    (json.dumps({"hook": "order-sign", "hookInstance": "x"}).encode(), "context"),
    (json.dumps({"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p", "draftOrders": {
        "resourceType": "Patient"}}}).encode(), "context.draftOrders.resourceType"),
    (json.dumps({"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p",
                                                                         "draftOrders": []}}).encode(), "context.draftOrders"),
    (json.dumps({"hook": "order-sign", "hookInstance": "x", "context": {"draftOrders": {
        "resourceType": "Bundle"}}}).encode(), "context.patientId"),
    (json.dumps({"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p", "draftOrders": {
        "resourceType": "Bundle", "entry": [{"resource": {"resourceType": ["ServiceRequest"]}}]}}}).encode(),
     "context.draftOrders.entry.0.resource"),
])
def test_bad_requests_get_400_with_an_operation_outcome(client, body, expression):
    response = client.post(SIGN, data=body, content_type="application/json")
    assert response.status_code == 400
    issues = _outcome(response)
    if expression:
        assert any(expression in i.get("expression", [""])[0] for i in issues), issues
    assert b"Traceback" not in response.data


def test_codes_that_are_not_strings_are_no_codes_not_a_500(client):
    order = service_request("37238")
    order["code"]["coding"].append({"system": ["http://www.ama-assn.org/go/cpt"], "code": 37239})
    evidence = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": {"x": 1}, "code": ["I87.1"]}]}}
    response = client.post(SIGN, json=hook_request(order, prefetch=full_prefetch(evidence)))
    assert response.status_code == 200
    assert response.get_json()["systemActions"][0]["resource"]["id"] == "sr1"


def test_unknown_service_is_404_and_wrong_method_is_405(client):
    response = client.post("/cds-services/no-such-service", json=hook_request(service_request("37238")))
    assert response.status_code == 404
    _outcome(response)
    response = client.get(SIGN)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    _outcome(response)


def test_body_over_the_limit_is_413(make_client):
    client = make_client(max_body_bytes=2048)
    response = client.post(SIGN, data=b"{" + b" " * 4096 + b"}", content_type="application/json")
    assert response.status_code == 413
    _outcome(response)


def test_cors_preflight_and_headers(client):
    for path in ("/cds-services", SIGN, f"{SIGN}/feedback"):
        response = client.options(path, headers={"Origin": "https://sandbox.cds-hooks.org",
                                                 "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization,content-type"})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert client.get("/cds-services").headers["Access-Control-Allow-Origin"] == "*"


def test_cors_allowlist_echoes_only_known_origins(make_client):
    client = make_client(cors_origins=["https://ehr.example.org"])
    assert client.get("/cds-services", headers={"Origin": "https://ehr.example.org"}).headers[
        "Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Access-Control-Allow-Origin" not in client.get("/cds-services", headers={"Origin": "https://evil.example"}).headers


def test_mismatched_hook_is_routed_by_service_id(client, caplog):
    # The CDS Hooks Sandbox sends the page's hook, not the service's.
    body = hook_request(service_request("37238"), hook="order-select", prefetch=full_prefetch())
    with caplog.at_level("INFO"):
        response = client.post(SIGN, json=body)
    assert response.status_code == 200
    assert response.get_json()["systemActions"], "answered as order-sign: coverage information on the order"
    assert "answering as order-sign" in caplog.text


def _coverage_parts(action: dict) -> dict:
    info = action["resource"]["extension"][-1]
    return {p["url"]: p for p in info["extension"]}


def test_every_order_being_signed_gets_coverage_information(client):
    """CRD: a primary hook answers every order, not only the ServiceRequests a policy covers."""
    medication = {"resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order",
                  "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                            "code": "197361"}]},
                  "subject": {"reference": "Patient/p1"}}
    device = {"resourceType": "DeviceRequest", "id": "d1", "status": "draft", "intent": "order",
              "codeCodeableConcept": {"coding": [{"system": "https://bluebutton.cms.gov/resources/codesystem/hcpcs",
                                                  "code": "E0250"}]}, "subject": {"reference": "Patient/p1"}}
    uncoded = {"resourceType": "DeviceRequest", "id": "d2", "status": "draft", "intent": "order",
               "codeCodeableConcept": {"coding": [{}]}, "subject": {"reference": "Patient/p1"}}
    supply = {"resourceType": "SupplyRequest", "id": "s1", "status": "draft"}
    body = hook_request(medication, device, uncoded, supply, prefetch=full_prefetch())
    response = client.post(SIGN, json=body)
    assert response.status_code == 200
    data = response.get_json()
    assert data["cards"] == []  # no guideline covers these: nothing for the clinician to do
    actions = {f'{a["resource"]["resourceType"]}/{a["resource"]["id"]}': a for a in data["systemActions"]}
    assert set(actions) == {"MedicationRequest/m1", "DeviceRequest/d1", "DeviceRequest/d2"}  # SupplyRequest
    # cannot carry coverage information
    for ref in ("MedicationRequest/m1", "DeviceRequest/d1"):  # the payer's answer for services without a policy
        parts = _coverage_parts(actions[ref])
        assert parts["covered"]["valueCode"] == "covered" and parts["pa-needed"]["valueCode"] == "no-auth"
    assert _coverage_parts(actions["DeviceRequest/d1"])["billingCode"]["valueCoding"]["code"] == "E0250"
    uncoded_parts = _coverage_parts(actions["DeviceRequest/d2"])
    assert uncoded_parts["covered"]["valueCode"] == "conditional"
    assert uncoded_parts["info-needed"]["valueCode"] == "OTH"
    assert uncoded_parts["reason"]["valueCodeableConcept"]["coding"][0]["code"] == "detail-code"
    body["extension"] = {"davinci-crd.requestedVersion": "2.2"}
    again = client.post(SIGN, json=body).get_json()
    uncoded_22 = next(_coverage_parts(a) for a in again["systemActions"] if a["resource"]["id"] == "d2")
    assert uncoded_22["info-needed"]["valueCode"] == "detail-code" and "coding" not in \
        uncoded_22["reason"]["valueCodeableConcept"]


def test_uncoded_orders_being_selected_get_nothing(client):
    order = service_request("37238")
    order["code"] = {"coding": [{}]}
    body = hook_request(order, hook="order-select", prefetch=full_prefetch())
    assert client.post(SELECT, json=body).get_json() == {"cards": []}


def test_empty_coding_and_unknown_fields_are_tolerated(client):
    order = service_request("37238")
    order["code"] = {"coding": [{}]}
    order["reasonCode"] = []
    body = hook_request(order, hook="order-select", prefetch=full_prefetch(), unknownField={"x": 1})
    body["context"]["selections"] = ["ServiceRequest/sr1"]
    body["context"]["draftOrders"].pop("type", None)
    response = client.post(SELECT, json=body)
    assert response.status_code == 200
    assert response.get_json()["cards"] == []


@pytest.mark.parametrize("name", [
    "sandbox-pama-order-select-request-initial-empty-coding.json",
    "sandbox-pama-order-select-request.json",
    "sandbox-rxsign-order-sign-request.json",
    "sandbox-pama-order-sign-request-cpt64493-via-store-dispatch.json",
    "crd-request-generator-order-sign-request.json",
])
def test_recorded_real_client_requests_get_valid_answers(client, name):
    body = load_json(SHARED / "peer-fixtures" / "captured-client-requests" / name)
    service = SELECT if "order-select" in name else SIGN
    response = client.post(service, json=body)
    assert response.status_code == 200, response.get_json()
    data = response.get_json()
    assert isinstance(data["cards"], list)
    orders = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    codes = [c.get("code") for o in orders if o["resourceType"] == "ServiceRequest"
             for c in o.get("code", {}).get("coding", [])]
    if service == SIGN and "64493" in codes:
        # 64493 is a policy order: the FHIR server named in the capture is gone, so the evidence
        # could not be retrieved -> coverage information says so and never "covered".
        extension = data["systemActions"][0]["resource"]["extension"][-1]
        covered = next(e["valueCode"] for e in extension["extension"] if e["url"] == "covered")
        assert covered != "covered"


def test_feedback_accepts_both_override_reason_shapes(client, app):
    flat = {"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z",
            "overrideReason": {"system": "http://example.org/fhir/cds-prior-auth/CodeSystem/override-reason",
                               "code": "will-document", "display": "Will add the documentation before submission"}}
    nested = {"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:00Z",
              "overrideReason": {"reason": {"system": "http://example.org/x", "code": "urgent", "display": "Urgent"},
                                 "userComment": "patient in clinic today"}}
    accepted = {"card": "c-2", "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:06:00Z",
                "acceptedSuggestions": [{"id": "s-9"}]}
    response = client.post(f"{SIGN}/feedback", json={"feedback": [flat, nested, accepted]})
    assert response.status_code == 200
    store = app.extensions["cds"].store
    first, second = store.feedback_for_card("c-1")
    assert (first.override_reason_code, first.override_comment) == ("will-document", None)
    assert (second.override_reason_code, second.override_comment) == ("urgent", "patient in clinic today")
    assert store.feedback_for_card("c-2")[0].accepted_suggestions == ("s-9",)


def test_feedback_with_malformed_reason_parts_is_recorded_without_them(client, app):
    """A non-string code or suggestion id is no code (it was a 503: the store refused a list)."""
    item = {"card": "c-3", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z",
            "acceptedSuggestions": [{"id": ["s-1"]}, {"id": "s-2"}],
            "overrideReason": {"reason": {"system": {"x": 1}, "code": [{"code": "c"}], "display": 5},
                               "userComment": "see note"}}
    response = client.post(f"{SIGN}/feedback", json={"feedback": [item]})
    assert response.status_code == 200
    (stored,) = app.extensions["cds"].store.feedback_for_card("c-3")
    assert (stored.override_reason_system, stored.override_reason_code, stored.override_comment) == \
        (None, None, "see note")
    assert stored.accepted_suggestions == ("s-2",)


@pytest.mark.parametrize("body", [
    {"feedback": []},
    {"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]},
    {"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]},
    {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "yesterday"}]},
    {"nothing": True},
])
def test_invalid_feedback_is_400(client, body):
    response = client.post(f"{SIGN}/feedback", json=body)
    assert response.status_code == 400
    _outcome(response)


def test_a_database_that_refuses_the_write_gets_503_and_keeps_what_it_had(make_client, tmp_path):
    """The coverage assertion could not be stored: the EHR must not get a cardless 200 or a stack trace."""
    client = make_client(data_dir=tmp_path / "data")
    body = hook_request(service_request("37238"), prefetch=full_prefetch(condition("I87.1", "c1")))
    first = client.post(SIGN, json=body).get_json()
    database = sqlite3.connect(tmp_path / "data" / "cds-service.sqlite3")
    database.execute("CREATE TRIGGER refuse BEFORE INSERT ON coverage_assertion BEGIN SELECT RAISE(ABORT, 'no'); END")
    database.commit()

    response = client.post(SIGN, json=body)

    assert response.status_code == 503
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "retry" in outcome["issue"][0]["diagnostics"] and "Traceback" not in response.get_data(as_text=True)
    stored = database.execute("SELECT count(*) FROM coverage_assertion").fetchone()[0]
    assert stored == len(first["systemActions"]) == 1


def test_liveness_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["database"] == "ok"


def test_the_readme_example_answers_as_the_readme_shows(client):
    """The README's curl example: same request file, same card summaries, one coverage action per order."""
    readme = (ROOT / "README.md").read_text()
    request_file = re.search(r"--data @(fhir_fixtures/requests/\S+\.json)", readme).group(1)
    example = readme[readme.index(request_file):]
    shown = re.findall(r'\{"?\s*"summary": "([^"]+)"', example[:example.index("systemActions")])
    body = load_json(ROOT / request_file)
    answer = client.post("/cds-services/order-sign-crd", json=body).get_json()
    assert [card["summary"] for card in answer["cards"]] == shown
    orders = [e for e in body["context"]["draftOrders"]["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert len(answer["systemActions"]) == len(orders)
