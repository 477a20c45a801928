"""CRD conformance: Inferno's server checks over every example request we know of."""

from __future__ import annotations

import re

import pytest
import responses

from cds_service.config import Settings
from tests.conftest import FIXTURES
from tests.conftest import SHARED
from tests.conftest import load_json
from tests.support.crd import check_coverage_information
from tests.support.crd import check_response

PEER = SHARED / "peer-fixtures"
INFERNO_FIXTURES = PEER / "inferno-davinci-crd-test-kit" / "spec" / "fixtures"
ORDER_HOOKS = ("order-sign", "order-select")
# The FHIR server Inferno's example requests name, and the resources Inferno serves on it.
INFERNO_FHIR = "https://example/r4"


def _requests() -> list[tuple[str, dict]]:
    found = [(p.name, load_json(p)) for p in sorted((FIXTURES / "requests").glob("*.json"))]
    for path in sorted((PEER / "davinci-crd-ig-2.2.1" / "input" / "resources").glob("CRDServiceRequest*.json")):
        found.append((f"crd-ig/{path.name}", load_json(path)))
    for path in sorted((PEER / "inferno-davinci-crd-test-kit" / "spec" / "fixtures").glob("*_hook_request.json")):
        found.append((f"inferno/{path.name}", load_json(path)))
    for path in sorted((PEER / "inferno-davinci-crd-test-kit" / "derived-from-config-presets").glob("*.json")):
        bodies = load_json(path)
        for i, body in enumerate(bodies if isinstance(bodies, list) else [bodies]):
            found.append((f"inferno-preset/{path.stem}[{i}]", body))
    for path in sorted((PEER / "captured-client-requests").glob("*.json")):
        found.append((f"captured/{path.name}", load_json(path)))
    return found


REQUESTS = _requests()


def test_discovery_is_what_inferno_expects(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert services and all(isinstance(s[k], str) for s in services for k in ("hook", "description", "id"))


@pytest.fixture
def inferno_fhir_server():
    """Inferno's test FHIR server, for the example requests that come without prefetch."""
    patient = load_json(INFERNO_FIXTURES / "crd_patient_example.json")
    coverage = load_json(INFERNO_FIXTURES / "crd_coverage_example.json")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as server:
        base = re.escape(INFERNO_FHIR)
        server.add(responses.GET, f"{INFERNO_FHIR}/Patient/{patient['id']}", json=patient)
        server.add(responses.GET, re.compile(rf"{base}/Coverage\?patient={patient['id']}&.*"),
                   json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": coverage}]})
        server.add(responses.GET, re.compile(rf"{base}/\w+\?.*"), json={"resourceType": "Bundle", "type": "searchset"})
        yield server


@pytest.mark.parametrize("name, body", REQUESTS, ids=[n for n, _ in REQUESTS])
def test_every_example_request_gets_a_conformant_answer(make_client, inferno_fhir_server, name, body):
    client = make_client(fhir_allowlist=[*Settings().fhir_allowlist, INFERNO_FHIR])
    hook = body.get("hook")
    if hook in ORDER_HOOKS:
        service = f"/cds-services/{'order-select-crd' if hook == 'order-select' else 'order-sign-crd'}"
    else:  # other CRD hooks sent to our order-sign service: a clear 400, never a 5xx
        service = "/cds-services/order-sign-crd"
    response = client.post(service, json=body)
    if hook not in ORDER_HOOKS:
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["resourceType"] == "OperationOutcome"
        return
    assert response.status_code == 200, response.get_json()
    problems = check_response(body, response.get_json(), hook)
    assert not problems, "\n".join(problems)


def test_the_checker_catches_broken_coverage_information():
    broken = {"url": "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information",
              "extension": [{"url": "covered", "valueCode": "maybe"},
                            {"url": "questionnaire", "valueCanonical": "http://x/Q"},
                            {"url": "date", "valueDate": "2026-11-21"}]}
    problems = " | ".join(check_coverage_information(broken))
    for expected in ("covered=maybe", "coverage missing", "coverage-assertion-id missing", "crd-ci-q1"):
        assert expected in problems
