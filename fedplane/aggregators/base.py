"""The aggregator interface and what every aggregator shares: validation and the round lifecycle."""

from __future__ import annotations

import abc
import itertools
import numbers
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedplane import numpyhelper
from fedplane.npzcheck import BLOCK_ELEMS, FiniteCheck, find_non_finite
from fedplane.numpyhelper import LayerReader

__all__ = [
    "BLOCK_ELEMS",
    "Aggregator",
    "FiniteCheck",
    "InvalidUpdate",
    "ModelSpec",
    "check_finite",
    "open_model",
]

_FLOAT_KINDS = "f"
_INTEGER_KINDS = "iub"


class InvalidUpdate(ValueError):
    """A model update that cannot be aggregated; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """Layer shapes and dtypes of the round's global model, which every update must match."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, reader: LayerReader) -> ModelSpec:
        for i, dtype in enumerate(reader.dtypes):
            if dtype.kind not in _FLOAT_KINDS + _INTEGER_KINDS:
                raise ValueError(f"global model layer {i} has non-numeric dtype {dtype}")
        return cls(tuple(reader.shapes), tuple(reader.dtypes))

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]

    @property
    def total_size(self) -> int:
        return sum(self.sizes)

    def work_dtype(self, index: int) -> np.dtype:
        """Arithmetic dtype for a layer: float32 for float16/float32, float64 otherwise."""
        dtype = self.dtypes[index]
        if dtype.kind == "f" and dtype.itemsize <= 4:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def check(self, reader: LayerReader) -> None:
        if len(reader) != len(self.shapes):
            raise InvalidUpdate(f"update has {len(reader)} layers, the global model has {len(self.shapes)}")
        for i, (name, shape, dtype, want_shape, want_dtype) in enumerate(
            zip(reader.names, reader.shapes, reader.dtypes, self.shapes, self.dtypes, strict=True)
        ):
            if shape != want_shape:
                problem = f"has shape {shape}"
            elif not _same_kind(dtype, want_dtype):
                problem = f"has dtype {dtype}"
            else:
                continue
            raise InvalidUpdate(
                f"layer {i} (member {name!r}) {problem}: declared shape {shape} dtype {dtype}, "
                f"the global model has shape {want_shape} dtype {want_dtype}"
            )


def _same_kind(dtype: np.dtype, reference: np.dtype) -> bool:
    if reference.kind in _FLOAT_KINDS:
        return dtype.kind in _FLOAT_KINDS
    return dtype.kind in _INTEGER_KINDS


def check_num_examples(num_examples: Any) -> float:
    if isinstance(num_examples, bool) or not isinstance(num_examples, numbers.Real):
        raise InvalidUpdate(f"num_examples must be a positive number, got {num_examples!r}")
    weight = float(num_examples)
    if not np.isfinite(weight) or weight <= 0:
        raise InvalidUpdate(f"num_examples must be a positive number, got {num_examples!r}")
    return weight


@dataclass(frozen=True)
class Param:
    """One aggregator parameter: accepted types, default, and a check of the value."""

    types: tuple[type, ...]
    default: Any
    check: Callable[[Any], bool] = lambda _value: True
    rule: str = ""


def parse_params(name: str, params: dict[str, Any], schema: dict[str, Param]) -> dict[str, Any]:
    """Fill defaults and refuse unknown keys, wrong types (bools are not numbers) and bad values."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        allowed = ", ".join(sorted(schema)) or "none"
        raise ValueError(f"unknown parameter(s) for {name}: {', '.join(unknown)} (allowed: {allowed})")
    values = {}
    for key, param in schema.items():
        if key not in params:
            values[key] = param.default
            continue
        value = params[key]
        if (isinstance(value, bool) and bool not in param.types) or not isinstance(value, param.types):
            raise ValueError(f"{name} parameter {key} must be {_type_names(param)}, got {value!r}")
        if not param.check(value):
            raise ValueError(f"{name} parameter {key}={value!r} is out of range: {param.rule}")
        values[key] = value
    return values


def _type_names(param: Param) -> str:
    return " or ".join(t.__name__ for t in param.types if t is not type(None))


def open_model(path: Path, spec: ModelSpec | None, what: str = "update") -> LayerReader:
    """Open a model file; if ``spec`` is given, check its layer count, shapes and dtype kinds."""
    try:
        reader = numpyhelper.open_layers(path)
    except FileNotFoundError as exc:
        raise InvalidUpdate(f"{what} file not found: {path}") from exc
    except ValueError as exc:
        raise InvalidUpdate(f"{what} is not a valid model file: {exc}") from exc
    try:
        if spec is not None:
            spec.check(reader)
    except BaseException:
        reader.close()
        raise
    return reader


def check_finite(reader: LayerReader, block_elems: int = BLOCK_ELEMS) -> None:
    """Read the whole update once, without keeping it, and refuse NaN or infinity."""
    problem = find_non_finite(reader, block_elems)
    if problem is not None:
        raise InvalidUpdate(problem)


def to_output(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast aggregated values to the global model's dtype, rounding for integer layers."""
    if dtype.kind in _FLOAT_KINDS:
        return values.astype(dtype, copy=False)
    if dtype.kind == "b":
        return np.rint(values) != 0
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


class Aggregator(abc.ABC):
    """Combines one round's model updates into one model.

    A fresh instance serves one session and lives across its rounds. ``add`` may be called from
    several threads at once: reading and validating an update happens outside the lock, only
    folding it into the round state is serialised (fedavg reads a deflated update while it
    folds it, under the lock, so that it is inflated only once).
    """

    name: ClassVar[str]

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._spec: ModelSpec | None = None
        self._global_path: Path | None = None
        self._count = 0
        self._round_ids = itertools.count(1)
        self._round_id = 0

    @classmethod
    def create(cls, workdir: Path, params: dict[str, Any]) -> Aggregator:
        """Build from FEDn-style ``aggregator_kwargs``; aggregators without parameters take none."""
        parse_params(cls.name, params, {})
        return cls(workdir)

    def start_round(self, global_model_path: Path) -> None:
        """Begin a round on the staged global model, which must stay in place until ``finish``."""
        path = Path(global_model_path)
        try:
            with numpyhelper.open_layers(path) as reader:
                spec = ModelSpec.of(reader)
        except FileNotFoundError as exc:
            raise ValueError(f"global model file not found: {path}") from exc
        with self._lock:
            self._discard_round()
            self._spec, self._global_path, self._count = spec, path, 0
            self._round_id = next(self._round_ids)
            self._begin_round(spec)

    def add(self, update_path: Path, num_examples: int) -> None:
        """Validate an update and take it into the round; ``InvalidUpdate`` leaves the round as it was."""
        weight = check_num_examples(num_examples)
        with self._lock:
            spec, round_id = self._require_round(), self._round_id
        with open_model(Path(update_path), spec) as reader:
            try:
                prepared = self._prepare(reader, spec)
            except InvalidUpdate:
                raise
            except ValueError as exc:  # damaged data found while reading the blocks
                raise InvalidUpdate(f"update could not be read: {exc}") from exc
            with self._lock:
                if round_id != self._round_id or self._spec is None:
                    self._drop_prepared(prepared)
                    raise InvalidUpdate("the round closed while the update was being read")
                try:
                    self._accept(reader, spec, weight, prepared)
                except InvalidUpdate:
                    raise
                except ValueError as exc:  # damaged data found while folding (read in one pass)
                    raise InvalidUpdate(f"update could not be read: {exc}") from exc
                self._count += 1

    @property
    def count(self) -> int:
        """Updates accepted in the current round."""
        return self._count

    def finish(self, out_path: Path) -> None:
        """Write the aggregated model; raises ``ValueError`` when no update was accepted."""
        with self._lock:
            spec = self._require_round()
            if self._count == 0:
                raise ValueError("no model updates were accepted in this round")
            try:
                assert self._global_path is not None
                self._write(spec, self._global_path, Path(out_path))
            finally:
                self._discard_round()
                self._spec, self._global_path, self._count = None, None, 0
                self._round_id = next(self._round_ids)

    def _require_round(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError("start_round must be called before add or finish")
        return self._spec

    # Hooks for concrete aggregators.

    @abc.abstractmethod
    def _begin_round(self, spec: ModelSpec) -> None:
        """Set up per-round state (called under the lock)."""

    def _prepare(self, reader: LayerReader, spec: ModelSpec) -> Any:
        """Validate (and maybe spool) an update without touching shared state; raises InvalidUpdate."""
        check_finite(reader)
        return None

    def _drop_prepared(self, prepared: Any) -> None:
        """Undo ``_prepare`` for an update that arrived too late for its round."""
        return None

    @abc.abstractmethod
    def _accept(self, reader: LayerReader, spec: ModelSpec, weight: float, prepared: Any) -> None:
        """Take a validated update into the round state (called under the lock).

        An aggregator that validates while it folds may raise ``ValueError`` here, but only
        with the round state left exactly as it was.
        """

    @abc.abstractmethod
    def _write(self, spec: ModelSpec, global_path: Path, out_path: Path) -> None:
        """Compute the round's model and save it (called under the lock)."""

    @abc.abstractmethod
    def _discard_round(self) -> None:
        """Free per-round state (called under the lock)."""
