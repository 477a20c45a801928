"""Load and validate the policy directory (``cards/``); every error names file and line.

Layout of a policy directory::

    payers.yaml                 payer identities and settings (see crd.payers)
    policies/<policy>.yaml      one file per payer policy (schema.Policy)
    cases/<policy>/<case>.yaml  golden cases for the policy (tests only)

Validation happens once at start-up; the request path only sees compiled,
immutable :class:`PolicySet` objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Iterator

import yaml
from pydantic import ValidationError

from .schema import AllOf
from .schema import AnyForm
from .schema import AnyOf
from .schema import AtLeast
from .schema import Leaf
from .schema import Node
from .schema import Not
from .schema import PerLevel
from .schema import Policy
from .schema import Ref
from .schema import Rule
from .schema import When
from .schema import predicate_resources

Path_ = tuple[Any, ...]


class PolicyError(Exception):
    """A policy directory that cannot be loaded; ``problems`` lists ``file:line: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""


def load_yaml(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML, returning the data and a map from data path to 1-based line."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise PolicyError([f"{filename}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    lines: dict[Path_, int] = {}
    if node is None:
        return None, lines
    constructor = _LineLoader(text)

    def build(n: yaml.Node, path: Path_) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                out[key] = build(value_node, path + (key,))
                lines[path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    return build(node, ()), lines


def line_of(data: Any, lines: dict[Path_, int], loc: tuple[Any, ...], key: str | None = None) -> int:
    """Best line for a pydantic error location (which may contain union tags).

    Locations skip the predicate key of a leaf (``condition:``), so a part missing at
    one level is looked for one mapping down; *key* names an offending field to point at.
    """
    current, path = data, ()
    best = lines.get((), 1)
    for part in loc:
        if isinstance(current, dict) and part in current:
            current, path = current[part], path + (part,)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current, path = current[part], path + (part,)
        elif isinstance(current, dict) and (inner := next(
                (k for k, v in current.items() if isinstance(v, dict) and part in v), None)) is not None:
            current, path = current[inner][part], path + (inner, part)
        else:
            continue  # a discriminator tag, not a data key
        best = lines.get(path, best)
    if key is not None and isinstance(current, dict) and key in current:
        best = lines.get(path + (key,), best)
    return best


def validation_problems(exc: ValidationError, data: Any, lines: dict[Path_, int], filename: str) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in _TAG_NAMES))
        message = error["msg"].removeprefix("Value error, ")
        named = re.search(r"field '([^']+)'", message)
        line = line_of(data, lines, loc, named.group(1) if named else None)
        problems.append(f"{filename}:{line}: {where}: {message}")
    return problems


_TAG_NAMES = {"all_of", "any_of", "any_form", "not", "at_least", "when", "per_level", "ref", "leaf"}


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path


def walk(node: Node, policy: Policy, seen: frozenset[str] = frozenset()) -> Iterator[Node]:
    """Yield *node* and its descendants, following ``ref`` into the policy's definitions."""
    yield node
    if isinstance(node, Ref):
        if node.ref in seen:
            return
        target = policy.definitions.get(node.ref)
        if target is not None:
            yield from walk(target, policy, seen | {node.ref})
        return
    for child in node.children():
        yield from walk(child, policy, seen)


def rule_roots(policy: Policy, rule: Rule) -> list[Node]:
    """Every criterion root that applies to *rule*: its criteria and all exclusions."""
    roots: list[Node] = [rule.applies_when] if rule.applies_when is not None else []
    if rule.criteria is not None:
        roots.append(rule.criteria)
    roots.extend(rule.exclusions)
    roots.extend(policy.exclusions)
    return roots


def resource_types(policy: Policy, rule: Rule) -> frozenset[str]:
    """FHIR resource types the rule's predicates read, plus the Coverage that names the payer."""
    types: set[str] = {"Patient", "Coverage", "QuestionnaireResponse"}
    for root in rule_roots(policy, rule):
        for node in walk(root, policy):
            if isinstance(node, Leaf):
                types.update(predicate_resources(node.predicate))
    return frozenset(types)


def _check_structure(policy: Policy, data: Any, lines: dict[Path_, int], filename: str) -> list[str]:
    """Cross-checks pydantic cannot express: unique ids, known refs, no cycles, level use."""
    problems: list[str] = []

    def at(path: Path_) -> int:
        return lines.get(path, 1)

    ids: dict[str, str] = {}
    roots: list[tuple[Path_, Node]] = [(("definitions", k), v) for k, v in policy.definitions.items()]
    roots += [(("exclusions", i), n) for i, n in enumerate(policy.exclusions)]
    for r, rule in enumerate(policy.rules):
        if rule.criteria is not None:
            roots.append((("rules", r, "criteria"), rule.criteria))
        if rule.applies_when is not None:
            roots.append((("rules", r, "applies_when"), rule.applies_when))
        roots += [(("rules", r, "exclusions", i), n) for i, n in enumerate(rule.exclusions)]
        if rule.not_medically_necessary is not None:
            ids.setdefault(rule.not_medically_necessary.id, f"rules.{r}")

    for path, root in roots:
        for node, node_path, inside_level in _walk_paths(root, path, False):
            if node.id is not None:
                if node.id in ids:
                    problems.append(f"{filename}:{at(node_path)}: duplicate criterion id '{node.id}'")
                ids[node.id] = ".".join(map(str, node_path))
            if isinstance(node, Ref) and node.ref not in policy.definitions:
                problems.append(f"{filename}:{at(node_path)}: ref '{node.ref}' is not in definitions")
            if isinstance(node, Leaf) and node.at_level and not inside_level and path[0] != "definitions":
                problems.append(f"{filename}:{at(node_path)}: '{node.id}' uses at_level outside a per_level block")
    for path, root in roots:
        if path[0] in ("exclusions",) or (len(path) > 2 and path[2] == "exclusions"):
            if root.id is None or root.text is None:
                problems.append(f"{filename}:{at(path)}: every exclusion needs an id and a text")
    for name in policy.definitions:
        try:
            _assert_acyclic(policy, name, ())
        except ValueError as exc:
            problems.append(f"{filename}:{at(('definitions', name))}: {exc}")
    return problems


def _walk_paths(node: Node, path: Path_, inside_level: bool) -> Iterator[tuple[Node, Path_, bool]]:
    yield node, path, inside_level
    if isinstance(node, PerLevel):
        yield from _walk_paths(node.per_level, path + ("per_level",), True)
        return
    if isinstance(node, (AllOf, AnyOf, AnyForm, AtLeast)):
        name = {AllOf: "all_of", AnyOf: "any_of", AnyForm: "any_form", AtLeast: "of"}[type(node)]
        for i, child in enumerate(node.children()):
            yield from _walk_paths(child, path + (name, i), inside_level)
    elif isinstance(node, Not):
        yield from _walk_paths(node.not_, path + ("not",), inside_level)
    elif isinstance(node, When):
        yield from _walk_paths(node.when, path + ("when",), inside_level)
        yield from _walk_paths(node.then, path + ("then",), inside_level)


def _assert_acyclic(policy: Policy, name: str, stack: tuple[str, ...]) -> None:
    if name in stack:
        raise ValueError(f"definition cycle: {' -> '.join(stack + (name,))}")
    for node in walk(policy.definitions[name], policy, frozenset({name})):
        if isinstance(node, Ref) and node.ref in policy.definitions:
            _assert_acyclic(policy, node.ref, stack + (name,))


def load_policy_file(path: Path) -> LoadedPolicy:
    """Load one policy file; raise PolicyError listing every problem with its line."""
    filename = str(path)
    data, lines = load_yaml(path.read_text(encoding="utf-8"), filename)
    if not isinstance(data, dict):
        raise PolicyError([f"{filename}:1: a policy file must be a mapping"])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, data, lines, filename)) from None
    problems = _check_structure(policy, data, lines, filename)
    if path.stem != policy.id:
        problems.append(f"{filename}:{lines.get(('id',), 1)}: policy id '{policy.id}' must match the file name")
    if problems:
        raise PolicyError(problems)
    return LoadedPolicy(policy, path)


def load_policies(directory: Path) -> list[LoadedPolicy]:
    """Load every ``policies/*.yaml`` in *directory*, collecting all problems before raising."""
    policy_dir = directory / "policies"
    if not policy_dir.is_dir():
        raise PolicyError([f"{policy_dir}: no policies directory"])
    loaded, problems = [], []
    for path in sorted(policy_dir.glob("*.yaml")):
        try:
            loaded.append(load_policy_file(path))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PolicyError(problems)
    if not loaded:
        raise PolicyError([f"{policy_dir}: no policy files (*.yaml)"])
    return loaded
