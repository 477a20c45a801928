"""DTR Questionnaires generated from the same policy data the engine evaluates.

One yes/no item per documentable criterion (linkId = criterion id, code = the
criterion in the policy's criteria CodeSystem), grouped by rule. A completed
QuestionnaireResponse to it is evidence for the engine (``record.answers``), so
order-select -> missing items -> form answered -> order-sign -> covered works.
"""

from __future__ import annotations

import re
from typing import Iterator

from .codes import PROJECT_BASE
from .policy.engine import questionnaire_url
from .policy.loader import rule_roots
from .policy.loader import walk
from .policy.schema import Leaf
from .policy.schema import Policy


def criteria_system(policy: Policy) -> str:
    return f"{PROJECT_BASE}/CodeSystem/{policy.id}-criteria"


def askable(policy: Policy) -> Iterator[tuple[str, list[Leaf]]]:
    """(rule title, leaves) in policy order; each criterion asked once, in its first rule."""
    seen: set[str] = set()
    for rule in policy.rules:
        leaves = []
        for root in rule_roots(policy, rule):
            for node in walk(root, policy):
                if isinstance(node, Leaf) and node.asked and node.id not in seen:
                    seen.add(node.id)
                    leaves.append(node)
        if leaves:
            yield rule.title, leaves


def questionnaire(policy: Policy) -> dict:
    """The FHIR R4 Questionnaire for *policy*."""
    groups = []
    for title, leaves in askable(policy):
        groups.append({
            "linkId": _group_id(title),
            "type": "group",
            "text": title,
            "item": [_item(policy, leaf) for leaf in leaves],
        })
    resource = {
        "resourceType": "Questionnaire",
        "id": policy.id,
        "url": questionnaire_url(policy),
        "version": policy.version,
        "name": "".join(part.capitalize() for part in policy.id.split("-")) + "Documentation",
        "title": f"{policy.title}: documentation",
        "status": "active",
        "subjectType": ["Patient"],
        "publisher": "cds-prior-auth",
        "description": policy.summary,
        "item": groups,
    }
    if policy.provenance.effective:
        resource["date"] = policy.provenance.effective.isoformat()
    return resource


def _group_id(title: str) -> str:
    return "group-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _item(policy: Policy, leaf: Leaf) -> dict:
    suffix = " (at every spinal level ordered)" if leaf.at_level else ""
    help_text = f"{leaf.documentation}. Guideline ({leaf.cite.section}): \"{leaf.cite.quote}\""
    return {
        "linkId": leaf.id,
        "code": [{"system": criteria_system(policy), "code": leaf.id, "display": leaf.text}],
        "text": f"{leaf.text}{suffix}",
        "type": "boolean",
        "item": [{"linkId": f"{leaf.id}.help", "type": "display", "text": help_text}],
    }
