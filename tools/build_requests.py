"""Build fhir_fixtures/requests/*.order-sign.json from fhir_fixtures/patients/*.json.

Each patient file is a transaction Bundle (PUT with fixed ids) holding the patient's
chart plus the draft ServiceRequest(s) being signed. The request puts the drafts in
context.draftOrders and fills every prefetch key the service declares from the chart,
so the request can be posted with curl and needs no FHIR server.

    python tools/build_requests.py          # write the requests
    python tools/build_requests.py --check  # fail if a committed request is stale
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from cds_service.catalog import Catalog
from cds_service.catalog import bundled_policy_dir
from cds_service.prefetch import answer_prefetch
from cds_service.prefetch import build_templates

ROOT = Path(__file__).resolve().parent.parent
PATIENTS = ROOT / "fhir_fixtures" / "patients"
REQUESTS = ROOT / "fhir_fixtures" / "requests"


def build_request(name: str, bundle: dict, templates) -> dict:
    resources = [e["resource"] for e in bundle.get("entry", [])]
    drafts = [r for r in resources if r["resourceType"] == "ServiceRequest" and r.get("status") == "draft"]
    chart = [r for r in resources if r not in drafts]
    patient = next(r for r in chart if r["resourceType"] == "Patient")
    practitioner = next((r for r in chart if r["resourceType"] == "Practitioner"), None)
    prefetch = answer_prefetch(templates, [patient] + [r for r in chart if r is not patient])
    context = {
        "userId": f"Practitioner/{practitioner['id']}" if practitioner else "Practitioner/example",
        "patientId": patient["id"],
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"http://ehr.example.org/fhir/ServiceRequest/{d['id']}", "resource": d}
                      for d in drafts],
        },
    }
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cds-prior-auth/{name}")),
        "context": context,
        "prefetch": prefetch,
    }


def main(argv: list[str]) -> int:
    templates = build_templates(Catalog.load(bundled_policy_dir()))
    stale = []
    for path in sorted(PATIENTS.glob("*.json")):
        name = path.stem
        request = build_request(name, json.loads(path.read_text()), templates)
        text = json.dumps(request, indent=2) + "\n"
        target = REQUESTS / f"{name}.order-sign.json"
        if "--check" in argv:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(text)
    if stale:
        print("stale requests (run python tools/build_requests.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
