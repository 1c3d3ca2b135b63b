"""FEDn's ``fedopt``: server-side Adam, Yogi or Adagrad on the averaged pseudo-gradient.

The pseudo-gradient ``g = Σnᵢ(mᵢ - old)/Σnᵢ`` equals ``fedavg - old``, so updates are folded into a
running weighted sum exactly as fedavg does and ``old`` is subtracted once at the end. The
optimizer moments ``m`` and ``v`` persist across the session's rounds.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedplane import numpyhelper
from fedplane.aggregators.base import ModelSpec, Param, open_model, parse_params
from fedplane.aggregators.fedavg import FedAvg

logger = logging.getLogger(__name__)

SERVER_OPTIMIZERS = ("adam", "yogi", "adagrad")


def _unit_interval(value: float) -> bool:
    return 0.0 <= value < 1.0


FEDOPT_PARAMS = {
    "serveropt": Param(
        (str,), "adam", lambda v: v in SERVER_OPTIMIZERS, f"one of {', '.join(SERVER_OPTIMIZERS)}"
    ),
    "learning_rate": Param((float, int), 1e-3, lambda v: math.isfinite(v) and v > 0, "> 0"),
    "beta1": Param((float, int), 0.9, _unit_interval, "in [0, 1)"),
    "beta2": Param((float, int), 0.99, _unit_interval, "in [0, 1)"),
    "tau": Param((float, int), 1e-4, lambda v: math.isfinite(v) and v > 0, "> 0"),
}


class FedOpt(FedAvg):
    """fedavg's streamed weighted sum, then one server optimizer step from the global model."""

    name = "fedopt"

    def __init__(
        self,
        workdir: Path,
        *,
        serveropt: str = "adam",
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-4,
    ) -> None:
        super().__init__(workdir)
        self.serveropt = serveropt
        self.learning_rate = float(learning_rate)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.tau = float(tau)
        # Optimizer state, flat per layer; None until the first round has been aggregated.
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None
        self._state_spec: ModelSpec | None = None

    @classmethod
    def create(cls, workdir: Path, params: dict[str, Any]) -> FedOpt:
        return cls(workdir, **parse_params(cls.name, params, FEDOPT_PARAMS))

    def _begin_round(self, spec: ModelSpec) -> None:
        super()._begin_round(spec)
        if self._state_spec is not None and self._state_spec.shapes != spec.shapes:
            logger.warning("fedopt: the global model's layers changed shape; optimizer state reset")
            self._m = self._v = self._state_spec = None

    def _write(self, spec: ModelSpec, global_path: Path, out_path: Path) -> None:
        assert self._sum is not None
        layers = self._sum.mean_in_place()
        first_step = self._m is None or self._v is None
        if first_step:
            moments = [np.empty_like(layer) for layer in layers]
            second_moments = [np.empty_like(layer) for layer in layers]
        else:
            moments, second_moments = self._m, self._v
        block_elems = self._sum.block_elems
        with open_model(global_path, spec, what="global model") as old_model:
            for i, model in enumerate(layers):
                m, v = moments[i], second_moments[i]
                for start, old in old_model.iter_blocks(i, block_elems):
                    stop = start + old.size
                    # ``model`` holds the fedavg mean; it becomes g, then the new model, in place.
                    self._step(model[start:stop], old, m[start:stop], v[start:stop], first_step)
        self._m, self._v, self._state_spec = moments, second_moments, spec
        numpyhelper.save(self._sum.shaped(), out_path)

    def _step(self, avg: np.ndarray, old: np.ndarray, m: np.ndarray, v: np.ndarray, first: bool) -> None:
        beta1, beta2, tau, lr = self.beta1, self.beta2, self.tau, self.learning_rate
        g = np.subtract(avg, old, out=avg, casting="unsafe")
        g2 = np.square(g)
        if first:
            np.multiply(g, 1.0 - beta1, out=m)
            v.fill(tau * tau)
        else:
            m *= beta1
            m += (1.0 - beta1) * g
        if self.serveropt == "adam":
            v *= beta2
            v += (1.0 - beta2) * g2
        elif self.serveropt == "yogi":
            v -= (1.0 - beta2) * g2 * np.sign(v - g2)
        else:  # adagrad
            v += g2
        step = np.sqrt(v)
        step += tau
        np.divide(m, step, out=step)
        step *= lr
        np.add(old, step, out=avg, casting="unsafe")

    def _discard_round(self) -> None:
        self._sum = None
