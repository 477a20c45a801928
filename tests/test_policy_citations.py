"""Every criterion is cited, and every quote is really in the source document it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds_service.policy.loader import rule_roots
from cds_service.policy.loader import walk
from cds_service.policy.schema import Leaf

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def normalize(text: str) -> str:
    """Fold the source's markdown emphasis, bullets, superscript reference marks and typography."""
    text = re.sub(r"[*◆¹²³⁴⁵⁶⁷⁸⁹⁰⁻]", " ", text)
    text = text.replace("“", '"').replace("”", '"').replace("’", "'").replace("–", "-")
    return re.sub(r"\s+", " ", text).strip().lower()


def _cited_nodes(policy):
    seen = set()
    for rule in policy.rules:
        if rule.not_medically_necessary is not None:
            yield rule.not_medically_necessary
        for root in rule_roots(policy, rule):
            for node in walk(root, policy):
                if id(node) not in seen:
                    seen.add(id(node))
                    yield node


def test_seed_documents_are_available():
    assert SEEDS.is_dir(), f"{SEEDS} is missing: the citations are checked against ../shared/seeds"


@pytest.mark.parametrize("policy_id", ["cohere-venous-stents", "healthy-blue-cg-surg-106",
                                       "sclerotherapy", "lumbar-medial-branch-blocks",
                                       "lumbar-fusion"])
def test_quotes_are_verbatim(policy_id, catalog):
    policy = catalog.policy(policy_id)
    assert policy is not None, f"policy {policy_id} is not in cards/"
    source = normalize((SEEDS / policy.provenance.source_file).read_text(encoding="utf-8"))
    missing = [
        f"{getattr(node, 'id', None)}: {node.cite.quote}"
        for node in _cited_nodes(policy)
        if getattr(node, "cite", None) is not None and normalize(node.cite.quote) not in source
    ]
    assert not missing, "quotes not found in the source:\n" + "\n".join(missing)


def test_every_leaf_is_cited(catalog):
    for policy in catalog.policies:
        for node in _cited_nodes(policy):
            if isinstance(node, Leaf):
                assert node.cite.quote.strip() and node.cite.section.strip(), f"{policy.id}/{node.id}"
