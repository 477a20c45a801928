"""Evidence gathering from prefetch and from the EHR's FHIR server (mocked with `responses`)."""

from __future__ import annotations

import re
import time

import pytest
import requests
import responses

from tests.support.hooks import condition
from tests.support.hooks import full_prefetch
from tests.support.hooks import hook_request
from tests.support.hooks import searchset
from tests.support.hooks import service_request

FHIR = "http://127.0.0.1:9999/fhir"
SIGN = "/cds-services/order-sign-crd"
TOKEN = "secret-token-8c1f"


def _request(prefetch: dict | None = None, token: str | None = TOKEN, server: str | None = FHIR, code="37238"):
    body = hook_request(service_request(code), prefetch=prefetch)
    if server:
        body["fhirServer"] = server
    if token is not None:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-service"}
    return body


def _coverage_info(data: dict) -> dict[str, list[str]]:
    extension = data["systemActions"][0]["resource"]["extension"][-1]["extension"]
    found: dict[str, list[str]] = {}
    for part in extension:
        found.setdefault(part["url"], []).append(part.get("valueCode") or part.get("valueString") or "")
    return found


def _serve_everything_empty(rsps, patient_status=200):
    rsps.add(responses.GET, f"{FHIR}/Patient/p1", status=patient_status,
             json={"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"})
    rsps.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/(?!Patient/)\w+\?.*"), json=searchset())


@responses.activate
def test_missing_keys_are_fetched_with_the_token_on_every_call(client):
    prefetch = full_prefetch()
    for key in ("conditions", "observations", "patient"):
        del prefetch[key]
    responses.add(responses.GET, f"{FHIR}/Patient/p1", json={"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"})
    page2 = f"{FHIR}/Condition?patient=p1&_count=100&_offset=100"
    responses.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/Condition\?patient=p1&_count=100$"), json={
        "resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": page2}],
        "entry": [{"resource": condition("I87.1", "c1", text="May-Thurner")}]})
    responses.add(responses.GET, page2, json={"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": condition("I83.023", "c2")},
        {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]},
         "search": {"mode": "outcome"}}]})
    responses.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/Observation\?.*"), json=searchset())
    response = client.post(SIGN, json=_request(prefetch))
    assert response.status_code == 200
    urls = [call.request.url for call in responses.calls]
    assert len(urls) == 4 and page2 in urls
    assert all(call.request.headers["Authorization"] == f"Bearer {TOKEN}" for call in responses.calls)
    assert any("code=" in u for u in urls if "/Observation?" in u), "observations are filtered to policy codes"
    detail = response.get_json()["cards"][0]["detail"]
    assert "Condition/c1" in detail and "Condition/c2" in detail, "both pages of Conditions were used"


@responses.activate
def test_null_and_empty_bundles_are_answers_not_refetched(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = None
    prefetch["observations"] = searchset()
    response = client.post(SIGN, json=_request(prefetch))
    assert response.status_code == 200
    assert len(responses.calls) == 0


@responses.activate
def test_operation_outcome_in_prefetch_is_refetched(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    responses.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), json=searchset())
    assert client.post(SIGN, json=_request(prefetch)).status_code == 200
    assert len(responses.calls) == 1 and "/Condition?" in responses.calls[0].request.url


@pytest.mark.parametrize("failure", [
    {"status": 401, "json": {"resourceType": "OperationOutcome", "issue": []}},
    {"status": 500, "body": "boom"},
    {"status": 503, "body": "down"},
    {"status": 200, "body": "<html>not json</html>"},
    {"status": 200, "json": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}},
    {"status": 200, "json": {"resourceType": "Patient", "id": "wrong"}},
    {"status": 302, "headers": {"Location": "http://169.254.169.254/latest/meta-data"}},
    {"body": requests.exceptions.ConnectTimeout("slow")},
    {"body": requests.exceptions.ReadTimeout("slow")},
    {"body": requests.exceptions.ConnectionError("refused")},
])
@pytest.mark.parametrize("version", ["2.0", "2.2"])
def test_fhir_server_failures_never_yield_covered(client, failure, version):
    prefetch = full_prefetch(condition("I87.1", "c1"))
    del prefetch["observations"]
    body = _request(prefetch)
    body["extension"] = {"davinci-crd.requestedVersion": version}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/Observation\?.*"), **failure)
        response = client.post(SIGN, json=body)
    assert response.status_code == 200
    info = _coverage_info(response.get_json())
    if version == "2.2":
        assert info["covered"] == ["indeterminate"] and info["pa-needed"] == ["indeterminate"]
    else:
        assert info["covered"] == ["conditional"] and info["info-needed"] == ["OTH"]
    assert info["reason"], "the reason says the evidence could not be retrieved"
    summaries = [c["summary"] for c in response.get_json()["cards"]]
    assert any("could not be retrieved" in s for s in summaries)


@responses.activate
def test_next_link_to_another_origin_is_not_followed(client):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    responses.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), json={
        "resourceType": "Bundle", "type": "searchset", "entry": [],
        "link": [{"relation": "next", "url": "http://localhost:6379/steal?token"}]})
    response = client.post(SIGN, json=_request(prefetch))
    assert response.status_code == 200
    assert len(responses.calls) == 1
    assert _coverage_info(response.get_json())["covered"] != ["covered"]


def test_fhir_server_outside_the_allowlist_is_treated_as_absent(client, caplog):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    with responses.RequestsMock():  # any call would fail the test
        response = client.post(SIGN, json=_request(prefetch, server="https://attacker.example/fhir"))
    assert response.status_code == 412
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and "allowed" in body["issue"][0]["diagnostics"]
    assert "not on the allowlist" in caplog.text


@pytest.mark.parametrize("server, token, settings_change, message", [
    (None, TOKEN, {}, "no fhirServer"),
    (FHIR, None, {"fhir_allow_anonymous": False}, "access token"),
    (FHIR, "", {"fhir_allow_anonymous": False}, "access token"),
])
def test_required_data_missing_and_unfetchable_is_412(make_client, server, token, settings_change, message):
    client = make_client(**settings_change)
    prefetch = full_prefetch()
    del prefetch["patient"]
    response = client.post(SIGN, json=_request(prefetch, token=token, server=server))
    assert response.status_code == 412
    assert message in response.get_json()["issue"][0]["diagnostics"]


def test_order_without_a_policy_needs_only_patient_and_coverage(client):
    prefetch = {"patient": {"resourceType": "Patient", "id": "p1"}, "coverage": searchset()}
    with responses.RequestsMock():
        response = client.post(SIGN, json=_request(prefetch, server=None, code="70553"))
    assert response.status_code == 200
    assert _coverage_info(response.get_json())["covered"] == ["covered"]


def test_deadline_bounds_a_hanging_server(make_client):
    client = make_client(hook_deadline_seconds=0.5, fhir_read_timeout=5)
    prefetch = full_prefetch(condition("I87.1", "c1"))
    del prefetch["observations"]

    def hang(request):
        time.sleep(2)
        return 200, {}, "{}"

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(FHIR)}/Observation\?.*"), callback=hang)
        started = time.monotonic()
        response = client.post(SIGN, json=_request(prefetch))
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 1.5, f"answered after {elapsed:.2f}s with a 0.5s deadline"
    assert _coverage_info(response.get_json())["covered"] != ["covered"]


@responses.activate
def test_access_token_never_reaches_the_log(client, caplog):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    responses.add(responses.GET, re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), status=500, body="err")
    with caplog.at_level("DEBUG"):
        client.post(SIGN, json=_request(prefetch))
        client.post(SIGN, json={**_request(prefetch), "context": "broken"})
    assert caplog.records, "the calls were logged"
    assert TOKEN not in caplog.text


def _paged_conditions() -> tuple[dict, str]:
    """A prefetch whose conditions Bundle is the first page of two."""
    prefetch = full_prefetch()
    page2 = f"{FHIR}/Condition?patient=p1&_count=1&_offset=1"
    prefetch["conditions"] = {"resourceType": "Bundle", "type": "searchset", "total": 2,
                              "link": [{"relation": "next", "url": page2}],
                              "entry": [{"resource": condition("I87.1", "c1", text="May-Thurner")}]}
    return prefetch, page2


@responses.activate
def test_a_paged_prefetch_is_read_to_its_last_page(client):
    prefetch, page2 = _paged_conditions()
    responses.add(responses.GET, page2, json=searchset(condition("I83.023", "c2")))
    response = client.post(SIGN, json=_request(prefetch))
    assert response.status_code == 200
    assert [call.request.url for call in responses.calls] == [page2]
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    detail = response.get_json()["cards"][0]["detail"]
    assert "Condition/c1" in detail and "Condition/c2" in detail, "both pages of Conditions were used"


def test_a_paged_prefetch_that_cannot_be_completed_is_unavailable_evidence(client):
    prefetch, _page2 = _paged_conditions()
    with responses.RequestsMock():  # any call would fail the test
        response = client.post(SIGN, json=_request(prefetch, server=None, token=None))
    assert response.status_code == 200
    assert _coverage_info(response.get_json())["covered"] == ["conditional"]
    assert any("could not be retrieved" in c["summary"] for c in response.get_json()["cards"])
