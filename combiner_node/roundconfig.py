"""The round config the controller sends in Control.Start: FEDn's stringified key/values, parsed."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from combiner_node.modelfiles import InvalidModelId, check_model_id
from fedplane.privacy import DpConfig

TASKS = ("training", "validation")
MODES = ("sync", "async")
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off", "none", ""}


class RoundConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RoundConfig:
    task: str
    session_id: str
    round_id: str
    model_id: str
    aggregator: str = "fedavg"
    aggregator_kwargs: dict[str, Any] = field(default_factory=dict)
    round_timeout: float = 180.0
    buffer_size: int = -1
    clients_required: int = 1
    clients_requested: int = 8
    delete_models_storage: bool = True
    validate: bool = True
    helper_type: str = "numpyhelper"
    # Central differential privacy of the session's aggregation (a fedplane extension).
    dp: DpConfig | None = None
    # "async": buffered asynchronous aggregation (FedBuff), one report per model version; the
    # controller names the round of each version in `async_round_ids` (fedplane extensions).
    mode: str = "sync"
    fedbuff: dict[str, Any] = field(default_factory=dict)
    async_round_ids: tuple[str, ...] = ()
    raw: dict[str, str] = field(default_factory=dict)


def _int(params: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    text = params.get(key)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        # Some callers stringify floats ("5.0"); accept them when they are whole.
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            raise RoundConfigError(f"{key} must be an integer, got {text!r}") from None
        value = int(number)
    if value < minimum:
        raise RoundConfigError(f"{key} must be >= {minimum}, got {value}")
    return value


def _float(params: Mapping[str, str], key: str, default: float) -> float:
    text = params.get(key)
    if text is None or text.strip() == "":
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise RoundConfigError(f"{key} must be a number, got {text!r}") from exc
    if not value > 0 or value == float("inf"):
        raise RoundConfigError(f"{key} must be a positive number, got {text!r}")
    return value


def _bool(params: Mapping[str, str], key: str, default: bool) -> bool:
    text = params.get(key)
    if text is None:
        return default
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise RoundConfigError(f"{key} must be True or False, got {text!r}")


def _dict_literal(key: str, text: str | None) -> dict[str, Any]:
    """A dict sent as FEDn's `str(dict)` or as JSON. Only literals are evaluated, never code."""
    if text is None or text.strip() in ("", "None", "null", "{}"):
        return {}
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise RoundConfigError(f"{key} is not a dict literal: {text[:100]!r}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
        raise RoundConfigError(f"{key} must be a dict with string keys")
    return value


def parse_aggregator_kwargs(text: str | None) -> dict[str, Any]:
    """FEDn sends `str(dict)`; JSON is accepted too."""
    return _dict_literal("aggregator_kwargs", text)


def parse_dp(text: str | None) -> DpConfig | None:
    """The session's differential privacy settings (`dp`), or None when it has none."""
    params = _dict_literal("dp", text)
    if not params:
        return None
    try:
        return DpConfig.from_params(params)
    except (TypeError, ValueError) as exc:
        raise RoundConfigError(f"dp: {exc}") from exc


def parse_round_config(params: Mapping[str, str]) -> RoundConfig:
    task = params.get("task", "training").strip() or "training"
    if task not in TASKS:
        raise RoundConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    model_id = params.get("model_id", "")
    try:
        check_model_id(model_id)
    except InvalidModelId as exc:
        raise RoundConfigError(f"model_id is missing or invalid: {model_id!r}") from exc
    round_id = params.get("round_id", "").strip()
    if task == "training" and not round_id:
        raise RoundConfigError("round_id is required for a training round")
    if round_id and ("/" in round_id or len(round_id) > 64):
        raise RoundConfigError(f"invalid round_id {round_id!r}")
    buffer_size = _int(params, "buffer_size", -1, -1)
    if buffer_size == 0:
        raise RoundConfigError("buffer_size must be -1 (all selected clients) or positive")
    aggregator = params.get("aggregator", "").strip() or "fedavg"
    mode = params.get("mode", "").strip() or "sync"
    if mode not in MODES:
        raise RoundConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    async_round_ids = tuple(
        part.strip() for part in params.get("async_round_ids", "").split(",") if part.strip()
    )
    if mode == "async" and task == "training" and not async_round_ids:
        raise RoundConfigError("an asynchronous session needs async_round_ids, the round of each version")
    if any("/" in item or len(item) > 64 for item in async_round_ids):
        raise RoundConfigError("invalid async_round_ids")
    return RoundConfig(
        task=task,
        session_id=params.get("session_id", ""),
        round_id=round_id,
        model_id=model_id,
        aggregator=aggregator,
        aggregator_kwargs=parse_aggregator_kwargs(params.get("aggregator_kwargs")),
        round_timeout=_float(params, "round_timeout", 180.0),
        buffer_size=buffer_size,
        clients_required=_int(params, "clients_required", 1, 1),
        clients_requested=_int(params, "clients_requested", 8, 1),
        delete_models_storage=_bool(params, "delete_models_storage", True),
        validate=_bool(params, "validate", True),
        helper_type=params.get("helper_type", "numpyhelper") or "numpyhelper",
        dp=parse_dp(params.get("dp")),
        mode=mode,
        fedbuff=_dict_literal("fedbuff", params.get("fedbuff")),
        async_round_ids=async_round_ids,
        raw=dict(params),
    )
