"""Aggregators: combine a round's model updates into one model, within a bounded memory.

Usage (one instance per session, reused across its rounds)::

    aggregator = create_aggregator("fedavg", None, workdir)
    aggregator.start_round(global_model_path)
    aggregator.add(update_path, num_examples)   # InvalidUpdate if refused
    aggregator.finish(out_path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedplane.aggregators.base import Aggregator, InvalidUpdate
from fedplane.aggregators.fedavg import FedAvg, weighted_average_files
from fedplane.aggregators.fedopt import FedOpt
from fedplane.aggregators.robust import FedMedian, Krum, MultiKrum, TrimmedMean

_FACTORIES: dict[str, type[Aggregator]] = {
    "fedavg": FedAvg,
    "fedopt": FedOpt,
    "fedmedian": FedMedian,
    "trimmedmean": TrimmedMean,
    "krum": Krum,
    "multikrum": MultiKrum,
}

AGGREGATOR_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def create_aggregator(name: str, kwargs: dict[str, Any] | None, workdir: Path) -> Aggregator:
    """Build the aggregator ``name`` with its keyword parameters (FEDn's ``aggregator_kwargs``).

    Raises ``ValueError`` for an unknown name, unknown parameters or parameters of the wrong type.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATOR_NAMES)}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"aggregator parameters must be a dict, got {type(kwargs).__name__}")
    return factory.create(Path(workdir), kwargs)


__all__ = [
    "AGGREGATOR_NAMES",
    "Aggregator",
    "InvalidUpdate",
    "create_aggregator",
    "weighted_average_files",
]
