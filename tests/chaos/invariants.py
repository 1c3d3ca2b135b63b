"""What must hold after a session survived the chaos, read from the database, the artifact store
and the clients' own logs (not from the controller's API, which is one of the things killed).

Each check raises AssertionError with its evidence, or returns a one-line result for the summary.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from tests.e2e.harness import Backend

# fedplane's client logs this once SendModelValidation returned OK (fedplane/client/tasks.py).
VALIDATION_SENT = re.compile(
    r"event=task_done kind=validation model_id=(?P<model_id>\S+) correlation_id=(?P<correlation_id>\S+)"
)


@dataclass
class Stored:
    """One session as the database holds it."""

    session: dict[str, Any]
    rounds: list[dict[str, Any]]
    reports: dict[int, list[dict[str, Any]]]
    models: dict[str, dict[str, Any]]
    validations: list[dict[str, Any]]
    # The clients' statuses, as (sender, type, timestamp, status, correlation id) with their count.
    client_statuses: list[dict[str, Any]]


def connect(database_url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(database_url, autocommit=True, connect_timeout=10, row_factory=dict_row)


def round_in_training(database_url: str, session_id: str) -> int | None:
    """The session's latest round (1 for its first) while it is Pending (with the combiners), else None."""
    with connect(database_url) as db:
        rows = db.execute(
            "SELECT r.status FROM fl_sessions_round r JOIN fl_sessions_session s ON r.session_id = s.id"
            " WHERE s.session_id = %s ORDER BY r.number",
            (session_id,),
        ).fetchall()
    return len(rows) if rows and rows[-1]["status"] == "Pending" else None


def session_status(database_url: str, session_id: str) -> dict[str, Any] | None:
    with connect(database_url) as db:
        return db.execute(
            "SELECT status, status_reason, rounds_completed FROM fl_sessions_session WHERE session_id = %s",
            (session_id,),
        ).fetchone()


def load(database_url: str, session_id: str) -> Stored:
    with connect(database_url) as db:
        session = db.execute(
            "SELECT * FROM fl_sessions_session WHERE session_id = %s", (session_id,)
        ).fetchone()
        assert session is not None, f"no session {session_id} in the database"
        rounds = db.execute(
            "SELECT * FROM fl_sessions_round WHERE session_id = %s ORDER BY number", (session["id"],)
        ).fetchall()
        reports: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rounds}
        for report in db.execute(
            "SELECT * FROM fl_sessions_combinerreport WHERE round_id = ANY(%s) ORDER BY id",
            ([r["id"] for r in rounds],),
        ):
            reports[report["round_id"]].append(report)
        models = {
            str(m["model_id"]): m
            for m in db.execute(
                "SELECT model_id, parent_id, session_id, artifact, sha256 FROM mlmodels_model"
                " WHERE session_id = %s OR model_id::text = ANY(%s)",
                (session_id, [r["model_id"] for r in rounds if r["model_id"]] + [session["model_id"] or ""]),
            )
        }
        validations = db.execute(
            "SELECT sender_name, model_id, correlation_id FROM fl_sessions_validation WHERE session_id = %s",
            (session_id,),
        ).fetchall()
        client_statuses = db.execute(
            "SELECT sender_name, type, timestamp, status, correlation_id, count(*) AS copies"
            " FROM fl_sessions_status WHERE session_id = %s AND sender_role = 'WORKER'"
            " GROUP BY sender_name, type, timestamp, status, correlation_id",
            (session_id,),
        ).fetchall()
    return Stored(session, rounds, reports, models, validations, client_statuses)


# ---------------------------------------------------------------- the invariants


def session_finished(stored: Stored, rounds: int) -> str:
    session = stored.session
    assert session["status"] == "Finished", (
        f"session {session['session_id']} is {session['status']}: {session['status_reason']}"
    )
    assert session["rounds_completed"] == rounds, session
    return f"session Finished with {rounds}/{rounds} rounds completed"


def rounds_contiguous(stored: Stored, rounds: int) -> str:
    numbers = [r["number"] for r in stored.rounds]
    summary = [(r["number"], r["status"], r["status_reason"][:120]) for r in stored.rounds]
    assert len(numbers) == len(set(numbers)), f"a round number is repeated: {summary}"
    assert numbers == list(range(numbers[0], numbers[0] + rounds)), f"rounds repeated or skipped: {summary}"
    assert all(r["status"] == "Finished" for r in stored.rounds), f"a round is not Finished: {summary}"
    return f"rounds {numbers[0]}..{numbers[-1]}: {rounds} numbers, none repeated or skipped, all Finished"


def one_model_per_round(stored: Stored, seed_id: str) -> str:
    round_models = [r["model_id"] for r in stored.rounds]
    assert all(round_models), f"a round has no model: {round_models}"
    committed = sorted(
        m for m, row in stored.models.items() if row["session_id"] == stored.session["session_id"]
    )
    assert committed == sorted(round_models), (
        f"the session committed {len(committed)} model(s) for {len(round_models)} rounds: "
        f"extra {sorted(set(committed) - set(round_models))}, missing {sorted(set(round_models) - set(committed))}"
    )
    parent = seed_id
    for item in stored.rounds:
        model = stored.models[item["model_id"]]
        assert str(model["parent_id"]) == parent, (
            f"round {item['number']}: model {item['model_id']} has parent {model['parent_id']}, expected {parent}"
        )
        parent = item["model_id"]
    return f"{len(round_models)} committed models, one per round, each the child of the previous (first of the seed)"


def artifacts_intact(stored: Stored, backend: Backend) -> str:
    for item in stored.rounds:
        model = stored.models[item["model_id"]]
        data = fetch(backend, model["artifact"])
        assert hashlib.sha256(data).hexdigest() == model["sha256"], f"artifact of {item['model_id']} changed"
    return f"{len(stored.rounds)} model artifacts in S3 match their stored sha256"


def reduce_recomputed(stored: Stored, backend: Backend) -> str:
    """Each round's global model is the num_examples-weighted mean of its combiners' stored models."""
    multi = 0
    for item in stored.rounds:
        usable = [
            r
            for r in final_attempt(stored, item)
            if r["status"] == "Success" and r["model_id"] and r["num_examples"] > 0
        ]
        described = [
            (r["combiner"], r["status"], r["model_id"], r["num_examples"]) for r in stored.reports[item["id"]]
        ]
        assert usable, f"round {item['number']} committed a model without a usable report: {described}"
        committed = layers(fetch(backend, f"models/{item['model_id']}.npz"))
        total = sum(r["num_examples"] for r in usable)
        expected = [np.zeros(layer.shape, dtype=np.float64) for layer in committed]
        for report in usable:
            for acc, layer in zip(
                expected, layers(fetch(backend, f"models/{report['model_id']}.npz")), strict=True
            ):
                acc += layer.astype(np.float64) * (report["num_examples"] / total)
        for index, (got, want) in enumerate(zip(committed, expected, strict=True)):
            np.testing.assert_allclose(
                got,
                want,
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"round {item['number']} layer {index}: not the weighted mean of {described}",
            )
        multi += len(usable) > 1
    assert multi, "no round had two combiners: recomputing the reduce proved nothing"
    return f"every round's model recomputed from its combiners' models in S3 ({multi} round(s) with 2)"


def validations_once(stored: Stored, sent: Iterable[tuple[str, str, str]]) -> str:
    stored_keys = Counter((v["sender_name"], v["model_id"], v["correlation_id"]) for v in stored.validations)
    duplicates = {key: n for key, n in stored_keys.items() if n > 1}
    assert not duplicates, f"validations stored more than once (sender, model, correlation): {duplicates}"
    sent_keys = set(sent)
    lost = sorted(sent_keys - set(stored_keys))
    assert not lost, f"{len(lost)} validation(s) a client logged as sent are not stored: {lost}"
    return (
        f"{len(sent_keys)} validations logged as sent by the clients, all stored, "
        f"{sum(stored_keys.values())} stored, none twice"
    )


def statuses_once(stored: Stored) -> str:
    """A client's status (its own timestamp, to the microsecond) is stored once, though a combiner
    resends a batch whose answer it lost when the controller is killed."""
    repeated = [row for row in stored.client_statuses if row["copies"] > 1]
    assert not repeated, f"{len(repeated)} client status(es) stored more than once, e.g. {repeated[:3]}"
    assert stored.client_statuses, "no client status stored: the check proved nothing"
    return f"{len(stored.client_statuses)} client statuses stored, none twice"


def final_attempt(stored: Stored, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The reports of the attempt that made the round's model (a retried round ignores earlier ones)."""
    attempt = item.get("attempt", 0)
    return [r for r in stored.reports[item["id"]] if r.get("attempt", 0) == attempt]


# ---------------------------------------------------------------- evidence


def round_table(stored: Stored) -> list[str]:
    """One line per round: its seconds (to the next round), what each combiner reported, validations."""
    validations = Counter(v["model_id"] for v in stored.validations)
    ends = [r["created_at"] for r in stored.rounds[1:]] + [stored.session["finished_at"]]
    lines = []
    for item, ended in zip(stored.rounds, ends, strict=True):
        reports = ", ".join(
            f"{r['combiner']}{'#' + str(r['attempt']) if r.get('attempt') else ''} {r['status']} {r['num_examples']}"
            for r in stored.reports[item["id"]]
        )
        retries = f" attempt {item['attempt']}" if item.get("attempt") else ""
        seconds = (ended - item["created_at"]).total_seconds() if ended else float("nan")
        reason = f"  ({item['status_reason'][:100]})" if item["status_reason"] else ""
        lines.append(
            f"round {item['number']:>2} {item['status']:<8}{retries} {seconds:5.1f} s  reports: {reports or '-'}; "
            f"validations {validations.get(item['model_id'], 0)}{reason}"
        )
    return lines


def validations_sent(logs: Path, clients: Iterable[str]) -> list[tuple[str, str, str]]:
    """(sender, model, correlation) of every validation the clients logged as taken by a combiner.

    The harness writes each start of a process to its own log file, so restarts lose nothing.
    """
    sent = []
    for client in clients:
        for log in sorted(logs.glob(f"{client}.*.log")):
            for match in VALIDATION_SENT.finditer(log.read_text(errors="replace")):
                sent.append((client, match["model_id"], match["correlation_id"]))
    return sent


def updates_refused(logs: Path, combiners: Iterable[str]) -> list[str]:
    """The combiners' log lines of model updates refused because their round had closed.

    Not an invariant: a client killed and back late has its update refused by design. Listed in
    the summary because a round closed by its buffer before every update was folded refuses one too.
    """
    lines = []
    for combiner in combiners:
        for log in sorted(logs.glob(f"{combiner}.*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if "refused: it arrived after its round was closed" in line:
                    lines.append(f"{combiner}: {line}")
    return lines


def fetch(backend: Backend, key: str) -> bytes:
    assert backend.s3 is not None, "the chaos test runs on S3"
    answer = backend.s3_client().get_object(Bucket=backend.s3["bucket"], Key=key)
    return answer["Body"].read()


def layers(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return [archive[str(i)] for i in range(len(archive.files))]
