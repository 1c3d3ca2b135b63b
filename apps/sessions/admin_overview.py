"""What the session page shows above its fields: progress, a chart per validation metric (mean and
min-max over clients, per round), round durations, the rounds table; and what the model page's
lineage says of each model (its session, round and metrics).

Apart from admin.py to keep that module to its ModelAdmins. Every query here is one statement for
the whole session, however many rounds, statuses and validations it holds.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from django.db.models import Count, Sum
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from apps.models.lineage import NodeFacts
from apps.sessions.admin_display import ROUND_TONES, SESSION_TONES, counted, model_link, round_took
from apps.sessions.metrics import ModelMetrics, SessionMetrics, Spread, models_metrics, session_metrics
from apps.sessions.models import Round, Session, Status, Validation
from apps.sessions.privacy import ROUND_KEY, session_dp, session_privacy
from controlplane.admin_charts import bar_chart, line_chart
from controlplane.admin_widgets import (
    change_url,
    changelist_url,
    choice_badge,
    join_links,
    link,
    progress_bar,
)

# Metric columns in the rounds table; the charts show every metric.
MAX_METRIC_COLUMNS = 4
BAND_LABEL = "min\u2013max over clients"
MEAN_LABEL = "mean over clients"


def session_overview(session: Session) -> dict[str, Any]:
    """The session page's context: badges, related links, charts and the rounds table."""
    metrics = session_metrics(session)
    metric_names = list(metrics.series)[:MAX_METRIC_COLUMNS]
    by_round = metrics.per_round()
    rounds = list(
        Round.objects.filter(session=session)
        .annotate(report_count=Count("reports"), examples=Sum("reports__num_examples"))
        .order_by("number")
    )
    rows = []
    for item in rounds:
        values = by_round.get(item.number, {})
        rows.append(
            {
                "link": link(change_url(item), item.round_id),
                "badge": choice_badge(item.status, ROUND_TONES),
                "model": model_link(item.model_id),
                "reports": item.report_count,
                "examples": item.examples or 0,
                "metrics": [f"{values[name]:.4f}" if name in values else "-" for name in metric_names],
                "started_at": item.started_at,
                "took": round_took(item),
            }
        )
    # Every chart spans all the session's rounds, so they line up round for round.
    span = (rounds[0].number, rounds[-1].number) if rounds else None
    filtered = {"session_id": session.session_id}
    events = Status.objects.filter(**filtered).count()
    validations = Validation.objects.filter(**filtered).count()
    related = join_links(
        [
            (changelist_url(Round, **filtered), counted(len(rows), "round")),
            (changelist_url(Status, **filtered), counted(events, "event")),
            (changelist_url(Validation, **filtered), counted(validations, "validation")),
            (reverse("admin:mlmodels_model_changelist") + "?" + urlencode(filtered), "models"),
        ]
    )
    return {
        "fp_status_badge": choice_badge(session.status, SESSION_TONES),
        "fp_progress": progress_bar(session.rounds_completed, session.rounds),
        "fp_related_links": related,
        "fp_charts": [*metric_panels(metrics, span), duration_panel(rounds, span)],
        "fp_validation_coverage": validation_coverage(metrics),
        "fp_metric_names": metric_names,
        "fp_rounds": rows,
    }


def spread_chart(
    name: str, rounds: list[int], spreads: Sequence[Spread | None], **options: Any
) -> SafeString:
    """One metric per round: the mean over the clients' validations of each round's model, with
    the band from the lowest to the highest client. `options` go to line_chart."""
    return line_chart(
        name,
        rounds,
        {MEAN_LABEL: [spread.mean if spread else None for spread in spreads]},
        bands={MEAN_LABEL: [(spread.low, spread.high) if spread else None for spread in spreads]},
        band_label=BAND_LABEL,
        y_label=name,
        **options,
    )


def metric_panels(metrics: SessionMetrics, span: tuple[int, int] | None = None) -> list[SafeString]:
    """One chart per metric (spread_chart), each with every point's spread to hover."""
    if not metrics.spreads:
        return [line_chart("Validation metrics", metrics.rounds, {})]
    return [
        spread_chart(
            name,
            metrics.rounds,
            spreads,
            notes={MEAN_LABEL: [spread_note(spread) for spread in spreads]},
            round_range=span,
        )
        for name, spreads in metrics.spreads.items()
    ]


def spread_note(spread: Spread | None) -> str:
    if spread is None:
        return ""
    return (
        f"min {spread.low:.4g}, max {spread.high:.4g}, sd {spread.std:.2g}, "
        f"{counted(spread.count, 'validation')}"
    )


def duration_panel(rounds: Sequence[Round], span: tuple[int, int] | None = None) -> SafeString:
    """A bar per round that has ended: seconds from its first start to its commit (or failure)."""
    timed = [(item.number, item.duration.total_seconds()) for item in rounds if item.duration is not None]
    return bar_chart(
        "Round duration",
        [number for number, _ in timed],
        [seconds for _, seconds in timed],
        unit="s",
        y_label="seconds",
        legend="from start to commit, failure or stop",
        round_range=span,
        empty="no round has ended yet",
    )


def validation_coverage(metrics: SessionMetrics) -> str:
    """Who validated each round's model, counted from the rows: '3 clients validated each round
    (15 validations)', with a range when rounds differ and a note for rounds not validated."""
    if not metrics.validation_count:
        return ""
    validated = [
        (clients, count)
        for clients, count in zip(metrics.clients_per_round, metrics.validations_per_round, strict=True)
        if count
    ]
    fewest, most = min(c for c, _ in validated), max(c for c, _ in validated)
    clients = (
        f"{most} client{'s' if most != 1 else ''}" if fewest == most else f"{fewest}\u2013{most} clients"
    )
    text = f"{clients} validated each round's model ({counted(metrics.validation_count, 'validation')}"
    if len(validated) < len(metrics.rounds):
        text += f", {len(validated)} of {len(metrics.rounds)} rounds validated"
    return text + ")"


def lineage_facts(model_ids: Sequence[str]) -> Mapping[str, NodeFacts]:
    """The model page's lineage labels: the session and round that made each model, and its main
    metric (accuracy first) averaged over the clients that validated it."""
    facts = {model_id: node_facts(item) for model_id, item in models_metrics(model_ids).items()}
    # A model of a session with differential privacy carries the ε spent up to its round.
    spent = Round.objects.filter(model_id__in=list(model_ids), round_data__has_key=ROUND_KEY).values_list(
        "model_id", "round_data"
    )
    for model_id, round_data in spent:
        if model_id in facts:
            epsilon = _epsilon_text(round_data[ROUND_KEY].get("epsilon"))
            item = facts[model_id]
            facts[model_id] = NodeFacts(
                origin=f"{item.origin} · ε {epsilon}", metric=item.metric, detail=item.detail
            )
    return facts


def node_facts(facts: ModelMetrics) -> NodeFacts:
    if facts.round_number is not None:
        origin = f"{facts.session_id or 'no session'} · round {facts.round_number}"
    else:
        origin = facts.session_id or "seed model (no session)"
    if not facts.spreads:
        return NodeFacts(origin=origin)
    name, spread = next(iter(facts.spreads.items()))  # spreads come in metric_order: accuracy first
    metric = f"{name} {spread.mean:.4f} ({counted(facts.clients, 'client')})"
    detail = "\n".join(
        f"{key}: mean {value.mean:.4g}, min {value.low:.4g}, max {value.high:.4g}"
        for key, value in facts.spreads.items()
    )
    return NodeFacts(origin=origin, metric=metric, detail=detail)


def privacy_summary(session: Session) -> SafeString | str:
    """ε spent at δ, the settings, and ε round by round, for a session with differential privacy."""
    config = session_dp(session)
    if config is None:
        return "none"
    spent = session_privacy(session) or {}
    epsilon = spent.get("epsilon")
    target = f" of target ε = {config.target_epsilon:g}" if config.target_epsilon is not None else ""
    clipping = (
        f"adaptive clipping to quantile {config.target_quantile:g} from C = {config.clip_norm:g}"
        if config.adaptive
        else f"clip norm C = {config.clip_norm:g}"
    )
    rows = [
        (
            item.round_id,
            _epsilon_text(item.round_data[ROUND_KEY].get("epsilon")),
            _number_text(item.round_data[ROUND_KEY].get("clip_norm")),
        )
        for item in session.round_set.filter(round_data__has_key=ROUND_KEY).order_by("number")
    ]
    table = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows) if rows else ""
    return format_html(
        "<p><strong>ε = {}</strong> at δ = {}{} after {} round(s); noise multiplier {}, {}, "
        "sampling rate {}.</p>{}",
        _epsilon_text(epsilon),
        f"{config.delta:g}",
        target,
        spent.get("rounds", 0),
        f"{config.noise_multiplier:.4g}",
        clipping,
        f"{config.sampling_rate or 1.0:g}",
        format_html(
            '<table class="fp-privacy"><thead><tr><th>round</th><th>ε spent</th><th>clip norm</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            table,
        )
        if rows
        else "",
    )


def _epsilon_text(value: Any) -> str:
    return "∞" if value is None else f"{value:.4g}"


def _number_text(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.4g}"
