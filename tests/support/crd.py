"""Checks a CDS Hooks / CRD response the way the Inferno CRD test kit (STU 2.0.1) does, and more.

The coverage-information extension is validated against the StructureDefinition
and ValueSets of the CRD 2.0.1 package in ../shared/peer-fixtures, plus the
CRD 2.2 invariants, so an answer is valid for both versions.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from cds_service.cdshooks import prune
from tests.conftest import SHARED

PACKAGE = SHARED / "peer-fixtures" / "davinci-crd-2.0.1-package" / "package"
EXTENSION_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
CARD_TYPES = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
# Draft order types that must get coverage information on order-sign.
ORDER_TYPES = ("ServiceRequest", "DeviceRequest", "MedicationRequest", "NutritionOrder")
# Codes CRD 2.2 adds to the required value sets (used only when a client asks for 2.2).
V22_CODES = {"covered": {"indeterminate"}, "pa-needed": {"indeterminate"}, "doc-needed": {"patient", "indeterminate"},
             "info-needed": {"detail-code"}}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8-sig"))


@functools.cache
def slices() -> dict[str, dict[str, Any]]:
    """Sub-extension url -> {min, max, types, valueset} from the 2.0.1 StructureDefinition."""
    sd = _load(PACKAGE / "StructureDefinition-ext-coverage-information.json")
    found: dict[str, dict[str, Any]] = {}
    for element in sd["differential"]["element"]:
        parts = element["id"].split(".")
        if len(parts) == 2 and ":" in parts[1]:
            name = parts[1].split(":")[1]
            found[name] = {"min": element.get("min", 0), "max": element.get("max", "*")}
        elif len(parts) == 3 and ":" in parts[1] and parts[2] == "value[x]":
            name = parts[1].split(":")[1]
            found[name]["types"] = {t["code"] for t in element.get("type", [])}
            binding = element.get("binding") or {}
            if binding.get("strength") == "required":
                found[name]["valueset"] = binding["valueSet"]
    return found


@functools.cache
def valueset_codes(url: str) -> frozenset[str]:
    for path in PACKAGE.glob("ValueSet-*.json"):
        data = _load(path)
        if data.get("url") == url:
            return frozenset(c["code"] for inc in data["compose"]["include"] for c in inc.get("concept", []))
    raise KeyError(url)


def _value(part: dict) -> tuple[str, Any]:
    key = next(k for k in part if k.startswith("value"))
    return key[5:], part[key]


def check_coverage_information(extension: dict, version: str = "2.0") -> list[str]:
    """Problems with one ext-coverage-information instance (empty list = valid)."""
    problems = []
    if extension.get("url") != EXTENSION_URL:
        return [f"wrong url {extension.get('url')}"]
    parts = extension.get("extension") or []
    counts: dict[str, int] = {}
    values: dict[str, list[Any]] = {}
    for part in parts:
        name = part.get("url")
        spec = slices().get(name)
        if name == "detail" and version == "2.2":
            counts[name] = counts.get(name, 0) + 1
            continue
        if spec is None:
            problems.append(f"unknown sub-extension {name}")
            continue
        counts[name] = counts.get(name, 0) + 1
        if name == "detail":
            continue
        kind, value = _value(part)
        if kind not in spec["types"] and kind[0].lower() + kind[1:] not in spec["types"]:
            problems.append(f"{name} has value{kind}, allowed {spec['types']}")
        if "valueset" in spec:
            allowed = valueset_codes(spec["valueset"]) | (V22_CODES.get(name, set()) if version == "2.2" else set())
            if value not in allowed:
                problems.append(f"{name}={value} not in {spec['valueset']}")
        values.setdefault(name, []).append(value)
    for name, spec in slices().items():
        count = counts.get(name, 0)
        if count < spec["min"]:
            problems.append(f"{name} missing (min {spec['min']})")
        if spec["max"] != "*" and count > int(spec["max"]) and not (name == "doc-needed" and version == "2.2"):
            problems.append(f"{name} repeated {count} times (max {spec['max']})")
    one = {k: v[0] for k, v in values.items()}
    conditional = any(one.get(k) == "conditional" for k in ("covered", "pa-needed", "doc-needed"))
    # 2.0.1 invariants
    if "questionnaire" in values and "doc-needed" not in values:
        problems.append("crd-ci-q1: questionnaire without doc-needed")
    if one.get("covered") != "not-covered" and "pa-needed" not in values:
        problems.append("crd-ci-q2 (2.0.1): pa-needed required unless not-covered")
    if "info-needed" in values and not conditional:
        problems.append("crd-ci-q3 (2.0.1): info-needed without anything conditional")
    if ("pa-needed" in values) != ("satisfied-pa-id" in values) and one.get("pa-needed") == "satisfied":
        problems.append("crd-ci-q5: satisfied-pa-id iff pa-needed=satisfied")
    # 2.2 invariants
    if one.get("covered") == "not-covered" and "pa-needed" in values:
        problems.append("crd-ci-q2 (2.2): not-covered with pa-needed")
    if conditional and "info-needed" not in values:
        problems.append("crd-ci-q3 (2.2): conditional without info-needed")
    if "OTH" in values.get("info-needed", []) and "reason" not in values:
        problems.append("crd-ci-q6: info-needed OTH without reason")
    if "doc-purpose" in values and "reason" not in values:
        problems.append("crd-ci-q8: doc-purpose without reason")
    if "indeterminate" in one.values() and "reason" not in values:
        problems.append("crd-ci-q9: indeterminate without reason")
    for reason in values.get("reason", []):
        if not reason.get("text"):
            problems.append("crd-ci-q7: reason without text")
    return problems


def _empty_values(value: Any, path: str = "") -> list[str]:
    if value is None or value == "" or value == [] or value == {}:
        return [path or "(root)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _empty_values(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _empty_values(v, f"{path}[{i}]")]
    return []


def check_response(request: dict, response: dict, hook: str) -> list[str]:
    """Inferno's card and coverage-information checks, plus CDS Hooks' no-empty-values rule."""
    problems = []
    if not isinstance(response.get("cards"), list):
        return ["cards missing or not an array"]
    for key, value in response.items():
        if key != "cards" or value:
            problems += [f"empty value at {p}" for p in _empty_values(value, key)]
    for card in response["cards"]:
        summary = card.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) >= 140:
            problems.append(f"summary must be a string under 140 characters: {summary!r}")
        if card.get("indicator") not in ("info", "warning", "critical"):
            problems.append(f"indicator {card.get('indicator')}")
        source = card.get("source") or {}
        topic = source.get("topic") or {}
        if not source.get("label") or not topic.get("system") or not topic.get("code"):
            problems.append(f"source needs label and topic: {source}")
        if topic.get("system") != CARD_TYPES:
            problems.append(f"topic system {topic.get('system')}")
        if not card.get("uuid"):
            problems.append("card uuid missing")
        if card.get("suggestions"):
            if card.get("selectionBehavior") not in ("at-most-one", "any"):
                problems.append("selectionBehavior required with suggestions")
            for suggestion in card["suggestions"]:
                if not suggestion.get("label") or not suggestion.get("uuid"):
                    problems.append("suggestion needs label and uuid")
                for action in suggestion.get("actions", []):
                    if action.get("type") not in ("create", "update", "delete") or not action.get("description"):
                        problems.append(f"bad action {action}")
        for link in card.get("links", []):
            if not (link.get("label") and link.get("url", "").startswith(("http://", "https://"))
                    and link.get("type") in ("absolute", "smart")):
                problems.append(f"bad link {link}")
            if link.get("type") == "absolute" and "appContext" in link:
                problems.append("appContext on an absolute link")
        for reason in card.get("overrideReasons", []):
            if not (reason.get("system") and reason.get("code") and reason.get("display")):
                problems.append(f"overrideReason needs system, code, display: {reason}")
        refs = (card.get("extension") or {}).get("davinci-crd.associated-resource", [])
        if not refs:
            problems.append("card without davinci-crd.associated-resource")
    version = (request.get("extension") or {}).get("davinci-crd.requestedVersion", "2.0")
    orders = {f'{e["resource"]["resourceType"]}/{e["resource"].get("id")}': e["resource"]
              for e in request["context"]["draftOrders"].get("entry", [])
              if e.get("resource", {}).get("resourceType") in ORDER_TYPES}
    actions = {f'{a["resource"]["resourceType"]}/{a["resource"].get("id")}': a
               for a in response.get("systemActions", [])}
    if hook == "order-sign":
        problems += [f"no coverage-information systemAction for {ref}" for ref in orders if ref not in actions]
    for ref, action in actions.items():
        resource = action["resource"]
        if action["type"] != "update":
            problems.append("coverage information must be an update")
        infos = [e for e in resource.get("extension", []) if e.get("url") == EXTENSION_URL]
        if not infos:
            problems.append(f"{ref} lacks ext-coverage-information")
        for info in infos:
            problems += [f"{ref}: {p}" for p in check_coverage_information(info, version)]
            if hook == "order-select" and any(p.get("url") == "doc-needed" for p in info["extension"]):
                problems.append("order-select coverage information asks for documentation (CRD hook-19)")
        ids = {p["valueString"] for i in infos for p in i["extension"] if p["url"] == "coverage-assertion-id"}
        if len(ids) != 1:
            problems.append("coverage-assertion-id not consistent within the resource")
        original = orders.get(ref)
        if original is None:
            problems.append(f"systemAction for an order not in draftOrders: {ref}")
        elif prune({k: v for k, v in resource.items() if k != "extension"}) != \
                prune({k: v for k, v in original.items() if k != "extension"}):
            # Empty arrays/objects are not FHIR content, so dropping them changes nothing.
            problems.append(f"systemAction changed {ref} beyond the extension")
    return problems
