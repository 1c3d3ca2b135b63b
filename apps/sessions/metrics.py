"""Validation metrics: the one parser of a validation's `data`, and a session's metrics per round."""

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from apps.sessions.models import Round, Session, Validation


@dataclass(frozen=True)
class Spread:
    """One metric of one model over the clients that validated it."""

    mean: float
    low: float
    high: float
    std: float
    count: int


class _Accumulator:
    """Running count, sum, sum of squares, min and max: one pass over the validations."""

    __slots__ = ("count", "high", "low", "squares", "total")

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value
        self.low, self.high = min(self.low, value), max(self.high, value)

    def spread(self) -> Spread:
        mean = self.total / self.count
        variance = max(0.0, self.squares / self.count - mean * mean)  # rounding can dip below zero
        return Spread(mean=mean, low=self.low, high=self.high, std=math.sqrt(variance), count=self.count)


@dataclass
class SessionMetrics:
    """Validation metrics over clients, one entry per round that produced a model, in round order."""

    rounds: list[int] = field(default_factory=list)
    # Each metric's mean over the clients' validations of the round's model (None: not reported).
    series: dict[str, list[float | None]] = field(default_factory=dict)
    spreads: dict[str, list[Spread | None]] = field(default_factory=dict)
    # Per round: how many validations of its model arrived, and from how many distinct clients.
    validations_per_round: list[int] = field(default_factory=list)
    clients_per_round: list[int] = field(default_factory=list)
    validation_count: int = 0

    def per_round(self) -> dict[int, dict[str, float]]:
        table: dict[int, dict[str, float]] = {}
        for index, number in enumerate(self.rounds):
            table[number] = {
                key: values[index] for key, values in self.series.items() if values[index] is not None
            }
        return table


def metric_order(name: str) -> tuple[int, str]:
    """Accuracy first, then loss, then the rest by name: the order of charts and columns."""
    lowered = name.lower()
    rank = 0 if "acc" in lowered else 1 if "loss" in lowered else 2
    return (rank, lowered)


def numeric_metrics(data: str) -> dict[str, float]:
    """The numeric entries of a validation's JSON `data`; anything else is skipped, never raised."""
    try:
        parsed = json.loads(data) if data else {}
    except (TypeError, ValueError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    metrics = {}
    for key, value in parsed.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range
            continue
        # NaN and Infinity parse from JSON but have no place in a mean or in JSON answers.
        if math.isfinite(number):
            metrics[str(key)] = number
    return metrics


@dataclass
class _Tally:
    """Validations grouped by model: each metric's accumulator, the count, the distinct senders."""

    metrics: dict[tuple[str, str], _Accumulator] = field(default_factory=lambda: defaultdict(_Accumulator))
    validations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    clients: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, str]]) -> "_Tally":
        tally = cls()
        for model_id, sender, data in rows:
            tally.validations[model_id] += 1
            tally.clients[model_id].add(sender)
            for key, value in numeric_metrics(data).items():
                tally.metrics[(model_id, key)].add(value)
        return tally

    def names(self) -> list[str]:
        return sorted({key for _, key in self.metrics}, key=metric_order)

    def spread(self, model_id: str, key: str) -> Spread | None:
        accumulator = self.metrics.get((model_id, key))
        return accumulator.spread() if accumulator else None


def session_metrics(session: Session) -> SessionMetrics:
    """Each metric's mean and spread over the validations of each round's model, in two queries
    however many rounds and validations the session has."""
    produced_rounds = (
        Round.objects.filter(session=session).exclude(model_id__isnull=True).exclude(model_id="")
    )
    produced = list(produced_rounds.order_by("number").values_list("number", "model_id"))
    # A subquery rather than a list of ids: one statement whatever the number of rounds.
    validations = Validation.objects.filter(model_id__in=produced_rounds.values("model_id")).values_list(
        "model_id", "sender_name", "data"
    )
    tally = _Tally.of(validations.iterator(chunk_size=2000))
    result = SessionMetrics(
        rounds=[number for number, _ in produced],
        validations_per_round=[tally.validations.get(model_id, 0) for _, model_id in produced],
        clients_per_round=[len(tally.clients.get(model_id, ())) for _, model_id in produced],
        validation_count=sum(tally.validations.values()),
    )
    for key in tally.names():
        spreads = [tally.spread(model_id, key) for _, model_id in produced]
        result.spreads[key] = spreads
        result.series[key] = [spread.mean if spread else None for spread in spreads]
    return result


@dataclass(frozen=True)
class ModelMetrics:
    """Where a global model was made and how the clients' validations of it came out."""

    session_id: str | None = None
    round_number: int | None = None
    spreads: dict[str, Spread] = field(default_factory=dict)
    clients: int = 0
    validations: int = 0


def models_metrics(model_ids: Sequence[str]) -> dict[str, ModelMetrics]:
    """For each model id (the uuid as text): its round and session, and its metrics' spreads over
    the clients' validations; two queries for the whole list."""
    made_in = {
        model_id: (session_id, number)
        for model_id, number, session_id in Round.objects.filter(model_id__in=model_ids).values_list(
            "model_id", "number", "session__session_id"
        )
    }
    tally = _Tally.of(
        Validation.objects.filter(model_id__in=model_ids).values_list("model_id", "sender_name", "data")
    )
    names = tally.names()
    result = {}
    for model_id in model_ids:
        session_id, number = made_in.get(model_id, (None, None))
        spreads = {key: spread for key in names if (spread := tally.spread(model_id, key)) is not None}
        result[model_id] = ModelMetrics(
            session_id=session_id,
            round_number=number,
            spreads=spreads,
            clients=len(tally.clients.get(model_id, ())),
            validations=tally.validations.get(model_id, 0),
        )
    return result
