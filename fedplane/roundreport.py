"""The round report: what a combiner tells the controller when its part of a training round ends.

One contract for both ends. The combiner builds its report as a `RoundReport` and posts
`to_json()` to `round_report_path(round_id)`; the controller's serializer takes its field names and
status values from here and checks each body with `RoundReport.from_json()`.
docs/combiner-controller.md describes the route around it.

The wire shape is the one combiners have always sent: one JSON object, keys in `ReportField` order.

- Top level: closed. `combiner` and `status` are required; every other field may be left out and
  takes its default; a key that is not a `ReportField` is refused. A new field therefore has to
  reach the controllers before the combiners send it.
- `timings` and `data`: open objects. The keys named here (`Timing`, `RoundDataKey`) are what this
  combiner sends and must be non-negative numbers when present; other keys pass through unchecked,
  so a newer combiner may add one without its reports being refused.
- `config`: the round config of `Control.Start` echoed as the combiner received it (string values);
  the controller reads `round_id` and `round_attempt` from it (`EchoedConfigKey`).

Plain Python on purpose: the controller (Django) and the combiner both import it, and it imports
neither of them.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, TypedDict, cast

__all__ = [
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "ROUND_REPORT_ROUTE",
    "EchoedConfigKey",
    "ReportField",
    "ReportStatus",
    "ReportStatusValue",
    "RoundData",
    "RoundDataKey",
    "RoundReport",
    "RoundReportError",
    "RoundReportJSON",
    "Timing",
    "Timings",
    "round_report_path",
]

# The controller route a report is POSTed to (relative to the controller URL).
ROUND_REPORT_ROUTE: Final = "/api/v1/rounds/{round_id}/reports"


def round_report_path(round_id: str) -> str:
    """The path of the report route for `round_id` (the controller's round number, as a string)."""
    return ROUND_REPORT_ROUTE.format(round_id=round_id)


class ReportStatus(StrEnum):
    """How the combiner's part of the round ended."""

    # The updates it received are combined into `model_id`, already in the artifact store.
    SUCCESS = "Success"
    # No model: `reason` says why (too few clients, no update before the timeout, stopped, ...).
    FAILED = "Failed"


# The same values as a type, for annotations of wire dicts.
ReportStatusValue = Literal["Success", "Failed"]


class ReportField(StrEnum):
    """The report's keys, in the order they are sent; each is also a `RoundReport` attribute."""

    COMBINER = "combiner"
    STATUS = "status"
    REASON = "reason"
    MODEL_ID = "model_id"
    NUM_EXAMPLES = "num_examples"
    PARTICIPANTS = "participants"
    TIMINGS = "timings"
    DATA = "data"
    CONFIG = "config"


REQUIRED_FIELDS: Final = (ReportField.COMBINER, ReportField.STATUS)
OPTIONAL_FIELDS: Final = tuple(name for name in ReportField if name not in REQUIRED_FIELDS)


class Timing(StrEnum):
    """Keys of `timings`, seconds; a Success report has all three, a Failed one none."""

    # From the round's close to the combined model stored.
    TIME_COMBINATION = "time_combination"
    # Fetching and staging the global model at the round's start.
    TIME_MODEL_LOAD = "time_model_load"
    # Inside the aggregator: folding each update in, and finishing.
    TIME_MODEL_AGGREGATION = "time_model_aggregation"


class RoundDataKey(StrEnum):
    """Keys of `data`, FEDn's round data of one combiner."""

    # Clients sent a training task.
    NR_EXPECTED_UPDATES = "nr_expected_updates"
    # Updates that close the round early (the buffer size; all tasks when it is -1).
    NR_REQUIRED_UPDATES = "nr_required_updates"
    # The round timeout, seconds.
    TIMEOUT = "timeout"
    # Updates folded into the model: len(participants).
    NR_AGGREGATED_MODELS = "nr_aggregated_models"


class EchoedConfigKey(StrEnum):
    """Keys of the echoed Start config that the controller reads from a report."""

    ROUND_ID = "round_id"
    # The attempt of a retried round the combiner ran; a report of another attempt is refused.
    ROUND_ATTEMPT = "round_attempt"


class Timings(TypedDict, total=False):
    time_combination: float
    time_model_load: float
    time_model_aggregation: float


class RoundData(TypedDict, total=False):
    nr_expected_updates: int
    nr_required_updates: int
    timeout: float
    nr_aggregated_models: int


class RoundReportJSON(TypedDict):
    """The wire object, as `to_json()` returns it."""

    combiner: str
    status: ReportStatusValue
    reason: str
    model_id: str | None
    num_examples: int
    participants: list[str]
    timings: Timings
    data: RoundData
    config: dict[str, Any]


class RoundReportError(ValueError):
    """A report that breaks the contract; `field` names the offending key ("" for the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = str(field)
        self.message = message


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_STATUS_VALUES: Final = tuple(status.value for status in ReportStatus)
_FIELD_NAMES: Final = tuple(name.value for name in ReportField)


def _frozen_object(name: str, value: Any, numbers: type[StrEnum] | None = None) -> Mapping[str, Any]:
    """A read-only copy of a JSON object; the keys of `numbers` must hold non-negative numbers."""
    if not isinstance(value, Mapping):
        raise RoundReportError(name, "must be a JSON object")
    checked = {key.value for key in numbers} if numbers is not None else set()
    for key, item in value.items():
        if not isinstance(key, str):
            raise RoundReportError(name, f"keys must be strings, got {key!r}")
        if key in checked and not (_is_number(item) and math.isfinite(item) and item >= 0):
            raise RoundReportError(f"{name}.{key}", f"must be a non-negative number, got {item!r}")
    return types.MappingProxyType(dict(value))


@dataclass(frozen=True)
class RoundReport:
    """One combiner's report of one training round; checked when built, whichever way."""

    combiner: str
    status: ReportStatus
    reason: str = ""
    # The combined model's id (a uuid), None when the round failed.
    model_id: str | None = None
    # Sum of training_metadata.num_examples over the aggregated updates.
    num_examples: int = 0
    # Names of the clients whose updates were aggregated, in arrival order.
    participants: tuple[str, ...] = ()
    timings: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.combiner, str) or not self.combiner:
            raise RoundReportError(ReportField.COMBINER, "must be a non-empty string")
        if not isinstance(self.status, str) or self.status not in _STATUS_VALUES:
            allowed = ", ".join(repr(value) for value in _STATUS_VALUES)
            raise RoundReportError(ReportField.STATUS, f"must be one of {allowed}, got {self.status!r}")
        if not isinstance(self.reason, str):
            raise RoundReportError(ReportField.REASON, "must be a string")
        if self.model_id is not None and not isinstance(self.model_id, str):
            raise RoundReportError(ReportField.MODEL_ID, "must be a string or null")
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int):
            raise RoundReportError(ReportField.NUM_EXAMPLES, "must be an integer")
        if self.num_examples < 0:
            raise RoundReportError(ReportField.NUM_EXAMPLES, "must be >= 0")
        if isinstance(self.participants, str | bytes) or not isinstance(self.participants, Sequence):
            raise RoundReportError(ReportField.PARTICIPANTS, "must be a list of strings")
        if not all(isinstance(name, str) for name in self.participants):
            raise RoundReportError(ReportField.PARTICIPANTS, "must be a list of strings")
        # Normalized in place (the dataclass is frozen): the enum member, a tuple, read-only copies.
        object.__setattr__(self, "status", ReportStatus(self.status))
        object.__setattr__(self, "participants", tuple(self.participants))
        object.__setattr__(self, "timings", _frozen_object(ReportField.TIMINGS, self.timings, Timing))
        object.__setattr__(self, "data", _frozen_object(ReportField.DATA, self.data, RoundDataKey))
        object.__setattr__(self, "config", _frozen_object(ReportField.CONFIG, self.config))

    @property
    def round_id(self) -> str | None:
        """The round number the combiner echoed in `config`, if any."""
        value = self.config.get(EchoedConfigKey.ROUND_ID)
        return None if value in (None, "") else str(value)

    def to_json(self) -> RoundReportJSON:
        """The JSON object to send: plain dicts, lists and strings, keys in `ReportField` order."""
        return {
            "combiner": self.combiner,
            "status": self.status.value,
            "reason": self.reason,
            "model_id": self.model_id,
            "num_examples": self.num_examples,
            "participants": list(self.participants),
            "timings": cast(Timings, dict(self.timings)),
            "data": cast(RoundData, dict(self.data)),
            "config": dict(self.config),
        }

    @classmethod
    def from_json(cls, doc: Any) -> RoundReport:
        """A report from a decoded JSON object; RoundReportError for anything the contract refuses.

        Unknown keys and missing required keys are refused; missing optional keys take their
        defaults. Types are JSON's, strictly: a number is not a string, true is not 1.
        """
        if not isinstance(doc, Mapping):
            raise RoundReportError("", "a round report must be a JSON object")
        unknown = sorted(str(key) for key in doc if key not in _FIELD_NAMES)
        if unknown:
            raise RoundReportError(unknown[0], f"unknown key (unknown keys: {', '.join(unknown)})")
        missing = [name.value for name in REQUIRED_FIELDS if name not in doc]
        if missing:
            raise RoundReportError(missing[0], f"required (missing: {', '.join(missing)})")
        # The constructor also takes a tuple; JSON has only lists.
        if ReportField.PARTICIPANTS in doc and not isinstance(doc[ReportField.PARTICIPANTS], list):
            raise RoundReportError(ReportField.PARTICIPANTS, "must be a list of strings")
        return cls(**{name: doc[name] for name in _FIELD_NAMES if name in doc})
