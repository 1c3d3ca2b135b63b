"""The digits package on a real federation: stragglers (sync vs async) and central DP.

    python examples/digits/experiments.py stragglers [--clients 6] [--slow 2] [--slowdown 5] ...
    python examples/digits/experiments.py privacy [--clients 6] [--rounds 8] [--epsilons 1,3,8] ...

Each experiment starts a federation as the end-to-end tests do (tests/e2e/harness.py): the
controller, a Celery worker and beat, one combiner, and `python -m fedplane.client` processes
running this package, on the services of `scripts/services.sh env` when its variables are set and
on the embedded defaults otherwise. Accuracy is the mean `test_accuracy` of the validations stored
for a model (every client validates on the same test split). Each prints a Markdown table on
stdout, and each model's accuracy on stderr.

stragglers: `--slow` of the clients train `--slowdown` times slower (FEDPLANE_EPOCH_SECONDS, which
the package's train entry point honours by padding its epochs). A synchronous fedavg session (a
generous round timeout, every client in every round) and an asynchronous FedBuff session run from
the same seed model; the table gives the wall time from the session's start until its first model
at `--target` test accuracy was committed (seen by polling its rounds every 0.25 s), and the final
model's accuracy.

privacy: a non-private fedavg session and DP-FedAvg sessions with adaptive clipping whose noise z
the controller derives from each target ε over `--rounds` rounds (δ = 1e-5); the table gives the
accuracy after the rounds, the ε the controller booked, and whether the admin's session page shows
both (fetched as a logged-in superuser).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedplane.privacy.accounting import noise_multiplier_for  # noqa: E402
from tests.e2e.harness import Federation, prepare_backend  # noqa: E402

COMBINER = "combiner"
DELTA = 1e-5


def client_name(index: int) -> str:
    return f"client-{index + 1}"


@contextlib.contextmanager
def federation(
    workdir: Path,
    clients: int,
    client_envs: dict[str, dict[str, str]],
    base_env: dict[str, str],
    *,
    gunicorn: bool = False,
) -> Iterator[Federation]:
    """Controller, worker, one combiner and `clients` digits clients, all online; with `gunicorn`
    the controller is served as `make serve` serves it (the admin's static files collected)."""
    started = time.monotonic()
    backend = prepare_backend(workdir)
    fed = Federation(backend, client_env=base_env)
    try:
        fed.start_controller(gunicorn=gunicorn)
        fed.start_worker()
        fed.start_combiner(COMBINER)
        fed.upload_digits()
        for index in range(clients):
            name = client_name(index)
            fed.start_client(name, index, clients, combiner=COMBINER, extra_env=client_envs.get(name))
        fed.wait_clients_online(clients, timeout=180)
        log(f"federation up in {time.monotonic() - started:.1f} s on {backend.description}")
        yield fed
    finally:
        fed.stop()
        backend.close()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def accuracy(fed: Federation, model_id: str) -> float | None:
    """Mean test accuracy over the validations stored for `model_id`."""
    found = fed.api.get_validations(model_id=model_id, n_max=100).get("result", [])
    values = []
    for item in found:
        data = item.get("data")
        metrics = data if isinstance(data, dict) else _json(data)
        if "test_accuracy" in metrics:
            values.append(float(metrics["test_accuracy"]))
    return sum(values) / len(values) if values else None


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run_session(
    fed: Federation, session_id: str, seed_id: str, timeout: float, **config: Any
) -> dict[str, Any]:
    """Start a session from `seed_id`, wait for its end and its validations; its models in order,
    each with its accuracy and seconds from the session's start to the model's commit."""
    validate = config.setdefault("validate", True)
    started = time.monotonic()
    fed.start_session(session_id, model_id=seed_id, **config)
    # When each model was committed, as seen from here: its round's first poll as Finished.
    seen: dict[str, float] = {}

    def ended() -> dict[str, Any] | None:
        for item in fed.session_rounds(session_id):
            if item.get("model_id") and item["status"] == "Finished":
                seen.setdefault(str(item["round_id"]), time.monotonic() - started)
        session = fed.api.get_session(session_id)
        return session if session.get("status") in ("Finished", "Failed", "Stopped") else None

    session = fed.wait_for(
        f"session {session_id} to end", ended, timeout, interval=0.25, watch=("controller",)
    )
    wall = time.monotonic() - started
    log(f"{session_id}: {session['status']} in {wall:.1f} s")
    models = []
    for item in fed.session_rounds(session_id):
        if not item.get("model_id"):
            continue
        models.append(
            {
                "model_id": item["model_id"],
                "seconds": seen.get(str(item["round_id"]), wall),
                "round_data": item.get("round_data") or {},
            }
        )
    if validate and models:
        expected = config.get("requested_clients", 1) if config.get("mode") != "async" else 1

        def validated() -> bool:
            for entry in models:
                entry["accuracy"] = accuracy(fed, entry["model_id"])
            last = fed.api.get_validations(model_id=models[-1]["model_id"], n_max=100)
            return all(m["accuracy"] is not None for m in models) and last.get("count", 0) >= expected

        fed.wait_for(f"the validations of {session_id}", validated, 120, interval=1)
        for number, entry in enumerate(models, start=1):
            staleness = entry["round_data"].get("staleness")
            log(
                f"  {number:3d}  {entry['seconds']:6.1f} s  accuracy {_number(entry['accuracy'])}"
                + (f"  staleness {staleness}" if staleness is not None else "")
            )
    return {"session": session, "models": models, "wall": wall}


def time_to(models: list[dict[str, Any]], target: float) -> float | None:
    for entry in models:
        if entry.get("accuracy") is not None and entry["accuracy"] >= target:
            return float(entry["seconds"])
    return None


# --------------------------------------------------------------------------- stragglers


def stragglers(args: argparse.Namespace, workdir: Path) -> list[str]:
    slow = {client_name(args.clients - 1 - i) for i in range(args.slow)}
    fast_seconds = args.epoch_seconds
    envs = {
        client_name(i): {
            "FEDPLANE_EPOCH_SECONDS": str(fast_seconds * (args.slowdown if client_name(i) in slow else 1))
        }
        for i in range(args.clients)
    }
    base_env = {"FEDPLANE_EPOCHS": str(args.epochs)}
    runs: list[tuple[str, dict[str, Any], str]] = []
    with federation(workdir, args.clients, envs, base_env) as fed:
        seed_id = fed.api.get_active_model()["model"]
        if not args.no_sync:
            result = run_session(
                fed,
                "stragglers-sync",
                seed_id,
                timeout=args.rounds * args.round_timeout + 120,
                rounds=args.rounds,
                round_timeout=args.round_timeout,
                min_clients=args.clients,
                requested_clients=args.clients,
            )
            runs.append((f"sync fedavg, {args.rounds} rounds", result, load_average()))
        for buffer_size in _numbers(args.buffer_size, int):
            for server_lr in _numbers(args.server_lr, float):
                result = run_session(
                    fed,
                    f"stragglers-async-k{buffer_size}-lr{server_lr:g}",
                    seed_id,
                    timeout=args.versions * 30 + 120,
                    rounds=args.versions,
                    round_timeout=args.round_timeout,
                    min_clients=1,
                    requested_clients=args.clients,
                    mode="async",
                    fedbuff={
                        "buffer_size": buffer_size,
                        "max_staleness": args.max_staleness,
                        "server_learning_rate": server_lr,
                    },
                )
                label = f"async FedBuff K={buffer_size} η={server_lr:g}, {args.versions} versions"
                runs.append((label, result, load_average()))
    rows = []
    for label, result, load in runs:
        models = result["models"]
        reached = time_to(models, args.target)
        final = models[-1]["accuracy"] if models else None
        tail = [m["accuracy"] for m in models[-3:] if m.get("accuracy") is not None]
        rows.append(
            [
                label,
                result["session"]["status"],
                _seconds(reached),
                _number(final),
                _number(sum(tail) / len(tail) if tail else None),
                f"{models[-1]['seconds']:.1f}" if models else "-",
                load,
            ]
        )
    header = [
        "session",
        "status",
        f"s to {args.target:g} accuracy",
        "final test accuracy",
        "mean of the last 3 models",
        "s to last model",
        "load average (1/5/15 min)",
    ]
    lines = table(header, rows)
    lines.append("")
    setup = (
        f"{args.clients} clients, {args.slow} of them {args.slowdown:g}x slower "
        f"({fast_seconds:g} s vs {fast_seconds * args.slowdown:g} s per local epoch, {args.epochs} epoch(s))"
    )
    lines.append(setup)
    reached = [time_to(result["models"], args.target) for _, result, _ in runs]
    if not args.no_sync and reached[0]:
        for (label, _, _), seconds in zip(runs[1:], reached[1:], strict=True):
            if seconds:
                lines.append(f"{label}: wall time to {args.target:g} / sync's = {seconds / reached[0]:.2f}")
    return lines


# --------------------------------------------------------------------------- privacy

OPERATOR = "experiments"


class AdminPages:
    """The admin site as an operator sees it: a superuser logged in with a browser's session."""

    def __init__(self, fed: Federation) -> None:
        import requests

        self.url = fed.url
        password = secrets.token_urlsafe(16)
        done = fed.manage(
            "createsuperuser",
            "--noinput",
            "--username",
            OPERATOR,
            "--email",
            "operator@example.org",
            extra_env={"DJANGO_SUPERUSER_PASSWORD": password},
        )
        if done.returncode != 0:
            raise RuntimeError(f"createsuperuser failed: {done.stderr}")
        self.http = requests.Session()
        login = f"{self.url}/admin/login/"
        self.http.get(login, timeout=30).raise_for_status()
        answer = self.http.post(
            login,
            data={
                "username": OPERATOR,
                "password": password,
                "csrfmiddlewaretoken": self.http.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": login},
            timeout=30,
        )
        answer.raise_for_status()
        if "sessionid" not in self.http.cookies:
            raise RuntimeError("the admin login was refused")

    def session_page(self, session_id: str) -> str:
        """The text of the session's change page, found by searching the sessions list for its id."""
        listing = self.http.get(
            f"{self.url}/admin/fl_sessions/session/", params={"q": session_id}, timeout=30
        )
        listing.raise_for_status()
        found = re.search(r'href="(/admin/fl_sessions/session/[^"/]+/change/)', listing.text)
        if not found:
            raise RuntimeError(f"session {session_id} is not in the admin's sessions list")
        page = self.http.get(self.url + html.unescape(found.group(1)), timeout=30)
        page.raise_for_status()
        return page.text

    def shows(self, session_id: str, accuracy: float | None, epsilon: float | None) -> str:
        """Whether the session page shows the final accuracy (the rounds table's 4 decimals) and,
        for a DP session, the ε spent (its privacy summary's 4 significant digits)."""
        text = self.session_page(session_id)
        wanted = [] if accuracy is None else [f"{accuracy:.4f}"]
        if epsilon is not None:
            wanted.append(f"ε = {epsilon:.4g}")
        missing = [item for item in wanted if item not in text]
        return "yes" if not missing else "missing " + ", ".join(missing)


def privacy(args: argparse.Namespace, workdir: Path) -> list[str]:
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    base_env = {"FEDPLANE_EPOCHS": str(args.epochs)}
    rows = []
    with federation(workdir, args.clients, {}, base_env, gunicorn=True) as fed:
        seed_id = fed.api.get_active_model()["model"]
        admin = AdminPages(fed)
        common = {
            "rounds": args.rounds,
            "round_timeout": args.round_timeout,
            "min_clients": args.clients,
            "requested_clients": args.clients,
        }
        runs: list[tuple[str, float | None]] = [("none", None)] + [(f"{e:g}", e) for e in epsilons]
        for label, target in runs:
            config = dict(common)
            if target is not None:
                # The noise z the controller derives for the target over the rounds; the clip-norm
                # estimate's count noise must exceed z/2, and with few clients m/20 cannot.
                z = noise_multiplier_for(target, delta=DELTA, sampling_rate=1.0, rounds=args.rounds)
                config["dp"] = {
                    "clip_norm": args.clip_norm,
                    "target_epsilon": target,
                    "delta": DELTA,
                    "target_quantile": args.target_quantile,
                    "count_noise_std": args.count_noise * z,
                }
            session_id = f"privacy-{'fedavg' if target is None else 'dp-eps' + label}"
            result = run_session(
                fed, session_id, seed_id, timeout=args.rounds * args.round_timeout + 120, **config
            )
            session = result["session"]
            spent = (session.get("privacy") or {}).get("epsilon")
            noise = (session.get("privacy") or {}).get("noise_multiplier")
            last = (result["models"][-1]["round_data"].get("privacy") or {}) if result["models"] else {}
            final = result["models"][-1]["accuracy"] if result["models"] else None
            rows.append(
                [
                    "fedavg" if target is None else "DP-FedAvg, adaptive clipping",
                    label,
                    _number(spent, 2),
                    _number(noise, 3),
                    _number(last.get("clip_norm"), 3),
                    str(len(result["models"])),
                    _number(final),
                    admin.shows(session_id, final, spent),
                    load_average(),
                ]
            )
    header = [
        "aggregation",
        "target ε",
        f"ε spent (δ = {DELTA:g})",
        "noise multiplier z",
        "last clip norm",
        "rounds",
        "test accuracy",
        "admin page shows them",
        "load average (1/5/15 min)",
    ]
    lines = table(header, rows)
    lines.append("")
    lines.append(
        f"{args.clients} clients, {args.rounds} rounds x {args.epochs} local epoch(s), "
        f"starting clip norm {args.clip_norm:g}, target quantile {args.target_quantile:g}, "
        f"count noise std = {args.count_noise:g} z"
    )
    return lines


# --------------------------------------------------------------------------- output


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _numbers(text: str, kind: type) -> list[Any]:
    return [kind(item) for item in str(text).split(",") if item]


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def _number(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="experiment", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--clients", type=int, default=6)
    common.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    common.add_argument("--round-timeout", type=int, default=300)
    common.add_argument("--workdir", type=Path, help="keep the federation's files and logs here")

    slow = sub.add_parser(
        "stragglers", parents=[common], help="sync fedavg vs async FedBuff with slow clients"
    )
    slow.add_argument("--slow", type=int, default=2, help="how many clients are slow")
    slow.add_argument("--slowdown", type=float, default=5.0, help="how many times slower they train")
    slow.add_argument("--epoch-seconds", type=float, default=2.0, help="a fast client's seconds per epoch")
    slow.add_argument("--target", type=float, default=0.93, help="test accuracy to reach")
    slow.add_argument("--rounds", type=int, default=6, help="synchronous rounds")
    slow.add_argument("--versions", type=int, default=24, help="asynchronous model versions")
    slow.add_argument("--buffer-size", default="3", help="FedBuff K (a comma-separated list: a session each)")
    slow.add_argument("--max-staleness", type=int, default=8)
    slow.add_argument(
        "--server-lr", default="1,0.7", help="FedBuff η (a comma-separated list: a session each)"
    )
    slow.add_argument("--no-sync", action="store_true", help="only the asynchronous session(s)")

    dp = sub.add_parser("privacy", parents=[common], help="accuracy at ε ≈ 1, 3, 8 beside non-private fedavg")
    dp.add_argument("--rounds", type=int, default=8)
    dp.add_argument("--epsilons", default="1,3,8,100,1000")
    dp.add_argument("--clip-norm", type=float, default=1.0, help="starting clip norm C")
    dp.add_argument("--target-quantile", type=float, default=0.5)
    dp.add_argument(
        "--count-noise", type=float, default=1.0, help="the clip-norm count noise std, in multiples of z"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="digits-exp-")))
        workdir.mkdir(parents=True, exist_ok=True)
        run = stragglers if args.experiment == "stragglers" else privacy
        lines = run(args, workdir)
    print("\n".join(lines))
    print(f"({time.monotonic() - started:.0f} s, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
