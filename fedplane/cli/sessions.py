"""Handlers of the session commands: start, watch (round by round, with metrics) and stop."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

from fedplane.api_client import APIClient
from fedplane.cli.context import (
    EXIT_OK,
    EXIT_SERVER_ERROR,
    Context,
    UsageError,
    parse_json_object,
)
from fedplane.cli.entities import mean_metric, round_participants, session_config
from fedplane.cli.output import print_json

# After the last round closes, how long `session watch` waits for its validations to land.
LAST_ROUND_VALIDATION_GRACE_SECONDS = 10.0


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
        **extension_arguments(args),
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


def extension_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``start_session``'s fedplane keywords (``dp``, ``mode``, ``fedbuff``) that were given."""
    given = {
        "dp": parse_json_object(args.dp, "--dp"),
        "mode": args.mode,
        "fedbuff": parse_json_object(args.fedbuff, "--fedbuff"),
    }
    return {key: value for key, value in given.items() if value is not None}


def round_epsilon(round_doc: Mapping[str, Any]) -> float | None:
    """ε spent at δ up to this round, for a round of a session with differential privacy."""
    privacy = (round_doc.get("round_data") or {}).get("privacy") or {}
    epsilon = privacy.get("epsilon")
    return float(epsilon) if isinstance(epsilon, int | float) else None


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
    summary: dict[str, Any] = {
        "round_id": round_doc.get("round_id"),
        "status": round_doc.get("status"),
        "participants": len(round_participants(round_doc)),
        "model_id": model_id,
        "validations": len(validations),
        "test_accuracy": mean_metric(validations, "test_accuracy"),
        "test_loss": mean_metric(validations, "test_loss"),
    }
    epsilon = round_epsilon(round_doc)
    if epsilon is not None:
        summary["epsilon"] = epsilon
    return summary


def format_round_summary(summary: Mapping[str, Any]) -> str:
    parts = [
        f"round {summary['round_id']}",
        str(summary["status"]),
        f"participants={summary['participants']}",
    ]
    for metric in ("test_accuracy", "test_loss"):
        if summary[metric] is not None:
            parts.append(f"{metric}={summary[metric]:.4f}")
    if summary.get("epsilon") is not None:
        parts.append(f"epsilon={summary['epsilon']:.4g}")
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
        # Re-read the round: a round reported as Success when its model was committed is
        # Finished once validated, and the line should say what the rounds list says.
        current = {str(doc.get("round_id")): doc for doc in ctx.api.iter_session_rounds(session_id)}
        summary = round_summary(ctx.api, current.get(str(round_doc.get("round_id")), round_doc))
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
        reason = final.get("status_reason") if status.lower() != "finished" else None
        print(f"session {session_id}: {status}" + (f" ({reason})" if reason else ""), file=ctx.out)
        privacy = final.get("privacy")
        if isinstance(privacy, Mapping) and privacy.get("epsilon") is not None:
            print(
                f"privacy spent: epsilon={privacy['epsilon']:.4g} at delta={privacy['delta']:g}", file=ctx.out
            )
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
