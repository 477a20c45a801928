"""Malformed FHIR JSON from a client is read as absent, never a 500.

EHRs and test tools send elements of the wrong JSON type. Ten of the cases below were
500s (TypeError/AttributeError while picking candidates out of the raw JSON) before the
lenient readers in ``cds_service.fhirjson``; the others are their near relatives. A seeded
mutation run over our fixtures and recorded real-client requests found them and keeps
looking for more.
"""

from __future__ import annotations

import copy
import random
from typing import Any
from typing import Callable

import orjson
import pytest

from tests.conftest import FIXTURES
from tests.conftest import SHARED
from tests.conftest import load_json

SIGN = "/cds-services/order-sign-crd"
SELECT = "/cds-services/order-select-crd"
REQUESTS = FIXTURES / "requests"


def _first(request: dict, resource_type: str) -> dict:
    for value in request["prefetch"].values():
        for entry in (value or {}).get("entry") or ():
            if entry["resource"]["resourceType"] == resource_type:
                return entry["resource"]
    raise AssertionError(f"no {resource_type} in the fixture's prefetch")


def _order(request: dict) -> dict:
    return request["context"]["draftOrders"]["entry"][0]["resource"]


def _bundle_with(request: dict, resource_type: str) -> dict:
    return next(v for v in request["prefetch"].values()
                if any(e["resource"]["resourceType"] == resource_type for e in (v or {}).get("entry") or ()))


MALFORMED: dict[str, Callable[[dict], Any]] = {
    "order code.coding is a number": lambda r: _order(r)["code"].update(coding=5),
    "order coding entries are strings": lambda r: _order(r)["code"].update(coding=["37238"]),
    "order reasonCode is a number": lambda r: _order(r).update(reasonCode=7),
    "order reasonReference is an object with a number": lambda r: _order(r).update(reasonReference={"reference": 5}),
    "order bodySite is a string": lambda r: _order(r).update(bodySite="left iliac vein"),
    "order extension is a string": lambda r: _order(r).update(extension="x"),
    "order's own coverage-information has a list code": lambda r: _order(r).update(extension=[{
        "url": "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information",
        "extension": [{"url": "covered", "valueCode": ["covered"]},
                      {"url": "coverage", "valueReference": {"reference": ["Coverage/x"]}}]}]),
    "Observation status is a list": lambda r: _first(r, "Observation").update(status=["final"]),
    "DiagnosticReport status is an object": lambda r: _first(r, "DiagnosticReport").update(status={"code": "final"}),
    "Condition coding entries are strings": lambda r: _first(r, "Condition")["code"].update(coding=["I87.1"]),
    "Condition code.coding is true": lambda r: _first(r, "Condition")["code"].update(coding=True),
    "searchset entry is an object": lambda r: _bundle_with(r, "Condition").update(
        entry=_bundle_with(r, "Condition")["entry"][0]),
    "Coverage payor is a number": lambda r: _first(r, "Coverage").update(payor=3),
    "Organization identifier system is a list": lambda r: _first(r, "Organization").update(
        identifier=[{"system": ["urn:x"], "value": "y"}]),
    "Organization alias is a number": lambda r: _first(r, "Organization").update(alias=5),
    "Observation contained is a string": lambda r: _first(r, "Observation").update(contained="x",
                                                                                 partOf=[{"reference": "#p"}]),
}


@pytest.mark.parametrize("damage", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_elements_read_as_absent(client, damage):
    request = load_json(REQUESTS / "cohere-may-thurner-meets.order-sign.json")
    MALFORMED[damage](request)
    response = client.post(SIGN, json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert [a["resource"]["id"] for a in answer["systemActions"]] == [_order(request)["id"]]


def test_a_questionnaire_response_with_malformed_items_is_read_as_no_answers(client):
    request = load_json(REQUESTS / "mbb-meets.order-sign.json")
    response_resource = {"resourceType": "QuestionnaireResponse", "id": "qr", "status": "completed",
                         "questionnaire": "http://example.org/Questionnaire/x",
                         "subject": {"reference": f"Patient/{request['context']['patientId']}"},
                         "item": [{"linkId": "a", "answer": 5}, 7, {"linkId": "b", "item": "x"}]}
    request["prefetch"]["questionnaireResponses"] = {"resourceType": "Bundle", "type": "searchset",
                                                     "entry": [{"resource": response_resource}]}
    response = client.post(SIGN, json=request)
    assert response.status_code == 200, response.get_data(as_text=True)


# --- a seeded mutation run over our fixtures and the recorded real-client requests ------

_JUNK = [None, 0, 1.5, True, "", "x", [], {}, [None], [{}], [1, 2], {"a": 1}, {"reference": 5},
         {"coding": "x"}, {"coding": [{"code": 5}]}, "2026-13-45", "Patient/", "#", 10**30, "\u00e4",
         {"resourceType": 5}, {"resourceType": "Bundle", "entry": 5}]
_BASES = [REQUESTS / "cohere-may-thurner-meets.order-sign.json", REQUESTS / "mbb-meets.order-sign.json",
          REQUESTS / "fusion-meets.order-sign.json", REQUESTS / "sclero-meets.order-sign.json",
          SHARED / "peer-fixtures" / "captured-client-requests" / "crd-request-generator-order-sign-request.json",
          SHARED / "peer-fixtures" / "captured-client-requests" / "sandbox-pama-order-select-request.json"]


def _paths(value: Any, path: tuple = ()):
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, path + (key,))


def _mutate(document: dict, rng: random.Random) -> None:
    for _ in range(rng.choice((1, 2, 3, 5))):
        path = rng.choice([p for p in _paths(document) if p])
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(_JUNK))


def test_mutated_requests_never_get_a_server_error(client):
    rng = random.Random(20261122)
    bases = [load_json(path) for path in _BASES]
    for attempt in range(300):
        document = copy.deepcopy(rng.choice(bases))
        _mutate(document, rng)
        path = SELECT if document.get("hook") == "order-select" else SIGN
        response = client.post(path, json=document)
        assert response.status_code in (200, 400, 412), (attempt, response.status_code, response.get_data(as_text=True))
        assert response.is_json, attempt


def _with_raw_in_prefetch(fragment: bytes) -> bytes:
    """The MBB fixture request with *fragment* as a kept observation's value, spliced in as raw bytes
    (what a JSON encoder could not produce: deep nesting, invalid UTF-8)."""
    request = load_json(REQUESTS / "mbb-meets.order-sign.json")
    observation = _first(request, "Observation")
    observation["valueString"] = "@@RAW@@"
    return orjson.dumps(request).replace(b'"@@RAW@@"', fragment)


@pytest.mark.parametrize("body", [
    _with_raw_in_prefetch(b"[" * 5000 + b"]" * 5000),
    _with_raw_in_prefetch(b'"\xff"'),
    orjson.dumps({"hook": "order-sign"}).replace(b"}", b',"context":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    b'{"hook": "\xff"}',
], ids=["deep-in-prefetch", "utf8-in-prefetch", "deep-in-context", "utf8-at-top"])
def test_json_no_parser_accepts_is_a_bad_request(client, body):
    """Nesting deeper than the parsers allow and bytes that are not UTF-8: 400 with an OperationOutcome."""
    response = client.post(SIGN, data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"
