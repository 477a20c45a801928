"""PatientRecord code lookups: spelling-tolerant, system-exact, ICD ranges included."""

from __future__ import annotations

from cds_service.codes import ICD10CM
from cds_service.codes import SNOMED
from cds_service.codes import CodeSet
from cds_service.codes import compile_codes
from cds_service.record import PatientRecord
from cds_service.record import SpinalLevel
from cds_service.record import affirms
from cds_service.record import body_site_levels
from cds_service.record import level_passages

ICD_BY_OID = {"resourceType": "Condition", "id": "c",
              "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.90", "code": " m54.16 "}]}}
SAME_CODE_OTHER_SYSTEM = {"resourceType": "Condition", "id": "d",
                          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "M5416"}]}}
BLOOD_PRESSURE = {"resourceType": "Observation", "id": "bp", "status": "final",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                  "component": [{"code": {"coding": [{"system": "http://loinc.org/", "code": "8480-6"}]},
                                 "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}]}


def refs(resources: list[dict]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def test_icd_codes_match_across_spelling_and_system_aliases_but_not_across_systems() -> None:
    record = PatientRecord([ICD_BY_OID, SAME_CODE_OTHER_SYSTEM])
    assert refs(record.find("Condition", compile_codes({"icd10cm": ["M54.16"]}))) == {"Condition/c"}
    assert refs(record.find("Condition", compile_codes({"icd10cm": ["M54.1-M54.2"]}))) == {"Condition/c"}
    assert refs(record.find("Condition", compile_codes({"icd10cm": ["M54.2-M54.5"]}))) == set()
    # (not a real SNOMED CT id: the point is that an equal string in another system is another code)
    assert refs(record.find("Condition", CodeSet(frozenset({(SNOMED, "M5416")})))) == {"Condition/d"}


def test_icd_range_answers_stay_right_past_their_memory_bound() -> None:
    """A code set remembers which diagnosis codes fall in its ranges, bounded: charts carry any codes."""
    ranges = compile_codes({"icd10cm": ["M54.1-M54.2", "G35"]})
    for number in range(5000):  # more distinct codes than it keeps
        assert ranges.contains(ICD10CM, f"Z{number:04d}") is False
    assert ranges.contains(ICD10CM, "M54.16") and ranges.contains(ICD10CM, "g35")
    assert not ranges.contains(ICD10CM, "M54.3") and not ranges.contains(SNOMED, "M5416")
    record = PatientRecord([ICD_BY_OID, SAME_CODE_OTHER_SYSTEM])
    assert refs(record.find("Condition", ranges)) == {"Condition/c"}
    assert len(ranges._icd_verdicts) <= 4096


def test_observation_components_are_found_by_their_own_codes() -> None:
    record = PatientRecord([BLOOD_PRESSURE])
    assert refs(record.find("Observation", compile_codes({"loinc": ["8480-6"]}))) == {"Observation/bp"}
    assert refs(record.find("Observation", compile_codes({"loinc": ["85354-9"]}))) == {"Observation/bp"}
    assert refs(record.find("Observation", compile_codes({"loinc": ["8462-4"]}))) == set()


def test_allergy_reactions_are_found_by_substance_and_misshapen_concepts_are_ignored() -> None:
    penicillin = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980"}
    allergy = {"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p"},
               "reaction": [{"manifestation": [{"text": "hives"}], "substance": {"coding": [penicillin]}}]}
    # code must be one CodeableConcept: a list there is not FHIR and must not count as evidence
    misshapen = {"resourceType": "AllergyIntolerance", "id": "b", "patient": {"reference": "Patient/p"},
                 "code": [{"coding": [penicillin]}]}
    record = PatientRecord([allergy, misshapen])
    assert refs(record.find("AllergyIntolerance", compile_codes({"rxnorm": ["7980"]}))) == {"AllergyIntolerance/a"}


def test_a_cpt_code_sent_as_hcpcs_level_one_is_the_cpt_code() -> None:
    """Claims-derived data (Blue Button, the CRD reference implementation) codes CPT under HCPCS."""
    blue_button = "https://bluebutton.cms.gov/resources/codesystem/hcpcs"
    stent = {"resourceType": "Procedure", "id": "p", "status": "completed",
             "code": {"coding": [{"system": blue_button, "code": "37238"}]}}
    bed = {"resourceType": "Procedure", "id": "q", "status": "completed",
           "code": {"coding": [{"system": blue_button, "code": "E0250"}]}}
    record = PatientRecord([stent, bed])
    assert refs(record.find("Procedure", compile_codes({"cpt": ["37238"]}))) == {"Procedure/p"}
    assert refs(record.find("Procedure", compile_codes({"hcpcs": ["E0250"]}))) == {"Procedure/q"}
    assert refs(record.find("Procedure", compile_codes({"hcpcs": ["A6530"]}))) == set()


def _procedure(rid: str, cpt: str) -> dict:
    return {"resourceType": "Procedure", "id": rid, "status": "completed",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": cpt}]}}


def test_found_resources_come_in_record_order_whatever_the_code_sets_hash_order() -> None:
    """Cards cite evidence in this order: it must not change with the process's hash seed."""
    cpts = ["97110", "97161", "97530", "97112", "97140", "97162", "97163", "97116"]
    record = PatientRecord([_procedure(f"p{i}", cpt) for i, cpt in enumerate(cpts)])
    in_record_order = [f"p{i}" for i in range(len(cpts))]
    # criterion codes in another order than the record's, with and without codes the record lacks
    many = compile_codes({"cpt": cpts + ["97750", "97535"]})
    assert [r["id"] for r in record.find("Procedure", many)] == in_record_order
    assert [r["id"] for r in record.find("Procedure", compile_codes({"cpt": cpts[::-2]}))] == in_record_order[1::2]


def test_text_that_negates_a_term_does_not_name_it() -> None:
    """Text criteria read displays and free text, where a negation in the same clause means the
    patient does not have the condition (ICD-10-CM's own "without ..." displays included)."""
    assert affirms("radiculopathy, lumbar region", "radiculopathy")
    assert not affirms("spondylosis without myelopathy or radiculopathy, lumbar region", "radiculopathy")
    assert not affirms("may-thurner syndrome ruled out", "may-thurner")
    assert not affirms("family history of multiple sclerosis", "multiple sclerosis")
    assert not affirms("patient denies nickel allergy", "nickel")
    assert affirms("no dvt, may-thurner syndrome", "may-thurner")  # the negation ends with its clause
    assert affirms("no radiculopathy | radiculopathy, lumbar region", "radiculopathy")  # named again, affirmed
    assert affirms("history of radiation therapy to the chest", "radiation therapy")
    assert affirms("nontraumatic budd-chiari syndrome", "budd-chiari")  # "no" only as a word
    negated = {"resourceType": "Condition", "id": "n",
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M47.816",
                                    "display": "Spondylosis without myelopathy or radiculopathy, lumbar region"}]}}
    named = {"resourceType": "Condition", "id": "r", "code": {"text": "Lumbar radiculopathy"}}
    assert refs(PatientRecord([negated, named]).mentioning("Condition", ("radiculopathy",))) == {"Condition/r"}


def test_a_term_with_a_gap_takes_the_words_reports_put_inside_a_phrase() -> None:
    """"severe … stenosis" is how a policy asks for "severe central canal stenosis": up to three words
    between, in the same clause, none of them a negation."""
    assert affirms("severe central canal stenosis", "severe … stenosis")
    assert affirms("severe bilateral neural foraminal stenosis", "severe ... stenosis")
    assert not affirms("severe facet arthropathy; stenosis elsewhere", "severe … stenosis")  # another clause
    assert affirms("severe central and lateral recess stenosis", "severe … stenosis")
    assert not affirms("mild disc desiccation at two levels, stenosis", "mild … stenosis")  # another clause
    assert not affirms("mild loss of disc height at two levels and stenosis", "mild … stenosis")  # five words between
    assert not affirms("mild disc bulge without stenosis", "mild … stenosis")  # a negation in the gap
    assert not affirms("mild facet arthropathy with stenosis", "mild … stenosis")  # another finding's degree
    assert not affirms("mild disc bulge and moderate stenosis", "mild … stenosis")  # another degree word
    assert not affirms("no severe central stenosis", "severe … stenosis")
    assert affirms("no significant canal or foraminal stenosis", "no significant … stenosis")  # its own "no"
    gapped = {"resourceType": "Condition", "id": "g", "code": {"text": "Severe lumbar canal stenosis"}}
    assert refs(PatientRecord([gapped]).mentioning("Condition", ("severe … stenosis",))) == {"Condition/g"}


def _passages(text: str) -> list[tuple[list[str], str]]:
    return [(sorted(level.label for level in levels), passage.strip()) for levels, passage in level_passages(text)]


def test_an_imaging_conclusion_is_read_level_by_level() -> None:
    """Each level owns the words a radiologist wrote about it: after a level that heads its sentence
    (and the sentences after it, on its line), before a level named after its words."""
    assert _passages("Severe stenosis at L4-5 and mild stenosis at L3-4.") == [
        (["L4-L5"], "Severe stenosis at L4-5"), (["L3-L4"], "and mild stenosis at L3-4.")]
    assert _passages("L4-L5: Disc bulge. Severe central canal stenosis.\nMild disc bulge without stenosis.") == [
        (["L4-L5"], "L4-L5: Disc bulge."), (["L4-L5"], "Severe central canal stenosis.")]  # a new line, a new subject
    assert _passages("L4-L5:\nSevere central canal stenosis.") == [
        (["L4-L5"], "L4-L5:"), (["L4-L5"], "Severe central canal stenosis.")]  # a heading on its own line
    assert _passages("Moderate stenosis at L3-4 and L4-5, mild at L5-S1.") == [
        (["L3-L4", "L4-L5"], "Moderate stenosis at L3-4 and L4-5,"), (["L5-S1"], "mild at L5-S1.")]
    assert _passages("Severe stenosis at L3-4 with compression of the cauda equina, and mild stenosis at L4-5.") == [
        (["L3-L4"], "Severe stenosis at L3-4 with compression of the cauda equina,"),
        (["L4-L5"], "and mild stenosis at L4-5.")]
    assert _passages("1. At L4-5 there is severe stenosis, and at L5-S1 mild stenosis.") == [
        (["L4-L5"], "L4-5 there is severe stenosis, and at"), (["L5-S1"], "L5-S1 mild stenosis.")]
    assert _passages("Grade 1 anterolisthesis of L4 on L5 with compression of the L5 nerve roots.") == [
        (["L4-L5"], "Grade 1 anterolisthesis of L4 on L5 with compression of the L5 nerve roots.")]
    assert _passages("No acute fracture. Vertebral body heights are maintained.") == []


def test_consecutive_vertebrae_name_their_segment_and_a_lone_one_stays_a_vertebra() -> None:
    """L4 + L5 (how SNOMED codes a segment) or a slip "of L4 on L5" is the L4-L5 interspace, not each
    vertebra touching L3-L4 and L5-S1 too; a single vertebra still touches both of its levels."""
    snomed = "http://snomed.info/sct"
    l4_l5 = SpinalLevel.between("L4", "L5")
    assert body_site_levels([{"coding": [{"system": snomed, "code": "11994002"}, {"system": snomed, "code": "49668003"}]}]) \
        == ({l4_l5}, set())
    assert body_site_levels([{"text": "Anterolisthesis of L4 on L5"}]) == ({l4_l5}, set())
    assert body_site_levels([{"text": "L3 on 4 views"}]) == (set(), {"L3"})  # "on" before a count names no segment
    assert body_site_levels([{"text": "L3"}, {"text": "L4"}, {"text": "S1"}]) == ({SpinalLevel.between("L3", "L4")}, {"S1"})
    assert body_site_levels([{"coding": [{"system": snomed, "code": "11994002"}]}]) == (set(), {"L4"})
