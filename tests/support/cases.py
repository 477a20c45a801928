"""Golden policy cases (cards/cases/<policy>/<case>.yaml) turned into engine inputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds_service.record import Order
from cds_service.record import PatientRecord

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "cards" / "cases"
PATIENTS = ROOT / "fhir_fixtures" / "patients"


def bundle_resources(name: str) -> list[dict]:
    bundle = json.loads((PATIENTS / f"{name}.json").read_text())
    return [entry["resource"] for entry in bundle.get("entry", [])]


def is_draft_order(resource: dict) -> bool:
    return resource.get("resourceType") == "ServiceRequest" and resource.get("status") == "draft"


@dataclass
class Case:
    path: Path
    policy_id: str
    data: dict[str, Any]

    @property
    def expect(self) -> dict[str, Any]:
        return self.data["expect"]

    def record_and_order(self) -> tuple[PatientRecord, Order]:
        """The case's record (see ``chart``) and the order it is about."""
        chart, orders, unavailable = self.chart()
        return PatientRecord(chart, orders, unavailable), orders[0]

    def chart(self) -> tuple[list[dict], list[Order], set[str]]:
        """(resources, orders with the case's first, unavailable types): the case's own resources
        override the bundle's (same type and id), and resource types listed as ``unavailable``
        are removed, as when the EHR fails to return them."""
        resources = list(self.data.get("resources", []))
        if "bundle" in self.data:
            resources += bundle_resources(self.data["bundle"])
        unavailable = set(self.data.get("unavailable", ()))
        resources = [r for r in resources if r.get("resourceType") not in unavailable]
        drafts = [r for r in resources if is_draft_order(r)]
        if "order" in self.data:
            order_resource = self.data["order"]
        else:
            order_resource = next(r for r in drafts if r["id"] == self.data["order_id"])
        orders = [Order.from_resource(order_resource)] + [
            Order.from_resource(r) for r in drafts if r is not order_resource and r.get("id") != order_resource.get("id")
        ]
        return [r for r in resources if not is_draft_order(r)], orders, unavailable


def all_cases() -> list[Case]:
    return [
        Case(path, path.parent.name, yaml.safe_load(path.read_text()))
        for path in sorted(CASES.glob("*/*.yaml"))
    ]
