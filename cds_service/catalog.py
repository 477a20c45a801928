"""The catalog: every policy, the payer configuration and the finding codes, loaded and cross-checked once.

Loading fails (with file and line) on anything a request could trip over
later: a policy naming an unknown payer, two policies claiming the same
billing code for one payer, a ``finding`` code the CodeSystem does not define.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from .codes import PROJECT_FINDINGS
from .payers import PayerConfig
from .policy.loader import PolicyError
from .policy.loader import load_policies
from .policy.loader import load_yaml
from .policy.loader import resource_types
from .policy.loader import rule_roots
from .policy.loader import validation_problems
from .policy.loader import walk
from .policy.schema import Leaf
from .policy.schema import Policy
from .policy.schema import predicate_code_sets
from .policy.schema import Rule
from .record import Order

FINDINGS_FILE = "documentation-findings.codesystem.json"
_RULES_FOUND_MAX = 4096


def bundled_policy_dir() -> Path:
    """The cards/ directory shipped inside the installed package."""
    return Path(str(resources.files("cds_service.cards")))


@dataclass(frozen=True)
class Catalog:
    directory: Path
    policies: tuple[Policy, ...]
    payers: PayerConfig
    findings_codesystem: dict
    #: (policy id, rule id) -> the resource types the rule reads, computed once at load
    rule_types: dict[tuple[str, str], frozenset[str]]
    #: (payer id, order codes) -> rule_for's answer: every hook asks it per payer and order
    _rules_found: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, directory: Path) -> "Catalog":
        directory = Path(directory)
        findings = _load_findings(directory)
        payers = _load_payers(directory)
        loaded = load_policies(directory)
        problems: list[str] = []
        known = {c["code"] for c in findings.get("concept", [])}
        payer_ids = {p.id for p in payers.payers}
        claimed: dict[tuple[str, str, str], str] = {}
        for item in loaded:
            policy, name = item.policy, str(item.path)
            for payer in policy.payers:
                if payer != "*" and payer not in payer_ids:
                    problems.append(f"{name}: payer '{payer}' is not in payers.yaml")
            for rule in policy.rules:
                for payer in (payer_ids if "*" in policy.payers else set(policy.payers) & payer_ids):
                    for system, code in rule.codes.exact:
                        key = (payer, system, code)
                        if key in claimed and claimed[key] != policy.id:
                            problems.append(f"{name}: code {code} for payer '{payer}' is also claimed by '{claimed[key]}'")
                        claimed.setdefault(key, policy.id)
                for root in rule_roots(policy, rule):
                    for node in walk(root, policy):
                        if isinstance(node, Leaf):
                            for code in sorted(_finding_codes(node) - known):
                                problems.append(f"{name}: criterion '{node.id}' uses finding code '{code}' "
                                                f"not defined in {FINDINGS_FILE}")
        if problems:
            raise PolicyError(sorted(set(problems)))
        policies = tuple(item.policy for item in loaded)
        types = {(p.id, r.id): resource_types(p, r) for p in policies for r in p.rules}
        return cls(directory, policies, payers, findings, types)

    def policy(self, policy_id: str) -> Policy | None:
        return next((p for p in self.policies if p.id == policy_id), None)

    def policies_for(self, payer_id: str) -> list[Policy]:
        return [p for p in self.policies if "*" in p.payers or payer_id in p.payers]

    def rule_for(self, payer_id: str, order: Order) -> tuple[Policy, Rule] | None:
        """The payer's policy rule for the order's codes (billing options included), if any."""
        codes = tuple((system, code) for system, code, _display in order.codings)
        key = (payer_id, codes)
        try:
            return self._rules_found[key]
        except KeyError:
            found = self._find_rule(payer_id, codes)
        if len(self._rules_found) >= _RULES_FOUND_MAX:
            self._rules_found.clear()  # orders' codes come from clients: keep the memory bounded
        self._rules_found[key] = found
        return found

    def _find_rule(self, payer_id: str, codes: tuple[tuple[str, str], ...]) -> tuple[Policy, Rule] | None:
        for policy in self.policies_for(payer_id):
            for system, code in codes:
                rule = policy.rule_for(system, code)
                if rule is not None:
                    return policy, rule
        return None

    def governs(self, order: Order) -> bool:
        """Whether any payer has a policy for the order."""
        return any(self.rule_for(payer.id, order) is not None for payer in self.payers.payers)

    def evidence_types(self, orders: list[Order]) -> frozenset[str]:
        """Resource types any payer's rules for these orders read: what hydration must fetch."""
        types: set[str] = set()
        for payer in self.payers.payers:
            for order in orders:
                match = self.rule_for(payer.id, order)
                if match is not None:
                    types |= self.rule_types[match[0].id, match[1].id]
        return frozenset(types)


def _finding_codes(leaf: Leaf) -> set[str]:
    codes: set[str] = set()
    for value in predicate_code_sets(leaf.predicate):
        codes |= {code for system, code in value.exact if system == PROJECT_FINDINGS}
    return codes


def _load_findings(directory: Path) -> dict:
    path = directory / FINDINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError([f"{path}: cannot read the finding CodeSystem ({exc})"]) from None
    if data.get("resourceType") != "CodeSystem" or data.get("url") != PROJECT_FINDINGS:
        raise PolicyError([f"{path}: must be the CodeSystem {PROJECT_FINDINGS}"])
    return data


def _load_payers(directory: Path) -> PayerConfig:
    path = directory / "payers.yaml"
    if not path.is_file():
        raise PolicyError([f"{path}: missing payer configuration"])
    data, lines = load_yaml(path.read_text(encoding="utf-8"), str(path))
    try:
        return PayerConfig.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, data, lines, str(path))) from None
