"""Validation metrics: the one parser of a validation's `data`, and a session's metrics per round."""

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

from apps.sessions.models import Round, Session, Validation


@dataclass
class SessionMetrics:
    """Validation metrics averaged over clients, one point per round that produced a model."""

    rounds: list[int] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    validation_count: int = 0

    def per_round(self) -> dict[int, dict[str, float]]:
        table: dict[int, dict[str, float]] = {}
        for index, number in enumerate(self.rounds):
            table[number] = {
                key: values[index] for key, values in self.series.items() if values[index] is not None
            }
        return table


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


def session_metrics(session: Session) -> SessionMetrics:
    """Each metric averaged over the validations of each round's model, in round order."""
    produced = list(
        Round.objects.filter(session=session)
        .exclude(model_id__isnull=True)
        .exclude(model_id="")
        .order_by("number")
        .values_list("number", "model_id")
    )
    round_of_model = {model_id: number for number, model_id in produced}
    sums: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    result = SessionMetrics(rounds=[number for number, _ in produced])
    validations = Validation.objects.filter(model_id__in=list(round_of_model)).values_list("model_id", "data")
    for model_id, data in validations.iterator(chunk_size=2000):
        result.validation_count += 1
        for key, value in numeric_metrics(data).items():
            sums[(model_id, key)] += value
            counts[(model_id, key)] += 1
    keys = sorted({key for _, key in sums})
    for key in keys:
        result.series[key] = [
            sums[(model_id, key)] / counts[(model_id, key)] if counts[(model_id, key)] else None
            for _, model_id in produced
        ]
    return result
