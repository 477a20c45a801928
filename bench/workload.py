"""The benchmark's patient: one chart, three draft orders, ~500 resources.

The evidence the three policies read comes from the fully documented fixtures
(``cohere-may-thurner-meets``: CPT 37238, ``mbb-meets``: 64493, ``fusion-meets``: 22633),
re-pointed at one patient, one Coverage and one payer Organization. Around it sits
the bulk of a real chart that no guideline reads: vital signs and labs (LOINC) over
six years and old resolved conditions. It is generated deterministically (fixed seed,
dates relative to today, so "within 6 months" windows keep their meaning).

The same resources serve both paths of the benchmark:

* ``prefetch_request()``: the order-sign request with every prefetch key answered
  (``answer_prefetch`` over the whole chart, as a client that ignores the code filters would);
* ``fhir_request()``: the same request with no prefetch, pointing at a FHIR server
  loaded with ``transaction_bundle()``.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import date
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATIENTS = ROOT / "fhir_fixtures" / "patients"

PATIENT_ID = "bench-patient"
# The three fully documented fixtures and the draft order each contributes.
SOURCES = (
    ("cohere-may-thurner-meets", "cohere-mt-order-37238"),
    ("mbb-meets", "mbb-meets-order-64493"),
    ("fusion-meets", "fusion-meets-order-22633"),
)
ORDER_CODES = ("37238", "64493", "22633")

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# (LOINC, display, UCUM unit, mean, spread, decimals)
VITALS = (
    ("8867-4", "Heart rate", "/min", 74, 9, 0),
    ("9279-1", "Respiratory rate", "/min", 15, 2, 0),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.3, 1),
    ("2708-6", "Oxygen saturation", "%", 97.5, 1.2, 0),
    ("29463-7", "Body weight", "kg", 78, 3, 1),
    ("8302-2", "Body height", "cm", 167, 0.4, 1),
    ("39156-5", "Body mass index", "kg/m2", 27.9, 1.1, 1),
)
LABS = (
    ("2345-7", "Glucose", "mg/dL", 98, 14, 0),
    ("2160-0", "Creatinine", "mg/dL", 0.9, 0.12, 2),
    ("718-7", "Hemoglobin", "g/dL", 13.6, 0.8, 1),
    ("6690-2", "Leukocytes", "10*3/uL", 6.8, 1.5, 1),
    ("777-3", "Platelets", "10*3/uL", 250, 40, 0),
    ("2951-2", "Sodium", "mmol/L", 140, 2, 0),
    ("2823-3", "Potassium", "mmol/L", 4.2, 0.3, 1),
    ("4548-4", "Hemoglobin A1c", "%", 5.7, 0.3, 1),
    ("2093-3", "Cholesterol", "mg/dL", 190, 22, 0),
)
# Old, resolved problems no guideline asks about.
OLD_CONDITIONS = (
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("J20.9", "Acute bronchitis, unspecified"),
    ("J02.9", "Acute pharyngitis, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("H66.90", "Otitis media, unspecified, unspecified ear"),
    ("S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter"),
    ("K52.9", "Noninfective gastroenteritis and colitis, unspecified"),
    ("B34.9", "Viral infection, unspecified"),
    ("L03.115", "Cellulitis of right lower limb"),
    ("J01.90", "Acute sinusitis, unspecified"),
    ("H10.9", "Unspecified conjunctivitis"),
    ("R05.9", "Cough, unspecified"),
    ("T78.40XA", "Allergy, unspecified, initial encounter"),
    ("S61.411A", "Laceration without foreign body of right hand, initial encounter"),
    ("A08.4", "Viral intestinal infection, unspecified"),
    ("J10.1", "Influenza due to other identified influenza virus with other respiratory manifestations"),
    ("L23.7", "Allergic contact dermatitis due to plants, except food"),
    ("R51.9", "Headache, unspecified"),
)
VITAL_VISITS = 44   # x 8 observations (7 vitals + a blood-pressure panel)
LAB_DRAWS = 14      # x 9 analytes
YEARS = 6


def _repoint(value: Any, mapping: dict[str, str]) -> Any:
    """Replace every reference string in *mapping* (e.g. Patient/old -> Patient/new), recursively."""
    if isinstance(value, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _repoint(v, mapping))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_repoint(v, mapping) for v in value]
    return value


def evidence() -> tuple[list[dict], list[dict]]:
    """(chart resources, the three draft orders) from the fixtures, re-pointed at one patient."""
    bundles = [(name, order, json.loads((PATIENTS / f"{name}.json").read_text())) for name, order in SOURCES]
    chart: list[dict] = []
    drafts: list[dict] = []
    mapping: dict[str, str] = {}
    kept: dict[str, str] = {}  # resource type -> id kept for Patient / Coverage / payer Organization
    for _name, _order, bundle in bundles:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            rtype = resource["resourceType"]
            if rtype == "Patient" or rtype == "Coverage":
                kept.setdefault(rtype, resource["id"])
            if rtype == "Coverage":
                payer = resource["payor"][0]["reference"]
                kept.setdefault("Organization", payer.split("/", 1)[1])
                mapping[payer] = f"Organization/{kept['Organization']}"
            if rtype == "Patient":
                mapping[f"Patient/{resource['id']}"] = f"Patient/{PATIENT_ID}"
            elif rtype == "Coverage":
                mapping[f"Coverage/{resource['id']}"] = f"Coverage/{kept['Coverage']}"
    for _name, order_id, bundle in bundles:
        for entry in bundle["entry"]:
            resource = _repoint(copy.deepcopy(entry["resource"]), mapping)
            rtype, rid = resource["resourceType"], resource["id"]
            if rtype == "ServiceRequest":
                if rid == order_id:
                    drafts.append(resource)
                continue  # companion orders (64494, 63052) are not part of this request
            if rtype == "Patient":
                if rid != kept["Patient"]:
                    continue
                resource["id"] = PATIENT_ID
            elif rtype == "Coverage" and rid != kept["Coverage"]:
                continue
            elif rtype == "Organization" and f"Organization/{rid}" in mapping and rid != kept["Organization"]:
                continue
            chart.append(resource)
    assert [d["code"]["coding"][0]["code"] for d in drafts] == list(ORDER_CODES), drafts
    return chart, drafts


def _quantity(rng: random.Random, mean: float, spread: float, decimals: int, unit: str) -> dict:
    value = round(rng.gauss(mean, spread / 2), decimals)
    return {"value": int(value) if decimals == 0 else value, "unit": unit}


def _when(day: date, rng: random.Random) -> str:
    moment = datetime(day.year, day.month, day.day, rng.randint(8, 16), rng.choice((0, 15, 30, 45)),
                      tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def _observation(oid: str, code: str, when: str, **value: Any) -> dict:
    # Lean on purpose (no category, displays or UCUM system) so that ~500 resources make ~160 KB.
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when, **value,
    }


def filler(today: date, seed: int = 20261121) -> list[dict]:
    """Vital signs, labs and old resolved conditions: the bulk of a chart that no guideline reads."""
    rng = random.Random(seed)
    resources: list[dict] = []
    span = YEARS * 365
    for visit in range(VITAL_VISITS):
        day = today - timedelta(days=span - visit * span // VITAL_VISITS + rng.randint(0, 20))
        when = _when(day, rng)
        for code, _display, unit, mean, spread, decimals in VITALS:
            resources.append(_observation(f"vs{visit:02d}-{code}", code, when,
                                          valueQuantity=_quantity(rng, mean, spread, decimals, unit)))
        resources.append(_observation(
            f"vs{visit:02d}-85354-9", "85354-9", when,
            component=[
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": _quantity(rng, 126, 12, 0, "mm[Hg]")},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": _quantity(rng, 79, 8, 0, "mm[Hg]")},
            ]))
    for draw in range(LAB_DRAWS):
        day = today - timedelta(days=span - draw * span // LAB_DRAWS + rng.randint(0, 30))
        when = _when(day, rng)
        for code, _display, unit, mean, spread, decimals in LABS:
            resources.append(_observation(f"lab{draw:02d}-{code}", code, when,
                                          valueQuantity=_quantity(rng, mean, spread, decimals, unit)))
    for i, (code, display) in enumerate(OLD_CONDITIONS):
        onset = today - timedelta(days=rng.randint(400, span))
        resources.append({
            "resourceType": "Condition", "id": f"bench-old-condition-{i:02d}",
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "resolved"}]},
            "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
            "code": {"coding": [{"system": ICD10, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "onsetDateTime": onset.isoformat(),
            "abatementDateTime": (onset + timedelta(days=rng.randint(5, 40))).isoformat(),
        })
    return resources


class Workload:
    """The chart, the drafts and the request bodies (built once)."""

    def __init__(self, today: date | None = None):
        from cds_service.catalog import Catalog
        from cds_service.catalog import bundled_policy_dir
        from cds_service.prefetch import build_templates

        self.today = today or datetime.now(timezone.utc).date()
        chart, self.drafts = evidence()
        patient = next(r for r in chart if r["resourceType"] == "Patient")
        # Patient first: answer_prefetch answers the patient key with the first Patient.
        self.chart = [patient] + [r for r in chart if r is not patient] + filler(self.today)
        self.templates = build_templates(Catalog.load(bundled_policy_dir()))
        self.practitioner = next(r for r in chart if r["resourceType"] == "Practitioner")

    def _request(self, name: str) -> dict:
        return {
            "hook": "order-sign",
            "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cds-prior-auth/bench/{name}")),
            "context": {
                "userId": f"Practitioner/{self.practitioner['id']}",
                "patientId": PATIENT_ID,
                "draftOrders": {
                    "resourceType": "Bundle", "type": "collection",
                    "entry": [{"fullUrl": f"http://ehr.example.org/fhir/ServiceRequest/{d['id']}", "resource": d}
                              for d in self.drafts],
                },
            },
        }

    def prefetch_request(self) -> dict:
        from cds_service.prefetch import answer_prefetch

        request = self._request("prefetch")
        request["prefetch"] = answer_prefetch(self.templates, self.chart)
        return request

    def fhir_request(self, fhir_server: str, token: str, drafts: list[dict] | None = None) -> dict:
        request = self._request("fhir")
        if drafts is not None:
            request["context"]["draftOrders"]["entry"] = [
                {"fullUrl": f"http://ehr.example.org/fhir/ServiceRequest/{d['id']}", "resource": d} for d in drafts]
        request["fhirServer"] = fhir_server
        request["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "patient/*.read", "subject": "cds-service"}
        return request

    def transaction_bundles(self, size: int = 50) -> list[dict]:
        """The chart as transaction Bundles (PUT with fixed ids) for the FHIR test server.

        Medplum's router accepts at most 50 updates per transaction, hence the chunks.
        """
        entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                   for r in self.chart]
        return [{"resourceType": "Bundle", "type": "transaction", "entry": entries[i:i + size]}
                for i in range(0, len(entries), size)]

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for r in self.chart:
            counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
        return {"resources": len(self.chart), "by_type": dict(sorted(counts.items())),
                "orders": [d["id"] for d in self.drafts]}
