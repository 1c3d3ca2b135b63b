"""FedBuff (Nguyen et al. 2022): asynchronous aggregation through a buffer of K updates.

Clients train on whatever global model version they last received and report when done. The
server folds each update's delta ``uᵢ - g(vᵢ)`` (``g(vᵢ)`` is the version it was trained on) into
one running sum, weighted by ``nᵢ·s(τᵢ)``: its number of examples times a staleness weight of
``τᵢ = version - vᵢ``. Once K updates are in, the new version is::

    g ← g + η · Σ nᵢ s(τᵢ) Δᵢ / Σ nᵢ s(τᵢ)

Memory is one accumulator of the model's size, as for fedavg; older versions stay on disk.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedplane import numpyhelper
from fedplane.aggregators.base import (
    BLOCK_ELEMS,
    InvalidUpdate,
    ModelSpec,
    Param,
    check_finite,
    check_num_examples,
    open_model,
    parse_params,
)
from fedplane.aggregators.fedavg import WeightedSum
from fedplane.modeldelta import ScaledDelta

__all__ = [
    "STALENESS_FUNCTIONS",
    "BufferFull",
    "FedBuff",
    "StaleUpdate",
    "constant_staleness",
    "hinge_staleness",
    "polynomial_staleness",
]

StalenessFn = Callable[[int], float]


def polynomial_staleness(exponent: float = 0.5) -> StalenessFn:
    """``s(τ) = (1 + τ)^-exponent``; FedBuff's default is ``1/sqrt(1 + τ)``."""
    if not exponent >= 0 or not math.isfinite(exponent):
        raise ValueError(f"staleness exponent must be a finite number >= 0, got {exponent!r}")
    return lambda tau: float((1.0 + tau) ** -exponent)


def constant_staleness() -> StalenessFn:
    """``s(τ) = 1``: staleness only limits which updates are taken (``max_staleness``)."""
    return lambda _tau: 1.0


def hinge_staleness(a: float = 10.0, b: int = 4) -> StalenessFn:
    """``s(τ) = 1`` for τ <= b, then ``1 / (a(τ - b) + 1)`` (FedAsync, Xie et al. 2019)."""
    if not a > 0 or not math.isfinite(a):
        raise ValueError(f"hinge slope a must be a finite number > 0, got {a!r}")
    if b < 0:
        raise ValueError(f"hinge start b must be >= 0, got {b!r}")
    return lambda tau: 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)


STALENESS_FUNCTIONS = ("polynomial", "constant", "hinge")


class StaleUpdate(InvalidUpdate):
    """An update trained on a global model version too old (or unknown) to be taken."""


class BufferFull(RuntimeError):
    """The buffer holds K updates: ``flush`` must make the next version before more are taken."""


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


FEDBUFF_PARAMS = {
    "buffer_size": Param((int,), 10, lambda v: v >= 1, ">= 1"),
    "server_learning_rate": Param((float, int), 1.0, _positive_finite, "> 0"),
    "max_staleness": Param((int,), 100, lambda v: v >= 0, ">= 0"),
    "staleness": Param(
        (str,), "polynomial", lambda v: v in STALENESS_FUNCTIONS, f"one of {', '.join(STALENESS_FUNCTIONS)}"
    ),
    "staleness_exponent": Param((float, int), 0.5, lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "hinge_a": Param((float, int), 10.0, _positive_finite, "> 0"),
    "hinge_b": Param((int,), 4, lambda v: v >= 0, ">= 0"),
}


class FedBuff:
    """The buffer of one session: ``start`` on a global model, ``add`` updates, ``flush`` at K.

    ``add`` may be called from several threads: the update is read and checked outside the lock,
    only the fold is serialised. The caller keeps the global model files of the last
    ``max_staleness`` versions, since each update's delta is taken against its own base.
    """

    name = "fedbuff"

    def __init__(
        self,
        *,
        buffer_size: int = 10,
        server_learning_rate: float = 1.0,
        max_staleness: int = 100,
        staleness: StalenessFn | None = None,
        block_elems: int = BLOCK_ELEMS,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size!r}")
        if not _positive_finite(server_learning_rate):
            raise ValueError(
                f"server_learning_rate must be a finite number > 0, got {server_learning_rate!r}"
            )
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness!r}")
        self.buffer_size = buffer_size
        self.server_learning_rate = float(server_learning_rate)
        self.max_staleness = max_staleness
        self.staleness = staleness or polynomial_staleness()
        self.block_elems = block_elems
        self._lock = threading.Lock()
        self._spec: ModelSpec | None = None
        self._global_path: Path | None = None
        self._version = 0
        self._sum: WeightedSum | None = None
        self._count = 0

    @classmethod
    def create(cls, params: dict[str, Any]) -> FedBuff:
        """Build from keyword parameters as sessions give them (see ``FEDBUFF_PARAMS``)."""
        values = parse_params(cls.name, params, FEDBUFF_PARAMS)
        kind = values.pop("staleness")
        exponent, a, b = values.pop("staleness_exponent"), values.pop("hinge_a"), values.pop("hinge_b")
        if kind == "polynomial":
            function = polynomial_staleness(exponent)
        elif kind == "hinge":
            function = hinge_staleness(a, b)
        else:
            function = constant_staleness()
        return cls(staleness=function, **values)

    def start(self, global_model_path: Path, version: int) -> None:
        """Begin buffering on the global model ``version`` (the file stays in place until the next flush)."""
        path = Path(global_model_path)
        try:
            with numpyhelper.open_layers(path) as reader:
                spec = ModelSpec.of(reader)
        except FileNotFoundError as exc:
            raise ValueError(f"global model file not found: {path}") from exc
        with self._lock:
            self._spec, self._global_path, self._version = spec, path, int(version)
            self._sum, self._count = WeightedSum(spec, self.block_elems), 0

    @property
    def version(self) -> int:
        """The current global model's version: updates are stale by ``version - trained_on``."""
        return self._version

    @property
    def count(self) -> int:
        """Updates in the buffer."""
        return self._count

    @property
    def ready(self) -> bool:
        """The buffer holds K updates and should be flushed."""
        return self._count >= self.buffer_size

    def staleness_weight(self, trained_on_version: int) -> float:
        """``s(τ)`` for an update trained on ``trained_on_version``; ``StaleUpdate`` past ``max_staleness``."""
        tau = self._version - trained_on_version
        if tau < 0:
            raise StaleUpdate(
                f"update was trained on version {trained_on_version}, newer than the current version {self._version}"
            )
        if tau > self.max_staleness:
            raise StaleUpdate(
                f"update was trained on version {trained_on_version}, {tau} versions behind the current "
                f"version {self._version}; at most {self.max_staleness} are accepted"
            )
        weight = float(self.staleness(tau))
        if not _positive_finite(weight):
            raise ValueError(f"staleness function gave {weight!r} for staleness {tau}; it must be > 0")
        return weight

    def add(
        self, update_path: Path, num_examples: float, trained_on_version: int, base_model_path: Path
    ) -> float:
        """Fold ``update - base`` weighted by ``num_examples · s(τ)``; returns that weight.

        ``base_model_path`` is the global model of ``trained_on_version``. Raises ``StaleUpdate``
        (nothing folded) when the update is too stale, ``InvalidUpdate`` when it or its base does
        not match the global model or holds NaN or infinity, ``BufferFull`` when K are in.
        """
        examples = check_num_examples(num_examples)
        with self._lock:
            spec = self._require_started()
            self._check_room()
            self.staleness_weight(trained_on_version)  # refuse early, before reading anything
        with (
            open_model(Path(update_path), spec) as update,
            open_model(Path(base_model_path), spec, what="base model") as base,
        ):
            try:
                check_finite(update)
            except InvalidUpdate:
                raise
            except ValueError as exc:  # damaged data found while reading the blocks
                raise InvalidUpdate(f"update could not be read: {exc}") from exc
            with self._lock:
                # A flush while the update was read makes it staler: weigh it against the version now.
                spec = self._require_started()
                self._check_room()
                weight = examples * self.staleness_weight(trained_on_version)
                assert self._sum is not None
                delta = ScaledDelta(update, base, 1.0, [layer.dtype for layer in self._sum.layers])
                try:
                    self._sum.fold(delta, weight)
                except ValueError as exc:
                    # The fold may have been partly applied: the buffer cannot be trusted any more.
                    self._sum, self._count = WeightedSum(spec, self.block_elems), 0
                    raise InvalidUpdate(f"update could not be read; the buffer was cleared: {exc}") from exc
                self._count += 1
        return weight

    def flush(self, out_path: Path) -> int:
        """Write ``g + η · weighted mean of the deltas`` as the next version; returns its number.

        The written file becomes the global model the buffer continues from.
        """
        out = Path(out_path)
        with self._lock:
            spec = self._require_started()
            if self._count == 0 or self._sum is None:
                raise ValueError("the buffer is empty: no update to aggregate")
            assert self._global_path is not None
            layers = self._sum.mean_in_place()
            with open_model(self._global_path, spec, what="global model") as current:
                for i, layer in enumerate(layers):
                    for start, block in current.iter_blocks(i, self.block_elems):
                        target = layer[start : start + block.size]
                        target *= self.server_learning_rate
                        target += block
            numpyhelper.save(self._sum.shaped(), out)
            self._sum = None  # free this accumulator before the next one is made
            self._global_path, self._version = out, self._version + 1
            self._sum, self._count = WeightedSum(spec, self.block_elems), 0
            return self._version

    def _require_started(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError("start must be called before add or flush")
        return self._spec

    def _check_room(self) -> None:
        if self._count >= self.buffer_size:
            raise BufferFull(f"the buffer holds {self._count} updates (K={self.buffer_size}); flush it first")
