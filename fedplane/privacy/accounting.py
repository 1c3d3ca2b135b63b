"""Privacy accounting of DP-FedAvg rounds with dp-accounting's RDP accountant.

Each round samples clients with probability q (Poisson) and releases the sum of their clipped
deltas with Gaussian noise of multiplier z: one ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``
under add-or-remove-one-client adjacency. T such rounds compose to ε at a chosen δ.

This module is apart from the rest of :mod:`fedplane.privacy` so that only the server, which
keeps the books, needs dp-accounting installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.rdp import RdpAccountant

__all__ = ["PrivacyLedger", "RoundRun", "epsilon_after", "noise_multiplier_for", "round_event"]

# Calibration stops within this distance of the smallest multiplier that meets the budget.
NOISE_MULTIPLIER_TOLERANCE = 1e-4


def round_event(sampling_rate: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    """One round: clients sampled with probability ``sampling_rate``, Gaussian sum with multiplier z."""
    _check_sampling_rate(sampling_rate)
    _check_noise_multiplier(noise_multiplier)
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


def _rounds_event(rounds: int, sampling_rate: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(round_event(sampling_rate, noise_multiplier), rounds)


def epsilon_after(
    rounds: int,
    *,
    sampling_rate: float,
    noise_multiplier: float,
    delta: float,
    orders: Sequence[float] | None = None,
) -> float:
    """ε at ``delta`` after ``rounds`` rounds (``inf`` without noise).

    ``orders`` are the RDP orders to optimise over; by default the library's.
    """
    _check_rounds(rounds)
    _check_delta(delta)
    if rounds == 0:
        return 0.0
    accountant = RdpAccountant(orders)
    accountant.compose(_rounds_event(rounds, sampling_rate, noise_multiplier))
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(
    target_epsilon: float,
    *,
    delta: float,
    sampling_rate: float,
    rounds: int,
    orders: Sequence[float] | None = None,
    tol: float = NOISE_MULTIPLIER_TOLERANCE,
) -> float:
    """The smallest noise multiplier (within ``tol``) whose ε after ``rounds`` rounds is at most the target.

    dp-accounting's ``calibrate_dp_mechanism`` searches for it and guarantees the result stays
    within the budget.
    """
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    _check_delta(delta)
    _check_sampling_rate(sampling_rate)
    _check_rounds(rounds)
    if rounds == 0:
        return 0.0
    multiplier = dp_accounting.calibrate_dp_mechanism(
        lambda: RdpAccountant(orders),
        lambda z: _rounds_event(rounds, sampling_rate, z),
        target_epsilon,
        delta,
        # Below about 0.01 the Gaussian's RDP overflows to infinity, which the search cannot bracket.
        bracket_interval=dp_accounting.LowerEndpointAndGuess(0.01, 1.0),
        tol=tol,
    )
    return float(multiplier)


@dataclass(frozen=True)
class RoundRun:
    """Consecutive rounds run with the same sampling rate and noise multiplier."""

    sampling_rate: float
    noise_multiplier: float
    rounds: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.noise_multiplier,
            "rounds": self.rounds,
        }


class PrivacyLedger:
    """The privacy a session has spent so far, round by round, at a fixed δ.

    Its state is the list of :class:`RoundRun` (``runs``), small enough to store with the
    session and rebuild from (``PrivacyLedger(delta, runs=...)``) after a restart.
    """

    def __init__(
        self, delta: float, *, runs: Iterable[RoundRun] = (), orders: Sequence[float] | None = None
    ) -> None:
        _check_delta(delta)
        self.delta = float(delta)
        self._orders = None if orders is None else list(orders)
        self._runs: list[RoundRun] = []
        self._accountant = RdpAccountant(self._orders)
        for run in runs:
            self._record(run.sampling_rate, run.noise_multiplier, run.rounds)

    @property
    def runs(self) -> list[RoundRun]:
        return list(self._runs)

    @property
    def rounds(self) -> int:
        return sum(run.rounds for run in self._runs)

    @property
    def epsilon(self) -> float:
        """ε spent so far at the ledger's δ (0 before the first round)."""
        if not self._runs:
            return 0.0
        return float(self._accountant.get_epsilon(self.delta))

    def record_round(self, sampling_rate: float, noise_multiplier: float) -> float:
        """Book one round that has been released; returns ε spent so far."""
        self._record(sampling_rate, noise_multiplier, 1)
        return self.epsilon

    def epsilon_if(self, sampling_rate: float, noise_multiplier: float, rounds: int = 1) -> float:
        """ε the session would have spent after ``rounds`` more such rounds (nothing is booked)."""
        _check_rounds(rounds)
        preview = PrivacyLedger(self.delta, runs=self._runs, orders=self._orders)
        preview._record(sampling_rate, noise_multiplier, rounds)
        return preview.epsilon

    def _record(self, sampling_rate: float, noise_multiplier: float, rounds: int) -> None:
        _check_rounds(rounds)
        if rounds == 0:
            return
        self._accountant.compose(_rounds_event(rounds, sampling_rate, noise_multiplier))
        last = self._runs[-1] if self._runs else None
        if last is not None and (last.sampling_rate, last.noise_multiplier) == (
            sampling_rate,
            noise_multiplier,
        ):
            self._runs[-1] = RoundRun(sampling_rate, noise_multiplier, last.rounds + rounds)
        else:
            self._runs.append(RoundRun(float(sampling_rate), float(noise_multiplier), rounds))


def _check_sampling_rate(sampling_rate: float) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")


def _check_noise_multiplier(noise_multiplier: float) -> None:
    if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
