"""Hook intake: a prefetch that ignored the templates' code filters is cut down to what can be evidence.

What is dropped must be exactly what the template's FHIR search would not have returned; every
golden case gives the same answer through intake (test_policy_cases.py). Here: the shapes and
codings a resource can carry its code in, references from the orders, and malformed input.
"""

from __future__ import annotations

import orjson
import pytest

from cds_service.catalog import Catalog
from cds_service.codes import CPT
from cds_service.codes import HCPCS
from cds_service.codes import LOINC
from cds_service.codes import PROJECT_FINDINGS
from cds_service.errors import BadRequest
from cds_service.intake import EvidenceFilter
from cds_service.intake import read_hook_body
from cds_service.prefetch import build_templates
from cds_service.prefetch import searched_codes
from tests.support.policies import DEMO_POLICY_HEAD
from tests.support.policies import policy_dir

PAIN = (LOINC, "72514-3")
BLOCK = (CPT, "64493")
EVIDENCE = EvidenceFilter({"Observation": frozenset({PAIN}), "Procedure": frozenset({BLOCK})})


def _observation(oid: str, system: str = LOINC, code: str = "8867-4", **extra) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": system, "code": code}]}, **extra}


def _request(prefetch: dict, reasons: list[str] = ()) -> bytes:
    order = {"resourceType": "ServiceRequest", "id": "o1", "status": "draft", "intent": "order",
             "code": {"coding": [{"system": CPT, "code": "64493"}]},
             "reasonReference": [{"reference": ref} for ref in reasons]}
    return orjson.dumps({"hook": "order-sign", "hookInstance": "i", "prefetch": prefetch, "context": {
        "patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]}}})


def _searchset(*resources) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _kept_ids(body: bytes, key: str = "observations") -> list[str]:
    return [e["resource"]["id"] for e in read_hook_body(body, EVIDENCE)["prefetch"][key]["entry"]]


def test_only_resources_with_a_searched_code_are_kept():
    body = _request({"observations": _searchset(_observation("heart-rate"), _observation("pain", code="72514-3"))})
    assert _kept_ids(body) == ["pain"]


@pytest.mark.parametrize("resource", [
    _observation("alias", system="http://loinc.org/", code=" 72514-3"),  # system alias, stray space
    _observation("second-coding", code="8867-4") | {"code": {"coding": [
        {"system": LOINC, "code": "8867-4"}, {"system": LOINC, "code": "72514-3"}]}},
    _observation("panel", code="85354-9", component=[{"code": {"coding": [{"system": LOINC, "code": "72514-3"}]}}]),
], ids=["system-alias", "second-coding", "component"])
def test_a_code_counts_wherever_the_record_indexes_it(resource):
    assert _kept_ids(_request({"observations": _searchset(resource)})) == [resource["id"]]


def test_a_cpt_code_sent_under_hcpcs_is_the_cpt_code():
    procedure = {"resourceType": "Procedure", "id": "block", "status": "completed",
                 "code": {"coding": [{"system": HCPCS, "code": "64493"}]}}
    assert _kept_ids(_request({"procedures": _searchset(procedure)}), "procedures") == ["block"]


def test_what_an_order_gives_as_its_reason_is_kept_whatever_its_code():
    body = _request({"observations": _searchset(_observation("finding"), _observation("other"))},
                    reasons=["http://ehr.example.org/fhir/Observation/finding/_history/2"])
    assert _kept_ids(body) == ["finding"]


def test_types_without_a_code_filter_and_everything_else_in_the_bundle_are_untouched():
    condition = {"resourceType": "Condition", "id": "c", "code": {"text": "back pain"}}
    bundle = _searchset(condition, _observation("heart-rate"), _observation("pain", code="72514-3")) | {
        "id": "page-1", "meta": {"lastUpdated": "2026-11-01T00:00:00Z"}, "total": 4,
        "link": [{"relation": "next", "url": "http://ehr.example.org/fhir/Observation?page=2"}]}
    bundle["entry"].append({"fullUrl": "urn:uuid:1"})
    bundle["entry"][0]["fullUrl"] = "http://ehr.example.org/fhir/Condition/c"
    bundle["entry"][2]["search"] = {"mode": "match"}
    prefetch = read_hook_body(_request({"chart": bundle, "patient": {"resourceType": "Patient", "id": "p"}}),
                              EVIDENCE)["prefetch"]
    assert prefetch["chart"] == bundle | {"entry": [bundle["entry"][0], bundle["entry"][2], bundle["entry"][3]]}
    assert prefetch["patient"] == {"resourceType": "Patient", "id": "p"}


@pytest.mark.parametrize("odd", [
    "not an entry", {"resource": ["not", "a", "resource"]},
    {"resource": _observation("x") | {"component": {"code": "not a list"}}},
    {"resource": _observation("x") | {"resourceType": 12}}, {"resource": _observation("x") | {"id": ["x"]}},
], ids=["entry", "resource", "component", "type", "id"])
def test_a_searchset_whose_entries_cannot_be_read_is_kept_whole(odd):
    """Keeping more than the search would return changes no answer; the record reads leniently."""
    bundle = _searchset(_observation("heart-rate"))
    bundle["entry"].append(odd)
    assert read_hook_body(_request({"observations": bundle}), EVIDENCE)["prefetch"]["observations"] == bundle


def test_a_member_a_bundle_does_not_have_keeps_it_whole():
    bundle = _searchset(_observation("heart-rate")) | {"vendorExtra": True}
    assert read_hook_body(_request({"observations": bundle}), EVIDENCE)["prefetch"]["observations"] == bundle


@pytest.mark.parametrize("code", [
    {"coding": "72514-3"}, {"coding": [None, 7, {"code": ["72514-3"]}]}, "72514-3", None,
])
def test_malformed_codings_are_dropped_without_error(code):
    resource = _observation("odd") | {"code": code}
    assert _kept_ids(_request({"observations": _searchset(resource)})) == []


@pytest.mark.parametrize("prefetch", [None, [], "text", {"observations": None},
                                      {"observations": {"resourceType": "Bundle", "entry": {"resource": {}}}}])
def test_odd_prefetch_shapes_pass_through(prefetch):
    body = orjson.loads(_request({}))
    body["prefetch"] = prefetch
    assert read_hook_body(orjson.dumps(body), EVIDENCE)["prefetch"] == prefetch


@pytest.mark.parametrize("body, message", [(b"{", "not valid JSON"), (b"[]", "must be a JSON object")])
def test_a_body_that_is_not_a_json_object_is_a_bad_request(body, message):
    with pytest.raises(BadRequest, match=message):
        read_hook_body(body, EVIDENCE)


LINKED = DEMO_POLICY_HEAD + """\
        - id: relief-after-block
          text: Relief recorded after the block
          cite: {section: S, quote: Q}
          documentation: Pain score linked to the block
          observation:
            codes: {loinc: ["72514-3"]}
            part_of: {cpt: ["64493"]}
            after_latest_procedure: {cpt: ["64633"]}
        - id: ablation-after-duplex
          text: Ablation after the latest duplex
          cite: {section: S, quote: Q}
          documentation: Ablation procedure
          procedure:
            codes: {cpt: ["36475"]}
            after_latest_result:
              codes: {loinc: ["8867-4"]}
        - id: duplex-after-ablation
          text: Duplex at least 3 months after the ablation
          cite: {section: S, quote: Q}
          documentation: Duplex report
          report:
            codes: {loinc: ["39420-5"]}
            after_latest_procedure: {cpt: ["36478"]}
            min_gap: 3 months
        - id: patency-in-report-words
          text: The report concludes the deep veins patent
          cite: {section: S, quote: Q}
          documentation: Duplex report
          report:
            codes: {loinc: ["39420-5"]}
            conclusion_text: [deep veins patent]
            superseded_by: {codes: {finding: [deep-venous-patency]}}
"""


def test_codes_searched_only_through_links_between_results_and_procedures_are_kept(tmp_path):
    """Procedures a result or report is linked to or must follow, results a procedure must follow or that
    supersede a report: each decides a criterion, so intake (and the FHIR search) must return them."""
    catalog = Catalog.load(policy_dir(tmp_path, LINKED))
    codes = searched_codes(catalog)
    assert codes["Procedure"] == {(CPT, "64493"), (CPT, "64633"), (CPT, "36475"), (CPT, "36478")}
    assert codes["Observation"] == {(LOINC, "72514-3"), (LOINC, "8867-4"), (PROJECT_FINDINGS, "deep-venous-patency")}
    queries = {t.key: t.query for t in build_templates(catalog)}
    assert queries["procedures"].endswith(f"code={CPT}|36475,{CPT}|36478,{CPT}|64493,{CPT}|64633")


def test_the_verdicts_remembered_per_code_are_bounded_and_per_type(monkeypatch):
    """A long-running worker meets endless distinct codes: what it remembers stays bounded. The same
    code is wanted for one type and not another."""
    monkeypatch.setattr("cds_service.intake._MAX_VERDICTS", 2)
    heart_rate = (LOINC, "8867-4")
    evidence = EvidenceFilter({"Observation": frozenset({PAIN}), "Procedure": frozenset({heart_rate})})
    observations = [_observation(f"o{i}", code=f"{i}-{i}") for i in range(5)] + [
        _observation("pain", code="72514-3"), _observation("heart-rate")]
    procedure = {"resourceType": "Procedure", "id": "proc", "code": _observation("p")["code"]}
    body = _request({"observations": _searchset(*observations), "procedures": _searchset(procedure)})
    for _ in range(2):
        prefetch = read_hook_body(body, evidence)["prefetch"]
        assert [e["resource"]["id"] for e in prefetch["observations"]["entry"]] == ["pain"]
        assert [e["resource"]["id"] for e in prefetch["procedures"]["entry"]] == ["proc"]
    assert all(len(verdicts) <= 2 for verdicts in evidence._verdicts.values())


def test_a_filter_on_codes_intake_cannot_read_fails_at_start_up():
    with pytest.raises(ValueError, match="AllergyIntolerance"):
        EvidenceFilter({"AllergyIntolerance": frozenset({PAIN})})


def test_the_bundled_policies_keep_the_prefetch_code_filters(catalog):
    """A criterion that may read anything (FHIRPath) switches the filters off for every policy: the
    prefetch then asks for whole charts and intake keeps every vital sign. The bundled policies hold none."""
    codes = searched_codes(catalog)
    assert {"Observation", "Procedure", "DiagnosticReport"} <= set(codes)
    queries = {t.key: t.query for t in build_templates(catalog)}
    assert "code=" in queries["observations"] and "code=" in queries["procedures"]
    # an epidural the same day as a facet block decides whether unlinked pain scores are the block's
    assert (CPT, "64483") in codes["Procedure"] and f"{CPT}|64483" in queries["procedures"]
