"""The entities the controller lists and shows, with the columns `list` prints for each."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedplane.api_client import APIClient
from fedplane.cli.output import dig

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def field(dotted: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda doc: dig(doc, dotted)


def session_config(session: Mapping[str, Any]) -> Mapping[str, Any]:
    """A session's config: FEDn's legacy sessions keep it as a one-element list."""
    config = session.get("session_config") or {}
    if isinstance(config, list):
        config = config[0] if config else {}
    return config if isinstance(config, Mapping) else {}


def round_participants(round_doc: Mapping[str, Any]) -> list[str]:
    """Client names that took part in a round, gathered from the combiners' reports."""
    names: list[str] = []
    for report in round_doc.get("combiners") or []:
        if isinstance(report, Mapping):
            for name in report.get("participants") or dig(report, "report.participants") or []:
                if name not in names:
                    names.append(name)
    return names or list(dig(round_doc, "round_data.participants") or [])


def validation_metrics(validation: Mapping[str, Any]) -> Mapping[str, Any]:
    data = validation.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, Mapping) else {}


def mean_metric(validations: Sequence[Mapping[str, Any]], name: str) -> float | None:
    values = [validation_metrics(v).get(name) for v in validations]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.fmean(numbers) if numbers else None


@dataclass(frozen=True)
class Entity:
    name: str
    noun: str
    aliases: tuple[str, ...]
    list_call: Callable[..., Any]
    show_call: Callable[[APIClient, str], Any]
    columns: Sequence[Column]
    # (option, APIClient keyword, help) of the filters `list` offers.
    filters: tuple[tuple[str, str, str], ...] = ()


ENTITIES: tuple[Entity, ...] = (
    Entity(
        "clients",
        "client",
        ("client",),
        lambda api, n: api.get_clients(n_max=n),
        lambda api, id: api.get_client(id),
        [
            ("id", field("id")),
            ("name", field("name")),
            ("combiner", field("combiner")),
            ("status", field("status")),
            ("ip", field("ip")),
            ("last_seen", field("last_seen")),
        ],
    ),
    Entity(
        "combiners",
        "combiner",
        ("combiner",),
        lambda api, n: api.get_combiners(n_max=n),
        lambda api, id: api.get_combiner(id),
        [
            ("name", field("name")),
            ("address", field("address")),
            ("port", field("port")),
            ("fqdn", field("fqdn")),
            ("ip", field("ip")),
            ("updated_at", field("updated_at")),
        ],
    ),
    Entity(
        "models",
        "model",
        ("model",),
        lambda api, n, **filters: api.get_models(n_max=n, **filters),
        lambda api, id: api.get_model(id),
        [
            ("model", field("model")),
            ("parent_model", field("parent_model")),
            ("session_id", field("session_id")),
            ("committed_at", field("committed_at")),
        ],
        (("--session-id", "session_id", "only models this session committed"),),
    ),
    Entity(
        "packages",
        "package",
        ("package",),
        lambda api, n: api.get_packages(n_max=n),
        lambda api, id: api.get_package(id),
        [
            ("id", field("id")),
            ("name", field("name")),
            ("helper", field("helper")),
            ("file_name", field("file_name")),
            ("active", field("active")),
            ("committed_at", field("committed_at")),
        ],
    ),
    Entity(
        "sessions",
        "session",
        ("session",),
        lambda api, n: api.get_sessions(n_max=n),
        lambda api, id: api.get_session(id),
        [
            ("session_id", field("session_id")),
            ("status", field("status")),
            ("rounds", lambda s: session_config(s).get("rounds")),
            ("aggregator", lambda s: session_config(s).get("aggregator")),
            ("model_id", lambda s: session_config(s).get("model_id")),
            ("committed_at", field("committed_at")),
        ],
    ),
    Entity(
        "rounds",
        "round",
        ("round",),
        lambda api, n: api.get_rounds(n_max=n),
        lambda api, id: api.get_round(id),
        [
            ("id", field("id")),
            ("round_id", field("round_id")),
            ("status", field("status")),
            ("session_id", lambda r: dig(r, "round_config.session_id") or r.get("session_id")),
            ("participants", lambda r: len(round_participants(r))),
            ("model_id", field("model_id")),
        ],
    ),
    Entity(
        "statuses",
        "status event",
        ("events",),
        lambda api, n, **filters: api.get_statuses(n_max=n, **filters),
        lambda api, id: api.get_status(id),
        [
            ("id", field("id")),
            ("timestamp", field("timestamp")),
            ("type", field("type")),
            ("log_level", field("log_level")),
            ("sender", field("sender.name")),
            ("status", field("status")),
        ],
        (
            ("--session-id", "session_id", "only this session's events"),
            ("--type", "event_type", "only this type, e.g. MODEL_UPDATE"),
            ("--sender", "sender_name", "only events sent by this client or combiner"),
        ),
    ),
    Entity(
        "validations",
        "validation",
        ("validation",),
        lambda api, n, **filters: api.get_validations(n_max=n, **filters),
        lambda api, id: api.get_validation(id),
        [
            ("id", field("id")),
            ("timestamp", field("timestamp")),
            ("model_id", field("model_id")),
            ("sender", field("sender.name")),
            ("session_id", field("session_id")),
            ("data", field("data")),
        ],
        (
            ("--session-id", "session_id", "only this session's validations"),
            ("--model-id", "model_id", "only validations of this model"),
            ("--sender", "sender_name", "only validations by this client"),
        ),
    ),
)
