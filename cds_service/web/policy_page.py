"""Policies as HTML pages: every criterion with its citation, the link target of cards."""

from __future__ import annotations

from html import escape

from ..policy.schema import AllOf
from ..policy.schema import AnyForm
from ..policy.schema import AnyOf
from ..policy.schema import AtLeast
from ..policy.schema import Leaf
from ..policy.schema import Node
from ..policy.schema import Not
from ..policy.schema import PerLevel
from ..policy.schema import Policy
from ..policy.schema import Ref
from ..policy.schema import When

_STYLE = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.45}" \
         "blockquote{color:#555;margin:.2rem 0 .6rem 1rem}li{margin:.3rem 0}code{background:#f3f3f3}"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style><body>{body}</body></html>")


def render_policy_index(policies: tuple[Policy, ...]) -> str:
    items = "".join(f'<li><a href="policies/{escape(p.id)}">{escape(p.title)}</a> — {escape(p.provenance.publisher)}'
                    f" ({escape(p.version)})</li>" for p in policies)
    return _page("Policies", f"<h1>Policies</h1><ul>{items}</ul>")


def _label(node: Node) -> str:
    if isinstance(node, AllOf):
        return "All of the following"
    if isinstance(node, AnyOf):
        return "Any one of the following"
    if isinstance(node, AnyForm):
        return "Recorded in any of these ways"
    if isinstance(node, AtLeast):
        return f"At least {node.at_least} of the following"
    if isinstance(node, Not):
        return "Not"
    if isinstance(node, When):
        return "When the first holds, the second is required"
    if isinstance(node, PerLevel):
        return "At every spinal level on the order"
    return ""


def _tree(node: Node, policy: Policy) -> str:
    if isinstance(node, Ref):
        return _tree(policy.definitions[node.ref], policy)
    head = ""
    if node.text:
        head = f"<b>{escape(node.text)}</b>"
        if node.id:
            head += f" <code>{escape(node.id)}</code>"
    if isinstance(node, Leaf):
        head += f"<br>Documentation: {escape(node.documentation)}"
    if node.cite:
        head += f'<blockquote>“{escape(node.cite.quote)}” — {escape(node.cite.section)}</blockquote>'
    children = node.children() if not isinstance(node, Leaf) else ()
    if children:
        head += f"{escape(_label(node))}:<ul>" + "".join(f"<li>{_tree(c, policy)}</li>" for c in children) + "</ul>"
    return head


def render_policy_page(policy: Policy) -> str:
    source = policy.provenance
    meta = [f"{escape(source.publisher)}: {escape(source.document)}", f"version {escape(source.version)}"]
    if source.number:
        meta.append(escape(source.number))
    if source.effective:
        meta.append(f"effective {source.effective.isoformat()}")
    if source.url:
        meta.append(f'<a href="{escape(source.url)}">source</a>')
    body = [f"<h1>{escape(policy.title)}</h1>", f"<p>{' · '.join(meta)} · encoding {escape(policy.version)}</p>",
            f"<p>{escape(policy.summary)}</p>"]
    if policy.notes:
        body.append(f"<p><i>{escape(policy.notes)}</i></p>")
    for rule in policy.rules:
        codes = ", ".join(sorted(code for _, code in rule.codes.exact))
        body.append(f"<h2>{escape(rule.title)} ({escape(codes)})</h2>")
        if rule.not_medically_necessary:
            d = rule.not_medically_necessary
            body.append(f"<p><b>Not medically necessary:</b> {escape(d.text)}"
                        f"<blockquote>“{escape(d.cite.quote)}” — {escape(d.cite.section)}</blockquote></p>")
        if rule.applies_when is not None:
            body.append(f"<h3>Applies when</h3><ul><li>{_tree(rule.applies_when, policy)}</li></ul>")
        if rule.criteria is not None:
            body.append(f"<h3>Criteria</h3><ul><li>{_tree(rule.criteria, policy)}</li></ul>")
        exclusions = rule.exclusions + policy.exclusions
        if exclusions:
            body.append("<h3>Not medically necessary when</h3><ul>"
                        + "".join(f"<li>{_tree(e, policy)}</li>" for e in exclusions) + "</ul>")
    return _page(policy.title, "".join(body))
