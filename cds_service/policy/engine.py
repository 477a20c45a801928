"""Three-valued evaluation of a policy rule for one order: a pure function of record and policy.

Statuses combine with Kleene logic: ``all_of`` is not met if any child is
not met, undocumented if any is undocumented, else met; ``any_of`` the dual;
``not`` swaps met and not met; ``when``/``then`` is implication. The order's
outcome follows from the rule's criteria and exclusions::

    determination or exclusion met or criteria not met -> not medically necessary
    criteria undocumented                               -> documentation needed
    criteria met                                        -> meets criteria

so an order is never "meets criteria" while a required criterion is undocumented.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import replace
from datetime import date
from typing import Iterable

from ..codes import PROJECT_BASE
from ..record import Order
from ..record import PatientRecord
from .loader import resource_types
from .predicates import EVALUATORS
from .predicates import Context
from .predicates import LeafOutcome
from .predicates import Status
from .schema import AllOf
from .schema import AnyForm
from .schema import AnyOf
from .schema import AtLeast
from .schema import Citation
from .schema import Leaf
from .schema import Node
from .schema import Not
from .schema import PerLevel
from .schema import Policy
from .schema import Ref
from .schema import Rule
from .schema import Suggestion
from .schema import deciding_resources
from .schema import When


class Outcome(str, enum.Enum):
    MEETS_CRITERIA = "meets-criteria"
    DOCUMENTATION_NEEDED = "documentation-needed"
    NOT_MEDICALLY_NECESSARY = "not-medically-necessary"
    NO_POLICY = "no-policy"


@dataclass(slots=True)
class NodeResult:
    """The status of one criterion node, with its children's results and the evidence used.

    Not frozen: a request builds a few hundred, and a frozen dataclass takes three times as
    long to build. Nothing changes one after it is built.
    """

    node: Node
    status: Status
    children: tuple["NodeResult", ...] = ()
    evidence: tuple[str, ...] = ()
    reason: str | None = None
    level: str | None = None
    #: False when a ``when`` guard is not met, so the ``then`` branch does not apply.
    applicable: bool = True


@dataclass(frozen=True)
class Finding:
    """A criterion worth telling the clinician about: missing, failed, or met with evidence."""

    id: str
    text: str
    documentation: str | None = None
    cite: Citation | None = None
    reason: str | None = None
    level: str | None = None
    evidence: tuple[str, ...] = ()
    #: For "one of" groups: the alternatives that would satisfy it.
    alternatives: tuple["Finding", ...] = ()
    #: For conditional requirements: the condition, and whether the record shows it holds.
    condition: str | None = None
    condition_met: bool = False
    #: For an undocumented condition whose requirement is not met: what it would then require.
    consequence: str | None = None
    suggestion: Suggestion | None = None
    safety: bool = False
    #: For "one of" groups still open: the alternatives the record rules out, and why (not to document).
    ruled_out: tuple["Finding", ...] = ()

    def walk(self) -> Iterable["Finding"]:
        yield self
        for alternative in self.alternatives:
            yield from alternative.walk()


@dataclass(frozen=True)
class OrderEvaluation:
    """Everything the cards and the coverage information need to know about one order."""

    order: Order
    outcome: Outcome
    as_of: date
    policy: Policy | None = None
    rule: Rule | None = None
    missing: tuple[Finding, ...] = ()
    failed: tuple[Finding, ...] = ()
    met: tuple[Finding, ...] = ()
    #: Exclusions the record points to without establishing (a provisional diagnosis): to confirm or rule out.
    unresolved: tuple[Finding, ...] = ()
    tree: NodeResult | None = None
    exclusions: tuple[NodeResult, ...] = ()
    #: Evidence types the rule needs that the EHR could not provide (FHIR server failure).
    evidence_gaps: tuple[str, ...] = ()

    @property
    def excluded(self) -> tuple[Finding, ...]:
        """What the record shows that the guideline excludes (or a determination that applies):
        stated as findings, unlike ``unmet`` requirements."""
        return tuple(f for f in self.failed if f.id in self._applying_ids())

    @property
    def unmet(self) -> tuple[Finding, ...]:
        """The requirements the record contradicts."""
        return tuple(f for f in self.failed if f.id not in self._applying_ids())

    def _applying_ids(self) -> set[str]:
        ids = {e.node.id for e in self.exclusions if e.status is Status.MET}
        if self.rule is not None and self.rule.not_medically_necessary is not None:
            ids.add(self.rule.not_medically_necessary.id)
        return ids

    @property
    def missing_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.missing)

    @property
    def failed_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.failed)

    @property
    def unresolved_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.unresolved)

    @property
    def suggestions(self) -> tuple[Suggestion, ...]:
        found = [f.suggestion for root in self.missing + self.failed for f in root.walk() if f.suggestion]
        return tuple(dict.fromkeys(found))


def questionnaire_url(policy: Policy) -> str:
    """Canonical URL of the DTR Questionnaire generated from *policy*."""
    return f"{PROJECT_BASE}/Questionnaire/{policy.id}"


# --- evaluation ---------------------------------------------------------------------


class _Evaluator:
    def __init__(self, policy: Policy, ctx: Context):
        self.policy = policy
        self.ctx = ctx
        self.level: str | None = None  # the label of ctx.level
        self.answers = ctx.record.answers(questionnaire_url(policy))
        #: (leaf, level) -> its result: a definition referred to from several criteria is decided once
        self._leaves: dict[tuple[int, str | None], NodeResult] = {}

    def evaluate(self, node: Node) -> NodeResult:
        if isinstance(node, Leaf):
            return self._leaf(node)
        if isinstance(node, Ref):
            inner = self.evaluate(self.policy.definitions[node.ref])
            return NodeResult(node, inner.status, (inner,), level=self.level)
        if isinstance(node, PerLevel):
            return self._per_level(node)
        if isinstance(node, When):
            return self._when(node)
        children = tuple(self.evaluate(child) for child in node.children())
        statuses = [c.status for c in children]
        if isinstance(node, AllOf):
            status = _all(statuses)
        elif isinstance(node, AnyOf):
            status = _any(statuses)
        elif isinstance(node, AnyForm):
            status = Status.MET if Status.MET in statuses else (
                Status.NOT_MET if Status.NOT_MET in statuses else Status.UNDOCUMENTED)
        elif isinstance(node, Not):
            status = {Status.MET: Status.NOT_MET, Status.NOT_MET: Status.MET}.get(statuses[0], Status.UNDOCUMENTED)
        elif isinstance(node, AtLeast):
            met, open_ = statuses.count(Status.MET), statuses.count(Status.UNDOCUMENTED)
            status = Status.MET if met >= node.at_least else (
                Status.NOT_MET if met + open_ < node.at_least else Status.UNDOCUMENTED)
        else:  # pragma: no cover - the schema admits no other node types
            raise TypeError(type(node).__name__)
        return NodeResult(node, status, children, level=self.level)

    def _leaf(self, leaf: Leaf) -> NodeResult:
        key = (id(leaf), self.level)
        result = self._leaves.get(key)
        if result is None:
            result = self._leaves[key] = self._decide(leaf)
        return result

    def _decide(self, leaf: Leaf) -> NodeResult:
        outcome = EVALUATORS[type(leaf.predicate)](leaf.predicate, self.ctx)
        if outcome.status is Status.UNDOCUMENTED:
            answer = self.answers.get(leaf.id) if self.answers and leaf.asked else None
            unavailable = self.ctx.record.unavailable and \
                self.ctx.record.unavailable.intersection(deciding_resources(leaf.predicate))
            if answer is not None and isinstance(answer.value, bool):
                outcome = LeafOutcome(Status.MET if answer.value else Status.NOT_MET, (answer.reference,),
                                      None if answer.value else "answered 'no' on the documentation form")
            elif unavailable:
                outcome = replace(outcome, reason=f"{', '.join(sorted(unavailable))} could not be retrieved from the EHR")
            elif not outcome.found and leaf.absent == "not-met":
                outcome = LeafOutcome(Status.NOT_MET, reason="not on record")
        return NodeResult(leaf, outcome.status, evidence=outcome.evidence, reason=outcome.reason, level=self.level)

    def _per_level(self, node: PerLevel) -> NodeResult:
        levels = self.ctx.order.levels
        if not levels:
            return NodeResult(node, Status.UNDOCUMENTED, reason="the order does not name the spinal level(s)")
        outer, outer_label = self.ctx, self.level
        children = []
        for level in levels:
            self.ctx, self.level = replace(outer, level=level), level.label
            children.append(self.evaluate(node.per_level))
        self.ctx, self.level = outer, outer_label
        return NodeResult(node, _all([c.status for c in children]), tuple(children))

    def _when(self, node: When) -> NodeResult:
        guard = self.evaluate(node.when)
        then = self.evaluate(node.then)
        if guard.status is Status.NOT_MET:
            return NodeResult(node, Status.MET, (guard, then), level=self.level, applicable=False)
        if guard.status is Status.MET or then.status is Status.MET:
            return NodeResult(node, then.status, (guard, then), level=self.level)
        return NodeResult(node, Status.UNDOCUMENTED, (guard, then), level=self.level)


def _all(statuses: list[Status]) -> Status:
    if Status.NOT_MET in statuses:
        return Status.NOT_MET
    return Status.UNDOCUMENTED if Status.UNDOCUMENTED in statuses else Status.MET


def _any(statuses: list[Status]) -> Status:
    if Status.MET in statuses:
        return Status.MET
    return Status.UNDOCUMENTED if Status.UNDOCUMENTED in statuses else Status.NOT_MET


# --- findings -----------------------------------------------------------------------


def _finding(result: NodeResult, **overrides) -> Finding:
    node = result.node
    fields = dict(
        id=node.id or "",
        text=node.text or "",
        documentation=node.documentation,
        cite=node.cite,
        reason=result.reason,
        level=result.level,
        evidence=result.evidence,
        suggestion=_suggestion(result),
        safety=node.safety,
    )
    return Finding(**(fields | overrides))


def _suggestion(result: NodeResult) -> Suggestion | None:
    node = result.node
    if not isinstance(node, Leaf) or node.suggest is None:
        return None
    wanted = {"undocumented": {Status.UNDOCUMENTED}, "not-met": {Status.NOT_MET},
              "open": {Status.UNDOCUMENTED, Status.NOT_MET}}[node.suggest.when]
    return node.suggest if result.status in wanted else None


def _met_leaves(result: NodeResult) -> int:
    if isinstance(result.node, Leaf):
        return int(result.status is Status.MET)
    return sum(_met_leaves(c) for c in result.children)


def _summary(result: NodeResult, status: Status) -> Finding:
    """One finding standing for *result* as an alternative inside a group."""
    if result.node.text:
        inner = () if isinstance(result.node, Leaf) else tuple(_open(result, status))
        partly_met = _met_leaves(result) > 0
        return _finding(result, alternatives=inner if len(inner) > 1 or partly_met else ())
    parts = _open(result, status)
    return parts[0] if len(parts) == 1 else Finding(id=parts[0].id if parts else "", text=" and ".join(p.text for p in parts),
                                                    alternatives=tuple(parts))


def _open(result: NodeResult, status: Status) -> list[Finding]:
    """The criteria that make *result* have *status* (undocumented or not met), most specific first."""
    if result.status is not status:
        return []
    node = result.node
    if isinstance(node, Leaf):
        return [_finding(result)]
    if isinstance(node, (AllOf, Ref)):
        return [f for child in result.children for f in _open(child, status)]
    if isinstance(node, PerLevel):
        if not result.children:
            return [_finding(result)]
        return [f for child in result.children for f in _open(child, status)]
    if isinstance(node, Not):
        inner = result.children[0]
        return [_finding(result, evidence=inner.evidence, reason=inner.reason or result.reason)]
    if isinstance(node, When):
        guard, then = result.children
        if status is Status.UNDOCUMENTED and then.status is Status.NOT_MET:
            # The requirement is known to fail: whether it applies is what needs documenting.
            return [replace(f, consequence=then.node.text) for f in _open(guard, status)]
        known = guard.status is Status.MET
        return [replace(f, condition=guard.node.text, condition_met=known) for f in _open(then, status)]
    if isinstance(node, (AnyOf, AnyForm)) and status is Status.UNDOCUMENTED:
        candidates = [c for c in result.children if c.status is Status.UNDOCUMENTED]
        partial = [c for c in candidates if _met_leaves(c) > 0]
        if len(partial) == 1:
            # One partly documented alternative: say exactly what it still lacks.
            return _open(partial[0], status)
        # Several partly documented (show those, each with what it lacks), or none (show all), and
        # the alternatives the record rules out, so a clinician sees why they are not offered.
        ruled_out = tuple(_summary(c, Status.NOT_MET) for c in result.children if c.status is Status.NOT_MET)
        return [_finding(result, alternatives=tuple(_summary(c, status) for c in partial or candidates),
                         ruled_out=ruled_out)]
    # any_of not met, at_least undocumented / not met: one grouped item
    relevant = [c for c in result.children if c.status is not Status.MET]
    met = sum(1 for c in result.children if c.status is Status.MET)
    reason = f"{met} of {node.at_least} required documented" if isinstance(node, AtLeast) else result.reason
    return [_finding(result, reason=reason, alternatives=tuple(_summary(c, c.status) for c in relevant))]


def _undocumented(result: NodeResult) -> list[Finding]:
    """Missing documentation, also beside criteria that already fail (a reviewer lists both)."""
    if result.status is Status.UNDOCUMENTED:
        return _open(result, Status.UNDOCUMENTED)
    if result.status is not Status.NOT_MET:
        return []
    node = result.node
    if isinstance(node, (AllOf, Ref, PerLevel)):
        return [f for child in result.children for f in _undocumented(child)]
    if isinstance(node, When) and result.children[0].status is Status.MET:
        return _undocumented(result.children[1])
    return []


def _met(result: NodeResult) -> list[Finding]:
    """Met criteria that carry the result: alternatives that did not count are left out."""
    if not result.applicable:
        return []
    node = result.node
    if isinstance(node, Leaf):
        return [_finding(result)] if result.status is Status.MET else []
    if isinstance(node, Not):
        return [_finding(result, evidence=result.children[0].evidence)] if result.status is Status.MET else []
    children = list(result.children)
    if isinstance(node, (AnyOf, AnyForm, AtLeast)):
        if result.status is Status.MET:
            children = [c for c in children if c.status is Status.MET]
        else:
            best = max(children, key=_met_leaves)
            children = [best] if _met_leaves(best) else []
    found = [f for child in children for f in _met(child)]
    return list({(f.id, f.level): f for f in found}.values())


def _evidence(result: NodeResult) -> tuple[str, ...]:
    refs = list(result.evidence)
    for child in result.children:
        refs.extend(_evidence(child))
    return tuple(dict.fromkeys(refs))


def _exclusion_finding(result: NodeResult) -> Finding:
    reasons = [r.reason for r in _flatten(result) if r.reason and r.status is Status.MET]
    return _finding(result, evidence=_evidence(result), reason="; ".join(dict.fromkeys(reasons)) or None)


def _unresolved(exclusions: Iterable[NodeResult]) -> tuple[Finding, ...]:
    """Undocumented exclusions with something on record behind them (a leaf citing evidence it
    cannot count), one per distinct evidence: "radiculopathy, provisional" is worth confirming
    before the request goes out, while an exclusion with nothing on record is the usual case."""
    found: list[Finding] = []
    cited: set[str] = set()
    for result in exclusions:
        if result.status is not Status.UNDOCUMENTED:
            continue
        leaves = [r for r in _flatten(result) if isinstance(r.node, Leaf) and r.status is Status.UNDOCUMENTED
                  and r.evidence]
        evidence = tuple(dict.fromkeys(ref for leaf in leaves for ref in leaf.evidence))
        if not evidence or cited.issuperset(evidence):
            continue
        cited.update(evidence)
        reasons = [leaf.reason for leaf in leaves if leaf.reason]
        found.append(_finding(result, evidence=evidence, reason="; ".join(dict.fromkeys(reasons)) or None))
    return tuple(found)


def _flatten(result: NodeResult) -> Iterable[NodeResult]:
    yield result
    for child in result.children:
        yield from _flatten(child)


def evaluate_order(policy: Policy, rule: Rule, order: Order, record: PatientRecord, today: date,
                   rule_types: frozenset[str] | None = None) -> OrderEvaluation:
    """Evaluate *order* against *rule* of *policy*. Pure: no I/O, same inputs give the same answer.

    Dates are measured from the order's ``authoredOn`` (else *today*), so "duplex within
    6 months" means six months before the order was written.
    """
    as_of = order.authored_on or today
    gaps = tuple(sorted((rule_types or resource_types(policy, rule)) & record.unavailable))
    evaluator = _Evaluator(policy, Context(record, order, as_of))
    if rule.applies_when is not None and evaluator.evaluate(rule.applies_when).status is not Status.MET:
        return no_policy(order, today, record.unavailable)
    if rule.not_medically_necessary is not None:
        determination = rule.not_medically_necessary
        finding = Finding(id=determination.id, text=determination.text, cite=determination.cite)
        return OrderEvaluation(order, Outcome.NOT_MEDICALLY_NECESSARY, as_of, policy, rule, failed=(finding,),
                               evidence_gaps=gaps)
    tree = evaluator.evaluate(rule.criteria)
    exclusions = tuple(evaluator.evaluate(e) for e in rule.exclusions + policy.exclusions)
    excluded = [_exclusion_finding(e) for e in exclusions if e.status is Status.MET]
    failed = tuple(excluded) + tuple(_open(tree, Status.NOT_MET))
    missing = tuple(_undocumented(tree))
    if failed:
        outcome = Outcome.NOT_MEDICALLY_NECESSARY
    elif tree.status is Status.UNDOCUMENTED:
        outcome = Outcome.DOCUMENTATION_NEEDED
    else:
        outcome = Outcome.MEETS_CRITERIA
    return OrderEvaluation(
        order, outcome, as_of, policy, rule,
        missing=missing, failed=failed, met=tuple(_met(tree)), unresolved=_unresolved(exclusions), tree=tree,
        exclusions=exclusions, evidence_gaps=gaps,
    )


def no_policy(order: Order, today: date, unavailable: frozenset[str] = frozenset()) -> OrderEvaluation:
    """No policy applies; if the Coverage could not be retrieved, even that is not known."""
    gaps = tuple(sorted({"Coverage"} & unavailable))
    return OrderEvaluation(order, Outcome.NO_POLICY, order.authored_on or today, evidence_gaps=gaps)
