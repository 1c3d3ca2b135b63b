"""Central differential privacy of a session, on the controller: its settings and its books.

A session asks for it with ``session_config.dp`` (a fedplane extension)::

    "dp": {"noise_multiplier": 1.1, "clip_norm": 1.0, "delta": 1e-5, "target_epsilon": 3.0}

Keys (see ``fedplane.privacy.DpConfig``): ``clip_norm`` C (the starting C with adaptive clipping),
``noise_multiplier`` z (left out with ``target_epsilon``: the smallest z that keeps the session's
rounds within it), ``delta`` δ (1e-5), ``target_epsilon`` (the session stops before a round would
exceed it), ``sampling_rate`` q (1: every client may take part in every round; set it only if
clients are sampled with that probability), ``expected_clients`` m (the denominator of the mean;
the session's ``clients_requested``, or K in an asynchronous session, where each model version is
a release), and adaptive clipping: ``target_quantile``, ``clip_learning_rate``, ``count_noise_std``. The combiners clip, add the noise and divide; the
controller books each release and stores ε at δ with the round (``round_data.privacy``).

Each combiner aggregates its own clients, so the combiners' releases of one round compose in
parallel: one round costs one release, whatever the number of combiners. A retried attempt whose
combiners released a model costs one more.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from apps.sessions.models import CombinerReport, Round, Session
from fedplane.privacy import DpConfig
from fedplane.privacy.accounting import epsilon_after, noise_multiplier_for
from fedplane.roundreport import ReportStatus

DP_KEY = "dp"
# The key of a round's round_data (and of a combiner report's data) with its privacy facts.
ROUND_KEY = "privacy"
DEFAULT_SAMPLING_RATE = 1.0
# Reproducible noise is no privacy: the seed is for tests of the mechanism, not for sessions.
REFUSED_KEYS = ("seed",)
ALLOWED_KEYS = tuple(f.name for f in dataclasses.fields(DpConfig) if f.name not in REFUSED_KEYS)


class DpConfigError(ValueError):
    """``session_config.dp`` is not a setting a session can run with; the message says why."""


def dp_config_clean(
    value: Any,
    *,
    rounds: int,
    clients_requested: int,
    aggregator: str,
    aggregator_kwargs: Any,
) -> dict[str, Any]:
    """The ``dp`` settings as the session keeps them: checked, defaults filled, z calibrated."""
    if not isinstance(value, dict):
        raise DpConfigError("session_config.dp must be an object")
    refused = sorted(set(value) & set(REFUSED_KEYS))
    if refused:
        raise DpConfigError(
            f"session_config.dp.{refused[0]} is not accepted: reproducible noise is no privacy"
        )
    unknown = sorted(set(value) - set(ALLOWED_KEYS))
    if unknown:
        raise DpConfigError(
            f"session_config.dp: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(ALLOWED_KEYS)})"
        )
    if aggregator != "fedavg" or aggregator_kwargs:
        raise DpConfigError("session_config.dp needs aggregator fedavg without aggregator_kwargs")
    params = {key: item for key, item in value.items() if item is not None}
    params.setdefault("sampling_rate", DEFAULT_SAMPLING_RATE)
    params.setdefault("expected_clients", clients_requested)
    if "clip_norm" not in params:
        raise DpConfigError(
            "session_config.dp needs clip_norm (the starting clip norm with adaptive clipping)"
        )
    try:
        if "noise_multiplier" not in params:
            if "target_epsilon" not in params:
                raise DpConfigError(
                    "session_config.dp needs noise_multiplier, or target_epsilon to derive it"
                )
            # Check the other values first, so that the calibration gets numbers it can use.
            DpConfig(**{**params, "noise_multiplier": 1.0, "target_quantile": None, "count_noise_std": None})
            params["noise_multiplier"] = noise_multiplier_for(
                params["target_epsilon"],
                delta=params.get("delta", DpConfig.delta),
                sampling_rate=params["sampling_rate"],
                rounds=rounds,
            )
        config = DpConfig(**params)
    except DpConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise DpConfigError(f"session_config.dp: {exc}") from exc
    if not config.noise_multiplier > 0:
        raise DpConfigError(
            "session_config.dp.noise_multiplier must be > 0: without noise there is no privacy"
        )
    if config.target_epsilon is not None:
        first = _epsilon(config, 1)
        if first > config.target_epsilon:
            raise DpConfigError(
                f"session_config.dp.target_epsilon={config.target_epsilon:g} is below the ε of a single "
                f"round ({first:.4g} at δ={config.delta:g}); raise noise_multiplier or the target"
            )
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(DpConfig)
        if f.name not in REFUSED_KEYS and getattr(config, f.name) is not None
    }


def session_dp(session: Session) -> DpConfig | None:
    """The session's privacy settings, or None for a session without."""
    params = (session.extra_config or {}).get(DP_KEY)
    if not params:
        return None
    return DpConfig.from_params(params)


def _epsilon(config: DpConfig, releases: int) -> float:
    return epsilon_after(
        releases,
        sampling_rate=config.sampling_rate or DEFAULT_SAMPLING_RATE,
        noise_multiplier=config.noise_multiplier,
        delta=config.delta,
    )


def _releases(session: Session, up_to: int | None = None) -> int:
    """Attempts of the session's rounds (numbered up to ``up_to``) in which a combiner released a model."""
    reports = CombinerReport.objects.filter(round__session=session, status=ReportStatus.SUCCESS)
    if up_to is not None:
        reports = reports.filter(round__number__lte=up_to)
    return reports.values_list("round_id", "attempt").distinct().count()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def round_privacy(session: Session, current: Round) -> dict[str, Any]:
    """``{"privacy": {...}}`` for the round_data of a round just committed; {} without dp.

    ε is what the session has spent at δ up to and including this round.
    """
    config = session_dp(session)
    if config is None:
        return {}
    releases = _releases(session, up_to=current.number)
    released = [
        report.report.get("data", {}).get(DP_KEY, {})
        for report in current.reports.filter(attempt=current.attempt, status=ReportStatus.SUCCESS)
    ]
    clip_norms = [item["clip_norm"] for item in released if isinstance(item.get("clip_norm"), int | float)]
    return {
        ROUND_KEY: {
            "epsilon": _finite(_epsilon(config, releases)),
            "delta": config.delta,
            "noise_multiplier": config.noise_multiplier,
            "sampling_rate": config.sampling_rate or DEFAULT_SAMPLING_RATE,
            "releases": releases,
            "clip_norm": max(clip_norms) if clip_norms else None,
            "target_epsilon": config.target_epsilon,
        }
    }


def privacy_budget_stop_reason(session: Session) -> str | None:
    """Why the session may not run another round (its target ε), or None when it may."""
    config = session_dp(session)
    if config is None or config.target_epsilon is None:
        return None
    releases = _releases(session)
    after = _epsilon(config, releases + 1)
    if after <= config.target_epsilon:
        return None
    return (
        f"Privacy budget reached: another round would bring ε to {after:.4g} at δ={config.delta:g}, "
        f"over the target ε={config.target_epsilon:g} (spent: ε={_epsilon(config, releases):.4g} "
        f"in {releases} round(s))."
    )


def rounds_within_budget(session: Session, wanted: int) -> int:
    """How many of ``wanted`` more rounds (or versions) the session's target ε allows."""
    config = session_dp(session)
    if config is None or config.target_epsilon is None or wanted <= 0:
        return max(wanted, 0)
    releases = _releases(session)
    low, high = 0, wanted  # low rounds fit; find the most that do
    while low < high:
        middle = (low + high + 1) // 2
        if _epsilon(config, releases + middle) <= config.target_epsilon:
            low = middle
        else:
            high = middle - 1
    return low


def session_privacy(session: Session) -> dict[str, Any] | None:
    """What a session has spent: ε at δ after its last committed round, and its target; None without dp."""
    config = session_dp(session)
    if config is None:
        return None
    last = (
        session.round_set.filter(round_data__has_key=ROUND_KEY)
        .order_by("-number")
        .values_list("round_data", flat=True)
        .first()
    )
    facts = (last or {}).get(ROUND_KEY, {})
    return {
        "epsilon": facts.get("epsilon", 0.0),
        "delta": config.delta,
        "target_epsilon": config.target_epsilon,
        "noise_multiplier": config.noise_multiplier,
        "rounds": facts.get("releases", 0),
    }
