"""DTR answers stored in the EHR, and the service on PostgreSQL."""

from __future__ import annotations


import pytest

from cds_service.config import Settings
from cds_service.web.app import create_app
from tests.conftest import FIXTURES
from tests.conftest import fixture_request
from tests.conftest import load_json

pytestmark = pytest.mark.integration

SIGN = "/cds-services/order-sign-crd"


def _covered(data: dict) -> list[str]:
    return [next(e["valueCode"] for e in a["resource"]["extension"][-1]["extension"] if e["url"] == "covered")
            for a in data["systemActions"]]


def test_questionnaire_response_in_the_ehr_completes_the_documentation(tmp_path, fresh_fhir_server):
    server = fresh_fhir_server
    server.load(load_json(FIXTURES / "patients" / "cohere-iliac-compression-undocumented.json"))
    app = create_app(Settings(data_dir=tmp_path))
    client = app.test_client()
    body = fixture_request("cohere-iliac-compression-undocumented")
    body.pop("prefetch")
    body["fhirServer"] = server.base_url
    body["fhirAuthorization"] = {"access_token": server.token, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    assert _covered(client.post(SIGN, json=body).get_json()) == ["conditional"]

    questionnaire = client.get("/fhir/Questionnaire/cohere-venous-stents").get_json()
    server.put({
        "resourceType": "QuestionnaireResponse", "id": "cohere-ivcs-dtr", "status": "completed",
        "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}",
        "subject": {"reference": "Patient/cohere-ivcs-patient"}, "authored": "2026-11-03T09:00:00Z",
        "item": [{"linkId": "group-venous-stent-placement", "item": [
            {"linkId": "ceap-class-recorded", "answer": [{"valueBoolean": True}]},
            {"linkId": "no-superficial-truncal-reflux", "answer": [{"valueBoolean": True}]}]}],
    })
    server.reset_stats()
    assert _covered(client.post(SIGN, json=body).get_json()) == ["covered"]
    assert any(r["path"].endswith("/QuestionnaireResponse") for r in server.stats())
    app.extensions["cds"].close()


@pytest.fixture
def postgres_app(postgres_url):
    app = create_app(Settings(database_url=postgres_url))
    yield app
    app.extensions["cds"].close()


def test_service_records_assertions_and_feedback_in_postgresql(postgres_app):
    app = postgres_app
    client = app.test_client()
    data = client.post(SIGN, json=fixture_request("mbb-seed-case")).get_json()
    ids = [next(e["valueString"] for e in a["resource"]["extension"][-1]["extension"]
                if e["url"] == "coverage-assertion-id") for a in data["systemActions"]]
    assert len(ids) == 3
    for assertion_id in ids:
        record = client.get(f"/coverage-assertions/{assertion_id}").get_json()
        assert record["covered"] == "not-covered" and record["payer_id"] == "healthy-blue"
    card = data["cards"][0]["uuid"]
    feedback = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T12:00:00Z",
                              "overrideReason": {"reason": {"system": "http://example.org/x", "code": "urgent",
                                                            "display": "Urgent"}}}]}
    assert client.post(f"{SIGN}/feedback", json=feedback).status_code == 200
    stored = app.extensions["cds"].store.feedback_for_card(card)
    assert [(f.outcome, f.override_reason_code) for f in stored] == [("overridden", "urgent")]
    assert client.get("/readyz").get_json()["database"] == "ok"
