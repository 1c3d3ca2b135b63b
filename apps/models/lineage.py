"""A model's lineage for its admin page: ancestors and descendants read with one recursive query
each, drawn as server-side SVG with every node linked to its model's page.

Where a model was made (session, round) and how it validated are facts of the sessions app, which
sits above this one: it registers a source of them with `register_facts_source`, so this module
draws what it is told and imports nothing above itself.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from apps.models.models import Model
from controlplane.admin_widgets import change_url

# Bounds of the picture: a long session's page still draws in a fixed number of queries and rows.
ANCESTOR_LIMIT = 20
DESCENDANT_DEPTH = 20
DESCENDANT_LIMIT = 40

NODE_W, NODE_H = 250, 52
COLUMN_PITCH, ROW_PITCH = NODE_W + 24, NODE_H + 18
MARGIN = 12
NOTE_H = 18
CHAR_WIDTH = 6.2


@dataclass(frozen=True)
class NodeFacts:
    """What the layers above know of one model, as the lineage labels it."""

    origin: str  # e.g. "digits-run · round 3"
    metric: str = ""  # e.g. "test_accuracy 0.934 (3 clients)"; empty when not validated
    detail: str = ""  # every metric, for the node's tooltip


FactsSource = Callable[[Sequence[str]], Mapping[str, NodeFacts]]
_facts_sources: list[FactsSource] = []


def register_facts_source(source: FactsSource) -> None:
    """Add a source of facts by model id (str of the uuid); registering twice is harmless."""
    if source not in _facts_sources:
        _facts_sources.append(source)


def lineage_facts(model_ids: Sequence[str]) -> dict[str, NodeFacts]:
    facts: dict[str, NodeFacts] = {}
    for source in _facts_sources:
        facts.update(source(model_ids))
    return facts


@dataclass
class LineageNode:
    model: Model
    relation: str  # "ancestor", "parent", "current", "child" or "descendant"
    row: int = 0
    column: int = 0
    children: list["LineageNode"] = field(default_factory=list)


@dataclass
class Lineage:
    current: Model
    ancestors: list[Model]  # parent first
    descendants: list[Model]  # by generation, then commit order; a parent before its children
    more_ancestors: bool = False
    more_descendants: bool = False


def _table() -> tuple[str, str, str, str]:
    meta = Model._meta
    return (
        meta.db_table,
        meta.pk.column,
        meta.get_field("model_id").column,
        meta.get_field("parent").column,
    )


def _ancestors(model: Model, limit: int) -> list[Model]:
    """Up to `limit` ancestors, parent first, in one recursive query."""
    table, pk, model_id, parent = _table()
    sql = f"""
        WITH RECURSIVE chain(ancestor_ref, depth) AS (
            SELECT {parent}, 1 FROM {table} WHERE {pk} = %s
            UNION ALL
            SELECT m.{parent}, chain.depth + 1 FROM {table} m JOIN chain ON m.{model_id} = chain.ancestor_ref
            WHERE chain.depth < %s
        )
        SELECT m.*, chain.depth AS lineage_depth FROM {table} m
        JOIN chain ON m.{model_id} = chain.ancestor_ref
        ORDER BY chain.depth
    """
    return list(Model.objects.raw(sql, [model.pk, limit]))


def _descendants(model: Model, depth: int, limit: int) -> list[Model]:
    """Up to `limit` descendants within `depth` generations, by generation, in one recursive query."""
    table, pk, model_id, parent = _table()
    sql = f"""
        WITH RECURSIVE tree(node_ref, depth) AS (
            SELECT {model_id}, 0 FROM {table} WHERE {pk} = %s
            UNION ALL
            SELECT m.{model_id}, tree.depth + 1 FROM {table} m JOIN tree ON m.{parent} = tree.node_ref
            WHERE tree.depth < %s
        )
        SELECT m.*, tree.depth AS lineage_depth FROM {table} m
        JOIN tree ON m.{model_id} = tree.node_ref
        WHERE tree.depth > 0
        ORDER BY tree.depth, m.committed_at, m.{pk}
        LIMIT %s
    """
    return list(Model.objects.raw(sql, [model.pk, depth, limit]))


def model_lineage(
    model: Model,
    *,
    ancestor_limit: int = ANCESTOR_LIMIT,
    descendant_depth: int = DESCENDANT_DEPTH,
    descendant_limit: int = DESCENDANT_LIMIT,
) -> Lineage:
    """The model's ancestors and descendants within the bounds, in two queries; one row past each
    bound is read to say whether more exist."""
    ancestors = _ancestors(model, ancestor_limit + 1)
    descendants = _descendants(model, descendant_depth + 1, descendant_limit + 1)
    deepest = [m for m in descendants if getattr(m, "lineage_depth", 0) > descendant_depth]
    kept = [m for m in descendants if getattr(m, "lineage_depth", 0) <= descendant_depth][:descendant_limit]
    return Lineage(
        current=model,
        ancestors=ancestors[:ancestor_limit],
        descendants=kept,
        more_ancestors=len(ancestors) > ancestor_limit,
        more_descendants=bool(deepest) or len(kept) < len(descendants) - len(deepest),
    )


def _layout(lineage: Lineage) -> list[LineageNode]:
    """Oldest ancestor at the top, one generation per row; the current model's line of descent
    stays in the first column and each further child opens a column to the right."""
    nodes: list[LineageNode] = []
    for row, ancestor in enumerate(reversed(lineage.ancestors)):
        relation = "parent" if row == len(lineage.ancestors) - 1 else "ancestor"
        nodes.append(LineageNode(ancestor, relation, row=row))
    current = LineageNode(lineage.current, "current", row=len(lineage.ancestors))
    nodes.append(current)
    by_id = {lineage.current.model_id: current}
    for model in lineage.descendants:
        parent = by_id.get(model.parent_id)
        if parent is None:  # its parent fell past a bound
            continue
        node = LineageNode(model, "child" if parent is current else "descendant", row=parent.row + 1)
        parent.children.append(node)
        by_id[model.model_id] = node
        nodes.append(node)
    next_column = 1

    def place(node: LineageNode, column: int) -> None:
        nonlocal next_column
        node.column = column
        for index, child in enumerate(node.children):
            if index == 0:
                place(child, column)
            else:
                place(child, next_column)
                next_column += 1

    place(current, 0)
    return nodes


def _fit(text: str, width: float) -> str:
    """Cut text to what fits `width` pixels of the 11px chart font."""
    room = int(width / CHAR_WIDTH)
    return text if len(text) <= room else f"{text[: room - 1]}…"


def lineage_svg(lineage: Lineage, facts: Mapping[str, NodeFacts] | None = None) -> SafeString:
    """The lineage as one SVG: a linked box per model, edges from parent to child, the current
    model highlighted; notes say when older or newer models lie past the bounds."""
    if facts is None:
        facts = lineage_facts(
            [str(m.model_id) for m in [*lineage.ancestors, lineage.current, *lineage.descendants]]
        )
    nodes = _layout(lineage)
    top = MARGIN + (NOTE_H if lineage.more_ancestors else 0)

    def x_of(node: LineageNode) -> int:
        return MARGIN + node.column * COLUMN_PITCH

    def y_of(node: LineageNode) -> int:
        return top + node.row * ROW_PITCH

    by_id = {node.model.model_id: node for node in nodes}
    parts: list[str] = []
    for node in nodes:
        parent = by_id.get(node.model.parent_id) if node.model.parent_id else None
        if parent is None or node.row != parent.row + 1:
            continue
        x1, y1 = x_of(parent) + 20, y_of(parent) + NODE_H
        x2, y2 = x_of(node) + 20, y_of(node)
        parts.append(
            format_html(
                '<path class="fp-lineage-edge" d="M{} {} V{} H{} V{}"/>', x1, y1, (y1 + y2) // 2, x2, y2
            )
        )
    for node in nodes:
        parts.append(_node_svg(node, x_of(node), y_of(node), facts.get(str(node.model.model_id))))
    columns = 1 + max(node.column for node in nodes)
    rows = 1 + max(node.row for node in nodes)
    width = 2 * MARGIN + (columns - 1) * COLUMN_PITCH + NODE_W
    height = top + (rows - 1) * ROW_PITCH + NODE_H + MARGIN + (NOTE_H if lineage.more_descendants else 0)
    if lineage.more_ancestors:
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="fp-lineage-more">… older ancestors not shown</text>',
                MARGIN,
                MARGIN + 4,
            )
        )
    if lineage.more_descendants:
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="fp-lineage-more">… more descendants not shown</text>',
                MARGIN,
                height - MARGIN + 2,
            )
        )
    return format_html(
        '<svg class="fp-lineage" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
        "<title>Lineage of model {id}</title>{body}</svg>",
        w=width,
        h=height,
        id=lineage.current.model_id,
        body=mark_safe("".join(parts)),  # each part was built by format_html
    )


def _node_svg(node: LineageNode, x: int, y: int, facts: NodeFacts | None) -> SafeString:
    model = node.model
    heading = str(model.model_id)[:8] + (" · active" if model.active else "")
    if node.relation == "current":
        heading += " · this model"
    origin = facts.origin if facts else (model.session_id or "seed model (no session)")
    metric = facts.metric if facts and facts.metric else "no validations"
    tooltip = f"{model.model_id}\n{origin}" + (f"\n{facts.detail}" if facts and facts.detail else "")
    room = NODE_W - 16
    return format_html(
        '<a href="{href}" class="fp-lineage-node fp-lineage-{relation}" data-relation="{relation}" '
        'data-model-id="{model_id}"{current}><title>{tooltip}</title>'
        '<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5"/>'
        '<text x="{tx}" y="{y1}" class="fp-lineage-id">{heading}</text>'
        '<text x="{tx}" y="{y2}">{origin}</text>'
        '<text x="{tx}" y="{y3}" class="fp-lineage-metric">{metric}</text></a>',
        href=change_url(model),
        relation=node.relation,
        model_id=model.model_id,
        current=mark_safe(' aria-current="page"') if node.relation == "current" else "",
        tooltip=tooltip,
        x=x,
        y=y,
        w=NODE_W,
        h=NODE_H,
        tx=x + 8,
        y1=y + 15,
        y2=y + 30,
        y3=y + 45,
        heading=_fit(heading, room),
        origin=_fit(origin, room),
        metric=_fit(metric, room),
    )
