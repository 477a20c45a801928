"""Proves the loopback FHIR test server and its harness (tests/support/fhir_server.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.fhir_server import DEFAULT_TOKEN, FhirServerError, FhirTestServer

pytestmark = pytest.mark.integration

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
TIMEOUT = 30


# -- data ----------------------------------------------------------------------------------


def _urn(n: int) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{n:012d}"


def _entry(key: str, n: int, resource: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    request = {"method": "POST", "url": resource["resourceType"]}
    return key, {"fullUrl": _urn(n), "resource": resource, "request": request}


def _coding(system: str, code: str, display: str = "") -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, **({"display": display} if display else {})}]}


def _ref(urn: str) -> dict[str, str]:
    return {"reference": urn}


def _condition(subject: str, icd10: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": _ref(subject),
        "code": _coding("http://hl7.org/fhir/sid/icd-10-cm", icd10),
        "clinicalStatus": _coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
    }


def _observation(subject: str, system: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": _ref(subject),
        "code": _coding(system, code),
        **extra,
    }


def build_bundle() -> tuple[dict[str, Any], list[str]]:
    """A transaction Bundle with urn:uuid references, plus the entry keys in order.

    Main patient: 2 Conditions, 25 Observations (one LOINC 72514-3, one SNOMED 397413000,
    23 HbA1c), Coverage with an Organization payor, QuestionnaireResponse, DeviceRequest,
    DeviceUseStatement (+ its Device), Procedure, DiagnosticReport, DocumentReference and
    AllergyIntolerance. A second patient has look-alike data that every patient search must
    leave out.
    """
    pat, other, payor, device, obs_pain = _urn(1), _urn(2), _urn(3), _urn(21), _urn(9)
    hcpcs = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
    entries: list[tuple[str, dict[str, Any]]] = [
        _entry("patient", 1, {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "MRN-1"}],
            "name": [{"family": "Main", "given": ["Pat"]}],
            "birthDate": "1960-04-01",
        }),
        _entry("other_patient", 2, {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "MRN-2"}],
            "name": [{"family": "Other"}],
        }),
        _entry("payor", 3, {
            "resourceType": "Organization",
            "name": "Acme Health Plan",
            "type": [_coding("http://terminology.hl7.org/CodeSystem/organization-type", "pay")],
        }),
        _entry("coverage", 4, {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": _ref(pat),
            "payor": [_ref(payor)],
            "subscriberId": "SUB-1",
        }),
        _entry("other_coverage", 5, {
            "resourceType": "Coverage", "status": "active", "beneficiary": _ref(other), "payor": [_ref(payor)],
        }),
        _entry("condition_diabetes", 6, _condition(pat, "E11.9")),
        _entry("condition_htn", 7, _condition(pat, "I10")),
        _entry("other_condition", 8, _condition(other, "E11.9")),
        _entry("obs_pain", 9, _observation(pat, LOINC, "72514-3", effectiveDateTime="2025-03-01", valueInteger=6)),
        _entry("obs_snomed", 10, _observation(pat, SNOMED, "397413000", effectiveDateTime="2025-03-02")),
        # The right code for another patient, and the same code under another system: both excluded.
        _entry("other_obs_pain", 11, _observation(other, LOINC, "72514-3")),
        _entry("other_obs_local", 12, _observation(other, "http://example.org/local", "72514-3")),
    ]
    for i in range(23):
        hba1c = _observation(
            pat,
            LOINC,
            "4548-4",
            effectiveDateTime=f"2024-{(i % 12) + 1:02d}-{(i % 27) + 1:02d}",
            valueQuantity={"value": 7.0 + i / 10, "unit": "%"},
        )
        entries.append(_entry(f"obs_hba1c_{i}", 100 + i, hba1c))
    entries += [
        _entry("questionnaire_response", 20, {
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "subject": _ref(pat),
            "questionnaire": "http://example.org/Questionnaire/dtr",
            "item": [{"linkId": "1", "answer": [{"valueBoolean": True}]}],
        }),
        _entry("device", 21, {"resourceType": "Device", "status": "active", "type": _coding(SNOMED, "469008006")}),
        _entry("device_request", 22, {
            "resourceType": "DeviceRequest",
            "status": "active",
            "intent": "order",
            "subject": _ref(pat),
            "codeCodeableConcept": _coding(hcpcs, "E0470"),
        }),
        _entry("device_use_statement", 23, {
            "resourceType": "DeviceUseStatement", "status": "active", "subject": _ref(pat), "device": _ref(device),
        }),
        _entry("procedure", 24, {
            "resourceType": "Procedure",
            "status": "completed",
            "subject": _ref(pat),
            "code": _coding("http://www.ama-assn.org/go/cpt", "93000"),
            "performedDateTime": "2025-02-01",
        }),
        _entry("diagnostic_report", 25, {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "subject": _ref(pat),
            "code": _coding(LOINC, "58410-2"),
            "result": [_ref(obs_pain)],
        }),
        _entry("document_reference", 26, {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": _ref(pat),
            "type": _coding(LOINC, "11506-3"),
            "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}],
        }),
        _entry("allergy", 27, {
            "resourceType": "AllergyIntolerance",
            "patient": _ref(pat),
            "code": _coding(SNOMED, "91936005", "Penicillin"),
        }),
        _entry("other_allergy", 28, {
            "resourceType": "AllergyIntolerance", "patient": _ref(other), "code": _coding(SNOMED, "91936005"),
        }),
    ]
    keys = [key for key, _ in entries]
    assert len(keys) == len(set(keys))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry for _, entry in entries]}
    return bundle, keys


class Loaded:
    """The fixture bundle after loading: ``ref(key)`` gives ``Type/id`` of an entry."""

    def __init__(self, server: FhirTestServer, response: dict[str, Any], keys: list[str]) -> None:
        self.server = server
        self.response = response
        self.refs = {
            key: entry["response"]["location"].split("/_history")[0]
            for key, entry in zip(keys, response["entry"], strict=True)
        }
        self.patient_id = self.id("patient")

    def ref(self, key: str) -> str:
        return self.refs[key]

    def id(self, key: str) -> str:
        return self.refs[key].split("/", 1)[1]


@pytest.fixture
def loaded(fresh_fhir_server: FhirTestServer) -> Loaded:
    bundle, keys = build_bundle()
    response = fresh_fhir_server.load(bundle)
    fresh_fhir_server.reset_stats()
    return Loaded(fresh_fhir_server, response, keys)


# -- helpers -------------------------------------------------------------------------------


def get(
    server: FhirTestServer, path_or_url: str, token: str | None = DEFAULT_TOKEN, **kwargs: Any
) -> requests.Response:
    url = path_or_url if path_or_url.startswith("http") else f"{server.base_url}/{path_or_url}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs.setdefault("timeout", TIMEOUT)
    with requests.get(url, headers=headers, **kwargs) as resp:
        resp.content  # noqa: B018 - read the body before the connection closes
        return resp


def search(server: FhirTestServer, path: str, **kwargs: Any) -> dict[str, Any]:
    resp = get(server, path, **kwargs)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def refs(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    }


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((item["url"] for item in bundle.get("link", []) if item["relation"] == relation), None)


# -- auth and metadata -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_fhir_requests_without_the_right_token_get_401(fresh_fhir_server: FhirTestServer, token: str | None) -> None:
    for path in ("Patient", "Patient/does-not-exist", "Observation?patient=x"):
        resp = get(fresh_fhir_server, path, token=token)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.json()["resourceType"] == "OperationOutcome"
    headers = {"Content-Type": "application/fhir+json", **({"Authorization": f"Bearer {token}"} if token else {})}
    url = f"{fresh_fhir_server.base_url}/Patient"
    with requests.post(url, json={"resourceType": "Patient"}, headers=headers, timeout=TIMEOUT) as resp:
        assert resp.status_code == 401
    # Nothing was written, and the right token works.
    assert search(fresh_fhir_server, "Patient")["total"] == 0
    with requests.get(url, headers={"Authorization": "Basic dGVzdC10b2tlbg=="}, timeout=TIMEOUT) as resp:
        assert resp.status_code == 401


def test_metadata_and_healthz_are_public(fresh_fhir_server: FhirTestServer) -> None:
    resp = get(fresh_fhir_server, "metadata", token=None)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    capability = resp.json()
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    assert {"Patient", "Observation", "Coverage"} <= {r["type"] for r in capability["rest"][0]["resource"]}
    with requests.get(f"{fresh_fhir_server.root_url}/healthz", timeout=TIMEOUT) as health:
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}


# -- loading -------------------------------------------------------------------------------


def test_transaction_bundle_with_urn_uuid_references_loads(loaded: Loaded) -> None:
    response = loaded.response
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"] for e in response["entry"]] == ["201"] * len(response["entry"])
    condition = get(loaded.server, loaded.ref("condition_diabetes")).json()
    assert condition["subject"]["reference"] == f"Patient/{loaded.patient_id}"
    coverage = get(loaded.server, loaded.ref("coverage")).json()
    assert coverage["payor"][0]["reference"] == loaded.ref("payor")
    assert "urn:uuid" not in json.dumps(search(loaded.server, "Observation?_count=100"))


def test_load_raises_when_an_entry_fails(fresh_fhir_server: FhirTestServer) -> None:
    bad = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/no-such-id"}},
    ]}
    with pytest.raises(FhirServerError, match="entries failed"):
        fresh_fhir_server.load(bad)
    with pytest.raises(ValueError):
        fresh_fhir_server.load({"resourceType": "Patient"})


def test_failing_entry_fails_the_whole_transaction(fresh_fhir_server: FhirTestServer) -> None:
    # Transaction semantics (config.transactions): one failed entry fails the request,
    # where a batch would answer 200 with a per-entry error.
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": _urn(1), "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/no-such-id"}},
    ]}
    with pytest.raises(FhirServerError, match=r"loading bundle failed with 4\d\d"):
        fresh_fhir_server.load(bad)


def test_put_creates_and_updates_with_client_id(fresh_fhir_server: FhirTestServer) -> None:
    fresh_fhir_server.put({"resourceType": "Patient", "id": "p123", "name": [{"family": "First"}]})
    fresh_fhir_server.put({"resourceType": "Patient", "id": "p123", "name": [{"family": "Second"}]})
    assert get(fresh_fhir_server, "Patient/p123").json()["name"][0]["family"] == "Second"
    assert search(fresh_fhir_server, "Patient")["total"] == 1


# -- searches ------------------------------------------------------------------------------

PATIENT_SEARCHES = [
    ("Condition?patient={pid}", {"condition_diabetes", "condition_htn"}),
    (
        "Observation?patient={pid}&code=http://loinc.org|72514-3,http://snomed.info/sct|397413000",
        {"obs_pain", "obs_snomed"},
    ),
    ("QuestionnaireResponse?patient={pid}", {"questionnaire_response"}),
    ("DeviceUseStatement?patient={pid}", {"device_use_statement"}),
    ("DeviceRequest?patient={pid}", {"device_request"}),
    ("AllergyIntolerance?patient={pid}", {"allergy"}),
    ("DocumentReference?patient={pid}", {"document_reference"}),
    ("DiagnosticReport?patient={pid}", {"diagnostic_report"}),
    ("Procedure?patient={pid}", {"procedure"}),
]


@pytest.mark.parametrize(("query", "expected"), PATIENT_SEARCHES, ids=[q.split("?")[0] for q, _ in PATIENT_SEARCHES])
def test_patient_searches_return_exactly_the_patients_resources(loaded: Loaded, query: str, expected: set[str]) -> None:
    bundle = search(loaded.server, query.format(pid=loaded.patient_id))
    assert refs(bundle) == {loaded.ref(key) for key in expected}
    assert bundle["total"] == len(expected)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"{loaded.server.base_url}/{resource['resourceType']}/{resource['id']}"


def test_read_patient_by_id(loaded: Loaded) -> None:
    resp = get(loaded.server, f"Patient/{loaded.patient_id}")
    assert resp.status_code == 200
    patient = resp.json()
    assert (patient["resourceType"], patient["id"]) == ("Patient", loaded.patient_id)
    assert patient["identifier"][0]["value"] == "MRN-1"
    assert resp.headers["ETag"] == f'W/"{patient["meta"]["versionId"]}"'
    missing = get(loaded.server, "Patient/not-there")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_coverage_search_includes_the_payor_organization(loaded: Loaded) -> None:
    bundle = search(loaded.server, f"Coverage?patient={loaded.patient_id}&status=active&_include=Coverage:payor")
    assert refs(bundle, "match") == {loaded.ref("coverage")}
    assert refs(bundle, "include") == {loaded.ref("payor")}
    assert bundle["total"] == 1
    cancelled = search(loaded.server, f"Coverage?patient={loaded.patient_id}&status=cancelled")
    assert cancelled["total"] == 0 and "entry" not in cancelled


def test_post_search_with_form_body_matches_get(loaded: Loaded) -> None:
    form = {"patient": loaded.patient_id, "code": f"{LOINC}|72514-3,{SNOMED}|397413000"}
    url = f"{loaded.server.base_url}/Observation/_search"
    with requests.post(url, data=form, headers=loaded.server.auth_headers(), timeout=TIMEOUT) as resp:
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
    assert refs(bundle) == {loaded.ref("obs_pain"), loaded.ref("obs_snomed")}
    assert link(bundle, "self").startswith(f"{loaded.server.base_url}/Observation?")
    [recorded] = loaded.server.stats()
    assert (recorded["method"], recorded["path"]) == ("POST", "/fhir/Observation/_search")
    assert recorded["params"]["code"] == [form["code"]]


# -- paging --------------------------------------------------------------------------------


def test_paging_follows_next_links_with_the_token(loaded: Loaded) -> None:
    server = loaded.server
    url: str | None = f"{server.base_url}/Observation?patient={loaded.patient_id}&_count=10"
    pages: list[dict[str, Any]] = []
    while url is not None:
        assert len(pages) < 5, "paging does not terminate"
        bundle = search(server, url)
        pages.append(bundle)
        url = link(bundle, "next")
        if url is not None:
            assert url.startswith(f"{server.base_url}/Observation?")
            assert get(server, url, token=None).status_code == 401
            assert get(server, url, token="wrong-token").status_code == 401
    assert [len(page.get("entry", [])) for page in pages] == [10, 10, 5]
    assert all(page["total"] == 25 for page in pages)
    ids = [entry["resource"]["id"] for page in pages for entry in page["entry"]]
    assert len(set(ids)) == 25
    assert {f"Observation/{i}" for i in ids} == {ref for key, ref in loaded.refs.items() if key.startswith("obs_")}
    assert all(link(page, "self") for page in pages)
    assert link(pages[1], "previous") is not None and link(pages[0], "previous") is None


def test_default_count_cap_and_summary_count(loaded: Loaded) -> None:
    server = loaded.server
    default = search(server, f"Observation?patient={loaded.patient_id}")
    assert len(default["entry"]) == 20 and default["total"] == 25
    assert "_count=20" in link(default, "next") and "_offset=20" in link(default, "next")
    capped = search(server, f"Observation?patient={loaded.patient_id}&_count=5000")
    assert len(capped["entry"]) == 25 and link(capped, "next") is None
    assert "_count=1000" in link(capped, "self")
    summary = search(server, f"Observation?patient={loaded.patient_id}&_summary=count")
    assert summary["total"] == 25 and "entry" not in summary and link(summary, "next") is None
    assert get(server, "Observation?_count=abc").status_code == 400


# -- store control -------------------------------------------------------------------------


def test_reset_empties_the_store(loaded: Loaded) -> None:
    server = loaded.server
    assert search(server, "Observation?_summary=count")["total"] == 27
    server.reset()
    assert search(server, "Observation?_summary=count")["total"] == 0
    assert search(server, "Patient")["total"] == 0
    assert get(server, loaded.ref("patient")).status_code == 404


# -- faults --------------------------------------------------------------------------------


def test_status_fault_hits_only_its_resource_type_and_clears(loaded: Loaded) -> None:
    server = loaded.server
    server.set_faults({"Observation": {"status": 500}})
    failed = get(server, f"Observation?patient={loaded.patient_id}")
    assert failed.status_code == 500
    assert failed.json()["resourceType"] == "OperationOutcome"
    assert get(server, f"Observation/{loaded.id('obs_pain')}").status_code == 500
    assert search(server, f"Condition?patient={loaded.patient_id}")["total"] == 2
    server.clear_faults()
    assert search(server, f"Observation?patient={loaded.patient_id}")["total"] == 25


def test_status_fault_applies_to_paging_requests(loaded: Loaded) -> None:
    server = loaded.server
    first = search(server, f"Observation?patient={loaded.patient_id}&_count=10")
    server.set_faults({"Observation": {"status": 503}})
    assert get(server, link(first, "next")).status_code == 503
    server.clear_faults()
    assert len(search(server, link(first, "next"))["entry"]) == 10


def test_delay_fault(loaded: Loaded) -> None:
    server = loaded.server
    server.set_faults({"Condition": {"delay_ms": 400}})
    started = time.monotonic()
    bundle = search(server, f"Condition?patient={loaded.patient_id}")
    assert time.monotonic() - started >= 0.4
    assert bundle["total"] == 2
    with pytest.raises(requests.Timeout):
        get(server, f"Condition?patient={loaded.patient_id}", timeout=0.1)
    started = time.monotonic()
    search(server, f"Patient?_id={loaded.patient_id}")  # other resource types are not delayed
    assert time.monotonic() - started < 0.4
    server.clear_faults()
    started = time.monotonic()
    search(server, f"Condition?patient={loaded.patient_id}")
    assert time.monotonic() - started < 0.4


def test_non_json_body_fault(loaded: Loaded) -> None:
    server = loaded.server
    server.set_faults({"Procedure": {"body": "not json"}})
    resp = get(server, f"Procedure?patient={loaded.patient_id}")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    assert resp.text == "not json"
    with pytest.raises(ValueError):
        resp.json()
    server.clear_faults()
    assert refs(search(server, f"Procedure?patient={loaded.patient_id}")) == {loaded.ref("procedure")}


def test_fault_count_limits_it_to_the_next_requests(loaded: Loaded) -> None:
    server = loaded.server
    server.set_faults({"Observation": {"status": 429, "count": 1}})
    assert get(server, "Observation?_count=1").status_code == 429
    assert get(server, "Observation?_count=1").status_code == 200


def test_invalid_faults_are_rejected(fresh_fhir_server: FhirTestServer) -> None:
    with pytest.raises(FhirServerError, match="400"):
        fresh_fhir_server.set_faults({"Observation": {"status": "boom"}})
    with pytest.raises(FhirServerError, match="400"):
        fresh_fhir_server.set_faults({"Observation": {"bogus": 1}})


# -- stats ---------------------------------------------------------------------------------


def test_stats_record_every_fhir_request(loaded: Loaded) -> None:
    server = loaded.server
    assert server.stats() == []
    search(server, f"Condition?patient={loaded.patient_id}")
    first = search(server, f"Observation?patient={loaded.patient_id}&_count=10")
    search(server, link(first, "next"))
    get(server, "Patient", token=None)  # rejected requests are recorded too
    server.reset()  # admin calls are not
    stats = server.stats()
    assert [(s["method"], s["path"]) for s in stats] == [
        ("GET", "/fhir/Condition"),
        ("GET", "/fhir/Observation"),
        ("GET", "/fhir/Observation"),
        ("GET", "/fhir/Patient"),
    ]
    assert stats[0]["query"] == f"patient={loaded.patient_id}"
    assert stats[0]["params"] == {"patient": [loaded.patient_id]}
    assert "_offset=10" in stats[2]["query"] and stats[2]["params"]["_offset"] == ["10"]
    assert [s["status"] for s in stats] == [200, 200, 200, 401]
    server.reset_stats()
    assert server.stats() == []


# -- robustness ----------------------------------------------------------------------------


def test_malformed_json_gives_400_and_the_server_survives(fresh_fhir_server: FhirTestServer) -> None:
    server = fresh_fhir_server
    headers = {"Content-Type": "application/fhir+json", **server.auth_headers()}
    for path, body in [("Patient", "{not json"), ("", "[1, 2"), ("Patient", "42")]:
        with requests.post(f"{server.base_url}/{path}", data=body, headers=headers, timeout=TIMEOUT) as resp:
            assert resp.status_code == 400, (path, body, resp.text)
            assert resp.json()["resourceType"] == "OperationOutcome"
    assert get(server, "UnknownType").status_code == 404
    assert server.running
    assert search(server, "Patient")["total"] == 0


def test_cors_preflight(fresh_fhir_server: FhirTestServer) -> None:
    headers = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    with requests.options(f"{fresh_fhir_server.base_url}/Patient", headers=headers, timeout=TIMEOUT) as resp:
        assert resp.status_code == 204
        assert resp.headers["Access-Control-Allow-Origin"] in ("*", "http://localhost:3000")
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]


# -- lifecycle -----------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[FhirTestServer]:
    server = FhirTestServer(token=None)
    yield server
    server.stop()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_start_and_stop_a_second_server(own_server: FhirTestServer) -> None:
    own_server.start()
    pid, base = own_server.pid, own_server.base_url
    assert pid is not None and base.startswith("http://127.0.0.1:") and base.endswith("/fhir")
    assert own_server.startup_seconds is not None and own_server.startup_seconds < 20
    # No token configured: FHIR requests are open.
    with requests.get(f"{base}/Patient", timeout=TIMEOUT) as resp:
        assert resp.status_code == 200
    own_server.stop()
    assert not _pid_alive(pid)
    assert own_server.returncode == 0  # SIGTERM is a clean exit
    assert own_server.last_stderr == ""  # nothing but errors goes to stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/metadata", timeout=5)
    own_server.stop()  # idempotent


def test_server_exits_when_the_harness_pipe_closes(own_server: FhirTestServer) -> None:
    # What happens when the test process is killed: its end of the stdin pipe closes.
    own_server.start()
    proc = own_server._proc
    assert proc is not None and proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_missing_node_modules_is_reported(tmp_path: Path) -> None:
    (tmp_path / "server.cjs").write_text("")
    with pytest.raises(RuntimeError, match=r"npm ci --prefix"):
        FhirTestServer(server_dir=tmp_path).start()


def test_start_failure_reports_stderr() -> None:
    server = FhirTestServer(host="256.0.0.1")
    with pytest.raises(FhirServerError, match="cannot listen"):
        server.start()
    assert server.pid is None
