"""The `fedplane` command: drive a fedplane (or FEDn 0.9.5) controller from a shell.

Exit codes: 0 ok, 1 the server refused or failed, 2 usage error, 3 controller unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import requests

from fedplane.api_client import APIClient, APIError
from fedplane.tokenfile import ARGV_TOKEN_WARNING, TokenFileError, resolve_token

EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

DEFAULT_CONTROLLER_URL = "http://127.0.0.1:8092"
MAX_CELL_WIDTH = 48
# After the last round closes, how long `session watch` waits for its validations to land.
LAST_ROUND_VALIDATION_GRACE_SECONDS = 10.0


class UsageError(Exception):
    """Bad input from the command line that argparse cannot catch by itself."""


# --- output --- #


def dig(doc: Any, dotted: str) -> Any:
    """`dig(doc, "sender.name")` → doc["sender"]["name"], or None when any step is missing."""
    value = doc
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL_WIDTH else text[: MAX_CELL_WIDTH - 1] + "…"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def print_json(doc: Any, out: TextIO) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str), file=out)


def print_document(doc: Any, out: TextIO) -> None:
    if not isinstance(doc, Mapping):
        print(format_cell(doc), file=out)
        return
    width = max((len(str(key)) for key in doc), default=0)
    for key in sorted(doc):
        value = doc[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        print(f"{str(key).ljust(width)}  {text}", file=out)


# --- entities --- #

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


# --- commands --- #


@dataclass
class Context:
    api: APIClient
    as_json: bool
    out: TextIO
    err: TextIO


def require_file(path: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"no such file: {path}")
    return file


def report_result(ctx: Context, result: Mapping[str, Any]) -> int:
    """Print a FEDn `{success, message}` answer; a refusal (success false) is exit code 1."""
    if ctx.as_json:
        print_json(result, ctx.out)
    ok = result.get("success", True) is not False
    if not ctx.as_json:
        print(result.get("message", "done"), file=ctx.out if ok else ctx.err)
    return EXIT_OK if ok else EXIT_SERVER_ERROR


def cmd_entity_list(ctx: Context, args: argparse.Namespace) -> int:
    entity: Entity = args.entity
    filters = {
        keyword: value for _, keyword, _ in entity.filters if (value := getattr(args, keyword)) is not None
    }
    answer = entity.list_call(ctx.api, args.n_max, **filters)
    if ctx.as_json:
        print_json(answer, ctx.out)
        return EXIT_OK
    items = answer.get("result", []) if isinstance(answer, Mapping) else list(answer)
    headers = [name for name, _ in entity.columns]
    rows = [[format_cell(get(item)) for _, get in entity.columns] for item in items]
    print(render_table(headers, rows), file=ctx.out)
    total = answer.get("count", len(items)) if isinstance(answer, Mapping) else len(items)
    print(f"({len(items)} of {total} {entity.name})", file=ctx.out)
    return EXIT_OK


def cmd_entity_show(ctx: Context, args: argparse.Namespace) -> int:
    doc = args.entity.show_call(ctx.api, args.id)
    (print_json if ctx.as_json else print_document)(doc, ctx.out)
    return EXIT_OK


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.get_controller_status()
    if ctx.as_json:
        print_json(answer, ctx.out)
    else:
        print(f"controller {ctx.api.base_url}: {answer.get('state', 'unknown')}", file=ctx.out)
    return EXIT_OK


def cmd_package_upload(ctx: Context, args: argparse.Namespace) -> int:
    path = require_file(args.path)
    result = ctx.api.set_active_package(path, args.helper, name=args.name, description=args.description)
    return report_result(ctx, result)


def cmd_package_download(ctx: Context, args: argparse.Namespace) -> int:
    return report_result(ctx, ctx.api.download_package(args.path))


def cmd_package_active(ctx: Context, args: argparse.Namespace) -> int:
    doc = ctx.api.get_active_package()
    (print_json if ctx.as_json else print_document)(doc, ctx.out)
    return EXIT_OK


def cmd_model_upload(ctx: Context, args: argparse.Namespace) -> int:
    return report_result(ctx, ctx.api.set_active_model(require_file(args.path)))


def cmd_model_download(ctx: Context, args: argparse.Namespace) -> int:
    return report_result(ctx, ctx.api.download_model(args.id, args.path))


def cmd_model_trail(ctx: Context, args: argparse.Namespace) -> int:
    trail = ctx.api.get_model_trail(args.id, n_max=args.n_max)
    if ctx.as_json or not isinstance(trail, list):
        print_json(trail, ctx.out)
        return EXIT_OK
    models = next(e for e in ENTITIES if e.name == "models")
    rows = [[format_cell(get(item)) for _, get in models.columns] for item in trail]
    print(render_table([name for name, _ in models.columns], rows), file=ctx.out)
    return EXIT_OK


def parse_json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f'{option} must be a JSON object, e.g. \'{{"serveropt": "adam"}}\'')
    return value


def cmd_session_start(ctx: Context, args: argparse.Namespace) -> int:
    result = ctx.api.start_session(
        id=args.id,
        aggregator=args.aggregator,
        aggregator_kwargs=parse_json_object(args.aggregator_kwargs, "--aggregator-kwargs"),
        model_id=args.model_id,
        round_timeout=args.round_timeout,
        rounds=args.rounds,
        round_buffer_size=args.round_buffer_size,
        delete_models=not args.keep_models,
        validate=not args.no_validate,
        helper=args.helper,
        min_clients=args.min_clients,
        requested_clients=args.requested_clients,
    )
    if ctx.as_json and not args.watch:
        print_json(result, ctx.out)
    ok = result.get("success", True) is not False
    if not ok:
        if not ctx.as_json:
            print(result.get("message", "session refused"), file=ctx.err)
        return EXIT_SERVER_ERROR
    session_id = (result.get("config") or {}).get("session_id") or args.id
    if not ctx.as_json:
        print(f"{result.get('message', 'Session started.')} session_id: {session_id}", file=ctx.out)
    if args.watch:
        if not session_id:
            raise UsageError("the controller did not say which session it started; use `session watch ID`")
        return watch_session(ctx, session_id, args.timeout_watch, args.poll_interval)
    return EXIT_OK


def cmd_session_watch(ctx: Context, args: argparse.Namespace) -> int:
    return watch_session(ctx, args.id, args.timeout_watch, args.poll_interval)


def cmd_session_stop(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.stop_session(args.id)
    if ctx.as_json:
        print_json(answer, ctx.out)
    else:
        print(answer.get("message", "stop requested"), file=ctx.out)
    return EXIT_OK


def round_summary(api: APIClient, round_doc: Mapping[str, Any]) -> dict[str, Any]:
    """What `session watch` shows for a closed round: status, participants, mean test metrics."""
    model_id = round_doc.get("model_id")
    validations = api.get_validations(model_id=model_id).get("result", []) if model_id else []
    return {
        "round_id": round_doc.get("round_id"),
        "status": round_doc.get("status"),
        "participants": len(round_participants(round_doc)),
        "model_id": model_id,
        "validations": len(validations),
        "test_accuracy": mean_metric(validations, "test_accuracy"),
        "test_loss": mean_metric(validations, "test_loss"),
    }


def format_round_summary(summary: Mapping[str, Any]) -> str:
    parts = [
        f"round {summary['round_id']}",
        str(summary["status"]),
        f"participants={summary['participants']}",
    ]
    for metric in ("test_accuracy", "test_loss"):
        if summary[metric] is not None:
            parts.append(f"{metric}={summary[metric]:.4f}")
    return "  ".join(parts)


def watch_session(ctx: Context, session_id: str, timeout: float, poll_interval: float) -> int:
    """Follow a session to its end with a progress bar and one line of metrics per round."""
    from tqdm import tqdm  # Only this command needs it; keeps `import fedplane.cli` light.

    session = ctx.api.get_session(session_id)
    config = session_config(session)
    total = config.get("rounds")
    validate = config.get("validate", True) not in (False, "false", "False")
    bar = tqdm(total=total if isinstance(total, int) else None, unit="round", file=ctx.err, disable=None)
    # A round's line waits until the next round closes, so its validations have time to arrive.
    pending: list[Mapping[str, Any]] = []

    def emit(round_doc: Mapping[str, Any]) -> None:
        summary = round_summary(ctx.api, round_doc)
        line = json.dumps(summary, sort_keys=True) if ctx.as_json else format_round_summary(summary)
        bar.write(line, file=ctx.out)

    def on_round(round_doc: dict[str, Any]) -> None:
        while pending:
            emit(pending.pop(0))
        pending.append(round_doc)
        bar.update(1)
        bar.set_postfix_str(f"round {round_doc.get('round_id')} {round_doc.get('status')}")

    try:
        final = ctx.api.wait_for_session(
            session_id, timeout=timeout, poll_interval=poll_interval, on_round=on_round
        )
        if pending and validate:
            wait_for_validations(
                ctx.api, pending[-1], min(LAST_ROUND_VALIDATION_GRACE_SECONDS, timeout), poll_interval
            )
        while pending:
            emit(pending.pop(0))
    except TimeoutError as exc:
        bar.close()
        print(f"error: {exc}", file=ctx.err)
        return EXIT_SERVER_ERROR
    bar.close()
    status = str(final.get("status", "unknown"))
    if ctx.as_json:
        # One JSON document per line: the rounds above, then the final session.
        print(json.dumps(final, sort_keys=True, default=str), file=ctx.out)
    else:
        print(f"session {session_id}: {status}", file=ctx.out)
    return EXIT_OK if status.lower() == "finished" else EXIT_SERVER_ERROR


def wait_for_validations(
    api: APIClient, round_doc: Mapping[str, Any], timeout: float, poll_interval: float
) -> None:
    model_id = round_doc.get("model_id")
    if not model_id or str(round_doc.get("status", "")).lower() not in ("success", "finished"):
        return
    deadline = time.monotonic() + timeout
    while api.get_validations(model_id=model_id, n_max=1).get("count", 0) == 0:
        if time.monotonic() >= deadline:
            return
        time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0)))


def run_client(argv: Sequence[str], err: TextIO) -> int:
    """`fedplane client start ARGS` is `python -m fedplane.client start ARGS`."""
    try:
        from fedplane.client.cli import main as client_main
    except ImportError as exc:
        print(f"error: the edge client is not installed with this fedplane ({exc})", file=err)
        return EXIT_SERVER_ERROR
    try:
        return int(client_main(["start", *argv]) or 0)
    except SystemExit as exc:  # its argparse: --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# --- parser --- #


def connection_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand.

    After the subcommand their defaults are SUPPRESSed so they never overwrite a value given
    before it; `resolve_connection` fills in the real defaults.
    """
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("controller connection")
    group.add_argument(
        "--host",
        default=default,
        metavar="URL",
        help="controller URL (default: $FEDPLANE_CONTROLLER, $FEDN_CONTROLLER_URL or "
        + DEFAULT_CONTROLLER_URL
        + ")",
    )
    group.add_argument(
        "--token-file",
        default=default,
        metavar="PATH",
        help="file holding the auth token (default: $FEDPLANE_TOKEN_FILE, else $FEDN_AUTH_TOKEN)",
    )
    group.add_argument(
        "--token", default=default, help="the auth token itself; visible in ps, prefer --token-file"
    )
    group.add_argument(
        "--json", action="store_true", default=default if suppress else False, help="print raw JSON answers"
    )
    group.add_argument(
        "--timeout", type=float, default=default, metavar="SECONDS", help="per-request timeout (30)"
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--insecure",
        dest="verify",
        action="store_false",
        default=default,
        help="do not verify TLS certificates",
    )
    tls.add_argument(
        "--verify",
        dest="verify",
        action="store_true",
        default=default,
        help="verify TLS certificates (the default)",
    )
    group.add_argument(
        "--ca-bundle", default=default, metavar="PATH", help="verify TLS certificates against this CA bundle"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = connection_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="fedplane",
        description="Command line for the fedplane federated-learning control plane "
        "(also works against a FEDn 0.9.5 controller).",
        epilog="Exit codes: 0 ok, 1 server or logical error, 2 usage error, 3 controller unreachable.",
        parents=[connection_options(suppress=False)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", parents=[common], help="show the controller state")
    status.set_defaults(handler=cmd_status)

    more_actions = {
        "clients": "start",
        "models": "upload, download, trail",
        "packages": "upload, download, active",
        "sessions": "start, watch, stop",
    }
    entity_parsers: dict[str, argparse._SubParsersAction] = {}
    for entity in ENTITIES:
        actions_help = ", ".join(["list", "show", *filter(None, [more_actions.get(entity.name)])])
        entity_parser = commands.add_parser(
            entity.name,
            aliases=list(entity.aliases),
            help=f"{entity.name}: {actions_help}",
            description=f"Work with {entity.name}.",
        )
        actions = entity_parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = actions.add_parser("list", parents=[common], help=f"list {entity.name}, newest first")
        listing.add_argument("--n-max", type=positive_int, metavar="N", help="show at most N")
        for option, keyword, help_text in entity.filters:
            listing.add_argument(option, dest=keyword, metavar="VALUE", help=help_text)
        listing.set_defaults(handler=cmd_entity_list, entity=entity)
        show = actions.add_parser("show", parents=[common], help=f"show one {entity.noun}")
        show.add_argument("id", metavar="ID")
        show.set_defaults(handler=cmd_entity_show, entity=entity)
        entity_parsers[entity.name] = actions

    packages = entity_parsers["packages"]
    upload = packages.add_parser(
        "upload", parents=[common], help="upload a compute package and make it active"
    )
    upload.add_argument("path", metavar="PATH", help=".tgz, .tar.gz or .tar.bz2 holding fedn.yaml")
    upload.add_argument("--helper", default="numpyhelper", help="model helper of the package (numpyhelper)")
    upload.add_argument("--name", help="a name to tell packages apart")
    upload.add_argument("--description", help="free text shown with the package")
    upload.set_defaults(handler=cmd_package_upload)
    download = packages.add_parser("download", parents=[common], help="download the active compute package")
    download.add_argument("path", metavar="PATH", help="file to write")
    download.set_defaults(handler=cmd_package_download)
    active = packages.add_parser("active", parents=[common], help="show the active compute package")
    active.set_defaults(handler=cmd_package_active)

    models = entity_parsers["models"]
    upload = models.add_parser(
        "upload", parents=[common], help="upload a seed model (.npz) and make it active"
    )
    upload.add_argument("path", metavar="PATH")
    upload.set_defaults(handler=cmd_model_upload)
    download = models.add_parser("download", parents=[common], help="download a model file")
    download.add_argument("id", metavar="ID", help="model id or uuid")
    download.add_argument("path", metavar="PATH", help="file to write")
    download.set_defaults(handler=cmd_model_download)
    trail = models.add_parser("trail", parents=[common], help="show a model's ancestors, oldest first")
    trail.add_argument("id", metavar="ID", nargs="?", help="model id (default: the active model)")
    trail.add_argument("--n-max", type=positive_int, metavar="N")
    trail.set_defaults(handler=cmd_model_trail)

    sessions = entity_parsers["sessions"]
    start = sessions.add_parser("start", parents=[common], help="start a training session")
    start.add_argument("--id", help="session id (default: one is generated)")
    start.add_argument("--rounds", type=positive_int, default=5, help="number of rounds (5)")
    start.add_argument("--aggregator", default="fedavg", help="fedavg, fedopt, ... (fedavg)")
    start.add_argument(
        "--aggregator-kwargs", metavar="JSON", help='aggregator options, e.g. \'{"serveropt": "adam"}\''
    )
    start.add_argument("--model-id", help="seed model (default: the active model)")
    start.add_argument("--round-timeout", type=positive_int, default=180, metavar="SECONDS", help="(180)")
    start.add_argument(
        "--round-buffer-size", type=int, default=-1, metavar="N", help="-1: all selected clients"
    )
    start.add_argument("--min-clients", type=positive_int, default=1, metavar="N", help="(1)")
    start.add_argument("--requested-clients", type=positive_int, default=8, metavar="N", help="(8)")
    start.add_argument("--helper", default="numpyhelper", help="(numpyhelper)")
    start.add_argument("--no-validate", action="store_true", help="skip validation after each round")
    start.add_argument("--keep-models", action="store_true", help="keep combiners' intermediate models")
    add_watch_options(start)
    start.add_argument("--watch", action="store_true", help="follow the session until it ends")
    start.set_defaults(handler=cmd_session_start)
    watch = sessions.add_parser("watch", parents=[common], help="follow a session round by round")
    watch.add_argument("id", metavar="ID")
    add_watch_options(watch)
    watch.set_defaults(handler=cmd_session_watch)
    stop = sessions.add_parser("stop", parents=[common], help="ask a running session to stop")
    stop.add_argument("id", metavar="ID")
    stop.set_defaults(handler=cmd_session_stop)

    # Everything after `client start` belongs to the edge client's own parser, --help included.
    client_start = entity_parsers["clients"].add_parser(
        "start", add_help=False, help="start an edge client (see `fedplane client start --help`)"
    )
    client_start.set_defaults(handler=None, delegate_to_client=True)
    return parser


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch-timeout",
        dest="timeout_watch",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="give up watching after this long (one day)",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS", help="(2)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def resolve_connection(args: argparse.Namespace, err: TextIO = sys.stderr) -> APIClient:
    """The APIClient the options describe; TokenFileError for a token file that cannot be used."""
    token = resolve_token(
        token_file=getattr(args, "token_file", None),
        token=getattr(args, "token", None),
        environ=os.environ,
        file_variables=("FEDPLANE_TOKEN_FILE",),
        variables=("FEDN_AUTH_TOKEN",),
    )
    if token.from_argv:
        print(f"fedplane: warning: {ARGV_TOKEN_WARNING}", file=err)
    host = (
        getattr(args, "host", None)
        or os.environ.get("FEDPLANE_CONTROLLER")
        or os.environ.get("FEDN_CONTROLLER_URL")
        or DEFAULT_CONTROLLER_URL
    )
    if "://" not in host:
        host = f"http://{host}"
    verify: bool | str = getattr(args, "verify", None) is not False
    ca_bundle = getattr(args, "ca_bundle", None)
    if ca_bundle:
        verify = ca_bundle
    timeout = getattr(args, "timeout", None) or 30.0
    return APIClient(host, verify=verify, token=token.token, timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "delegate_to_client", False):
            return run_client(extra, err)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    try:
        api = resolve_connection(args, err)
    except TokenFileError as exc:
        print(f"fedplane: error: {exc}", file=err)
        return EXIT_USAGE
    ctx = Context(api=api, as_json=bool(getattr(args, "json", False)), out=out, err=err)
    try:
        return args.handler(ctx, args)
    except UsageError as exc:
        print(f"fedplane: error: {exc}", file=err)
        return EXIT_USAGE
    except APIError as exc:
        print(f"error: {exc.message} (HTTP {exc.status_code})", file=err)
        return EXIT_SERVER_ERROR
    except requests.exceptions.SSLError as exc:
        print(
            f"error: TLS with {api.base_url} failed ({exc}); pass --ca-bundle PATH, or --insecure to skip verification",
            file=err,
        )
        return EXIT_UNREACHABLE
    except (requests.ConnectionError, requests.Timeout) as exc:
        print(f"error: cannot reach the controller at {api.base_url}: {exc}", file=err)
        return EXIT_UNREACHABLE
    except OSError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_SERVER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
