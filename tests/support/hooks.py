"""Small builders for CDS Hooks requests used across tests."""

from __future__ import annotations

import copy
import functools
import uuid

from cds_service.catalog import Catalog
from cds_service.catalog import bundled_policy_dir
from cds_service.prefetch import answer_prefetch
from cds_service.prefetch import build_templates

CPT = "http://www.ama-assn.org/go/cpt"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ACTIVE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}


def service_request(code: str, id: str = "sr1", patient: str = "p1", **extra) -> dict:
    resource = {"resourceType": "ServiceRequest", "id": id, "status": "draft", "intent": "order",
                "authoredOn": "2026-11-02", "code": {"coding": [{"system": CPT, "code": code}]},
                "subject": {"reference": f"Patient/{patient}"}}
    resource.update(extra)
    return resource


def condition(icd10: str, id: str, patient: str = "p1", text: str | None = None, **extra) -> dict:
    code = {"coding": [{"system": ICD10, "code": icd10}]}
    if text:
        code["text"] = text
    resource = {"resourceType": "Condition", "id": id, "subject": {"reference": f"Patient/{patient}"},
                "clinicalStatus": ACTIVE, "code": code}
    resource.update(extra)
    return resource


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}


def hook_request(*orders: dict, hook: str = "order-sign", prefetch: dict | None = None, **extra) -> dict:
    body = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/pr1", "patientId": "p1",
                    "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]}},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return copy.deepcopy(body)


def full_prefetch(*resources: dict, patient: dict | None = None) -> dict:
    """A prefetch answering every declared template (empty where nothing matches)."""
    patient = patient or {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-05"}
    return answer_prefetch(_templates(), [patient, *resources])


@functools.cache
def _templates():
    return build_templates(Catalog.load(bundled_policy_dir()))
