"""Central differential privacy on the combiner: the aggregator a DP session gets, and what a
round's report says of the noise it added.

The session's ``dp`` settings come in the round config (``RoundConfig.dp``); the aggregation is
DP-FedAvg (:class:`fedplane.aggregators.dpfedavg.DpFedAvg`), kept for the session like any other
aggregator so that adaptive clipping carries its clip norm from round to round. The privacy spent
is booked by the controller, which knows every round of the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from combiner_node.roundconfig import RoundConfig
from fedplane.aggregators.dpfedavg import DpFedAvg

# The key of a round report's `data` that holds what the round's release was made of.
REPORT_KEY = "dp"


def aggregator_key(config: RoundConfig) -> str:
    """What, beyond the session and aggregator, makes a session's aggregator: its dp settings."""
    return repr(config.dp)


def dp_aggregator(config: RoundConfig, workdir: Path) -> DpFedAvg | None:
    """The DP-FedAvg aggregator of a session with ``dp`` settings; None for a session without."""
    if config.dp is None:
        return None
    if config.aggregator != "fedavg" or config.aggregator_kwargs:
        raise ValueError("differential privacy runs with fedavg and no aggregator_kwargs")
    return DpFedAvg(workdir, config.dp)


def report_data(aggregator: Any) -> dict[str, Any]:
    """``{"dp": {clip_norm, noise_std, ...}}`` for a report of a DP round, else nothing."""
    release = getattr(aggregator, "last_release", None) if isinstance(aggregator, DpFedAvg) else None
    return {REPORT_KEY: dict(release)} if release else {}
