"""Evidence from a real FHIR R4 server (Medplum's router on loopback) instead of prefetch.

The FHIR path must reach the same answers as the prefetch path, follow paging,
send the token on every call, fetch concurrently with one query per key (no
N+1), and turn a failing server into "could not be determined", never "covered".
"""

from __future__ import annotations

import copy
import time

import pytest

from tests.conftest import FIXTURES
from tests.conftest import load_json
from tests.support.crd import check_response

pytestmark = pytest.mark.integration

SIGN = "/cds-services/order-sign-crd"
REQUESTS = sorted((FIXTURES / "requests").glob("*.order-sign.json"))


@pytest.fixture(scope="module")
def loaded_server(fhir_server):
    fhir_server.reset()
    for path in sorted((FIXTURES / "patients").glob("*.json")):
        fhir_server.load(load_json(path))
    yield fhir_server
    fhir_server.clear_faults()


def _via_fhir(body: dict, server, token: str | None = None, keep: tuple[str, ...] = ()) -> dict:
    body = copy.deepcopy(body)
    body["prefetch"] = {k: v for k, v in body.get("prefetch", {}).items() if k in keep}
    body["fhirServer"] = server.base_url
    body["fhirAuthorization"] = {"access_token": token or server.token, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    return body


def _answer(response) -> dict:
    """What a user sees: coverage decision per order and the cards' summaries and details."""
    data = response.get_json()
    decisions = {}
    for action in data.get("systemActions", []):
        parts = action["resource"]["extension"][-1]["extension"]
        decisions[action["resource"]["id"]] = sorted(
            (p["url"], p.get("valueCode") or p.get("valueCanonical") or "") for p in parts
            if p["url"] in ("covered", "pa-needed", "doc-needed", "info-needed", "questionnaire"))
    cards = sorted((c["summary"], c.get("detail", "")) for c in data["cards"])
    return {"decisions": decisions, "cards": cards}


@pytest.fixture
def client(make_client):
    return make_client(fhir_page_size=3)


@pytest.mark.parametrize("path", REQUESTS, ids=[p.name.split(".")[0] for p in REQUESTS])
def test_fhir_path_matches_prefetch_path(client, loaded_server, path):
    body = load_json(path)
    from_prefetch = client.post(SIGN, json=body)
    loaded_server.reset_stats()
    from_fhir = client.post(SIGN, json=_via_fhir(body, loaded_server))
    assert from_prefetch.status_code == from_fhir.status_code == 200
    assert _answer(from_fhir) == _answer(from_prefetch)
    assert not check_response(body, from_fhir.get_json(), "order-sign")
    requests_made = loaded_server.stats()
    assert requests_made, "the evidence came from the FHIR server"
    assert all(r["status"] == 200 for r in requests_made)


def test_paging_token_and_one_query_per_key(client, loaded_server):
    body = load_json(FIXTURES / "requests" / "sclero-seed-case.order-sign.json")
    loaded_server.reset_stats()
    response = client.post(SIGN, json=_via_fhir(body, loaded_server))
    assert response.status_code == 200
    requests_made = loaded_server.stats()
    first_pages = [r for r in requests_made if "_offset" not in r["query"]]
    paged = [r for r in requests_made if "_offset" in r["query"]]
    assert paged, "page size 3 forces Bundle.link[next] to be followed"
    resource_types = [r["path"].split("/")[2] for r in first_pages]
    assert len(resource_types) == len(set(resource_types)), f"one query per resource type: {resource_types}"
    assert len(first_pages) <= 14


def test_queries_run_concurrently_under_one_deadline(client, loaded_server):
    body = load_json(FIXTURES / "requests" / "sclero-seed-case.order-sign.json")
    delays = {t: {"delay_ms": 700} for t in ("Condition", "Observation", "Procedure", "DiagnosticReport")}
    with loaded_server.faults(delays):
        started = time.monotonic()
        response = client.post(SIGN, json=_via_fhir(body, loaded_server))
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 1.6, f"four 0.7 s queries took {elapsed:.2f} s: they did not run concurrently"


def test_partial_prefetch_fetches_only_what_is_missing(client, loaded_server):
    body = load_json(FIXTURES / "requests" / "sclero-seed-case.order-sign.json")
    loaded_server.reset_stats()
    response = client.post(SIGN, json=_via_fhir(body, loaded_server, keep=("patient", "coverage", "conditions")))
    assert response.status_code == 200
    fetched = {r["path"].split("/")[2] for r in loaded_server.stats()}
    assert fetched and not fetched & {"Patient", "Coverage", "Condition"}
    assert _answer(response) == _answer(client.post(SIGN, json=body))


@pytest.mark.parametrize("fault", [{"status": 500}, {"body": "not json"}, {"delay_ms": 5000}])
def test_failing_server_means_undetermined_not_covered(make_client, loaded_server, fault):
    client = make_client(hook_deadline_seconds=1.5, fhir_read_timeout=1.0)
    body = load_json(FIXTURES / "requests" / "sclero-meets.order-sign.json")
    baseline = _answer(client.post(SIGN, json=body))["decisions"]
    assert baseline and all(("covered", "covered") in decision for decision in baseline.values())
    with loaded_server.faults({"Observation": fault}):
        started = time.monotonic()
        response = client.post(SIGN, json=_via_fhir(body, loaded_server))
        elapsed = time.monotonic() - started
    assert response.status_code == 200 and elapsed < 2.5
    for decision in _answer(response)["decisions"].values():
        assert ("covered", "covered") not in decision


def test_wrong_token_is_never_covered(client, loaded_server):
    body = load_json(FIXTURES / "requests" / "sclero-meets.order-sign.json")
    loaded_server.reset_stats()
    response = client.post(SIGN, json=_via_fhir(body, loaded_server, token="wrong-token"))
    assert response.status_code == 200
    assert {r["status"] for r in loaded_server.stats()} == {401}
    for decision in _answer(response)["decisions"].values():
        assert ("covered", "covered") not in decision
