"""Run a whole federation on this machine and train the digits example.

Starts the controller (gunicorn), a Celery worker, a Celery beat, one combiner and three clients on the
embedded defaults (SQLite, files under var/demo, Celery's filesystem broker), uploads
examples/digits, runs a 5-round session, prints a table per round and stops everything it
started. With --serve the control plane stays up until Ctrl-C. --serve-only (`make serve`) starts
just the controller, a worker and a beat on var/ (or FEDPLANE_VAR_DIR), keeping what is there,
until Ctrl-C. With --auth every process runs with
a fresh FEDN_JWT_SECRET_KEY and a token of its role from `manage.py fedplane_token`, handed over in
a file of mode 0600 (never on the command line, where `ps` shows it). DATABASE_URL,
CELERY_BROKER_URL and S3_* in the environment are used instead of the defaults when set.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# How long the table waits for the last rounds' validations after the session has ended.
VALIDATIONS_AFTER_END = 30.0
sys.path.insert(0, str(ROOT))

from fedplane.api_client import APIClient  # noqa: E402
from fedplane.tokenfile import write_token_file  # noqa: E402


class Federation:
    def __init__(self, var_dir: Path, port: int, combiner_port: int, clients: int) -> None:
        self.var_dir = var_dir
        self.port = port
        self.combiner_port = combiner_port
        self.clients = clients
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.env = {
            **os.environ,
            "FEDPLANE_VAR_DIR": str(var_dir),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "PYTHONPATH": str(ROOT),
            "FEDPLANE_CONTROLLER_PORT": str(port),
        }
        self.logs = var_dir / "logs"

    def run(self, *args: str, **kwargs) -> None:
        subprocess.run(args, cwd=ROOT, env=self.env, check=True, **kwargs)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append((name, process))

    def stop(self) -> None:
        # A second Ctrl-C must not cut the shutdown short and leave processes running; it has its
        # own deadline, after which the stragglers are killed.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in time; killing it")
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} exited with code {process.returncode}; its log ends:\n{tail}")


def mint_token_files(federation: Federation, subjects: dict[str, str]) -> dict[str, Path]:
    """A token file (mode 0600) per subject -> role, minted with the management command as an
    operator would; each token's subject is the name of the process that holds it."""
    secrets_dir = federation.var_dir / "secrets"
    files = {}
    for subject, role in subjects.items():
        done = subprocess.run(
            [PY, "manage.py", "fedplane_token", "--role", role, "--subject", subject, "--days", "1"],
            cwd=ROOT,
            env=federation.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        files[subject] = write_token_file(secrets_dir / f"{subject}.token", done.stdout.strip())
    return files


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_for(what: str, predicate, timeout: float, federation: Federation) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        federation.check_alive()
        try:
            if predicate():
                return
        except Exception:  # the thing waited for is not up yet
            pass
        time.sleep(0.5)
    raise SystemExit(f"Timed out after {timeout:.0f} s waiting for {what}; logs are in {federation.logs}")


def prepare_database_and_static(federation: Federation) -> None:
    """Migrate, and collect the static files the controller serves itself (hashed and compressed)."""
    federation.run(PY, "manage.py", "migrate", "-v0")
    federation.run(PY, "manage.py", "collectstatic", "--noinput", "-v0")


def start_control_plane(federation: Federation, api: APIClient) -> None:
    """The controller (gunicorn), a Celery worker and a Celery beat, each a process of its own."""
    federation.start(
        "controller",
        *(PY, "-m", "gunicorn", "-c", str(ROOT / "controlplane" / "gunicorn_conf.py")),
        *("--bind", f"127.0.0.1:{federation.port}"),
    )
    federation.start(
        "worker",
        *(PY, "-m", "celery", "-A", "controlplane", "worker", "--pool=solo"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"),
    )
    # Not the worker's embedded beat (-B): it outlives a worker killed with SIGKILL, and the
    # restarted worker would run a second one. Further beats stand by (controlplane/beat.py).
    federation.start("beat", PY, "-m", "celery", "-A", "controlplane", "beat", "-l", "info")
    wait_for("the controller", lambda: api.get_controller_status()["state"], 60, federation)


def shown(path: Path) -> str:
    """A path as the user would type it from the checkout."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def serve_only(args: argparse.Namespace) -> int:
    """`make serve`: the control plane on what var/ holds, until Ctrl-C; nothing is reset."""
    var_dir = Path(args.var_dir or os.environ.get("FEDPLANE_VAR_DIR") or ROOT / "var").resolve()
    if not port_free(args.port):
        print(f"Port {args.port} is in use; stop what uses it or pass --port.", file=sys.stderr)
        return 2
    (var_dir / "logs").mkdir(parents=True, exist_ok=True)
    federation = Federation(var_dir, args.port, args.combiner_port, 0)
    url = f"http://127.0.0.1:{args.port}"
    print(f"Serving the data in {shown(var_dir)}/ (database, models, logs).")
    demo_dir = ROOT / "var" / "demo"
    if var_dir != demo_dir and (demo_dir / "fedplane.sqlite3").exists():
        print(f"The demo's data is in {shown(demo_dir)}/: make serve ARGS='--var-dir {shown(demo_dir)}'")
    try:
        prepare_database_and_static(federation)
        print(f"Starting the controller, a Celery worker and a Celery beat (logs in {federation.logs}) ...")
        start_control_plane(federation, APIClient("127.0.0.1", args.port))
        print(f"Admin:    {url}/admin/   (an admin user: {PY} manage.py createsuperuser)")
        print(f"API:      {url}/api/v1/   docs {url}/api/docs/ and {url}/api/redoc/")
        print("Serving; press Ctrl-C to stop everything.")
        while True:
            federation.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopped.")
        return 0
    finally:
        print("Stopping the controller, the worker and the beat ...")
        federation.stop()


def build_example(work: Path) -> tuple[Path, Path]:
    client_dir = ROOT / "examples" / "digits" / "client"
    package = work / "digits.tgz"
    with tarfile.open(package, "w:gz") as archive:
        archive.add(client_dir, arcname="client", filter=lambda m: None if "__pycache__" in m.name else m)
    seed = work / "seed.npz"
    subprocess.run(
        [PY, "model.py", "build", str(seed)], cwd=client_dir, check=True, stdout=subprocess.DEVNULL
    )
    return package, seed


def round_rows(api: APIClient, session_id: str) -> list[dict]:
    rounds = api.get_rounds()["result"]
    rows = []
    for item in sorted(rounds, key=lambda r: int(r["round_id"])):
        if item.get("session_id") != session_id:
            continue
        validations = api.get_validations(session_id=session_id, model_id=item.get("model_id") or "-")[
            "result"
        ]
        metrics = [json.loads(v["data"]) for v in validations]
        rows.append(
            {
                "round": item["round_id"],
                "status": item["status"],
                "participants": len(item.get("round_data", {}).get("participants_clients", [])),
                "accuracy": mean(m["test_accuracy"] for m in metrics) if metrics else None,
                "loss": mean(m["test_loss"] for m in metrics) if metrics else None,
                "validations": len(metrics),
                "expected_validations": item.get("round_data", {}).get("validation", {}).get("expected", 0),
                "reports": item.get("combiners", []),
            }
        )
    return rows


def row_ready(row: dict, session_over: bool) -> bool:
    """A round's line is printed once its validations are in: a round's model is validated with
    the next round's start, so a round is finished before its accuracy is known."""
    if row["status"] in ("Failed", "Stopped"):
        return True
    if row["status"] not in ("Finished", "Success"):
        return False
    return session_over or row["validations"] >= max(1, row["expected_validations"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="keep the control plane up after the session")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--combiner-port", type=int, default=12080)
    parser.add_argument(
        "--serve-only", action="store_true", help="only the controller, a worker and a beat, until Ctrl-C"
    )
    parser.add_argument("--var-dir", help="default var/demo, emptied first (--serve-only: var/, kept)")
    parser.add_argument("--auth", action="store_true", help="switch token auth on for every process")
    args = parser.parse_args()

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if args.serve_only:
        return serve_only(args)
    var_dir = Path(args.var_dir or ROOT / "var" / "demo").resolve()
    for port in (args.port, args.combiner_port):
        if not port_free(port):
            print(
                f"Port {port} is in use; stop what uses it or pass --port/--combiner-port.", file=sys.stderr
            )
            return 2
    if var_dir.exists():
        shutil.rmtree(var_dir)
    (var_dir / "logs").mkdir(parents=True)
    federation = Federation(var_dir, args.port, args.combiner_port, args.clients)
    url = f"http://127.0.0.1:{args.port}"
    password = secrets.token_urlsafe(9)
    began = time.monotonic()
    serving = False
    try:
        print("Preparing the database and the static files ...")
        prepare_database_and_static(federation)
        subprocess.run(
            [
                PY,
                "manage.py",
                "createsuperuser",
                "--noinput",
                "--username",
                "admin",
                "--email",
                "admin@example.com",
            ],
            cwd=ROOT,
            env={**federation.env, "DJANGO_SUPERUSER_PASSWORD": password},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        client_names = [f"client-{index + 1}" for index in range(args.clients)]
        token_files: dict[str, Path] = {}
        admin_token = None
        if args.auth:
            federation.env["FEDN_JWT_SECRET_KEY"] = secrets.token_urlsafe(48)
            token_files = mint_token_files(
                federation,
                {"operator": "admin", "combiner": "combiner", **dict.fromkeys(client_names, "client")},
            )
            admin_token = token_files["operator"].read_text().strip()
            # Controller and worker present the admin token on their Control calls to the combiner;
            # the environment, unlike argv, is readable by this user only.
            federation.env["FEDPLANE_CONTROL_TOKEN"] = admin_token
            print(
                "Auth is on: tokens minted with manage.py fedplane_token for the operator, the combiner "
                f"and each client, in {var_dir / 'secrets'}"
            )
        print(
            "Starting the controller, a Celery worker, a Celery beat, a combiner and "
            f"{args.clients} clients (logs in {federation.logs}) ..."
        )
        api = APIClient("127.0.0.1", args.port, token=admin_token)
        start_control_plane(federation, api)
        federation.start(
            "combiner",
            PY,
            "-m",
            "combiner_node",
            "--name",
            "combiner",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.combiner_port),
            "--controller",
            url,
            "--store",
            str(var_dir / "media"),
            "--workdir",
            str(var_dir / "combiner"),
            *(["--token-file", str(token_files["combiner"])] if args.auth else []),
        )
        wait_for("the combiner to register", lambda: api.get_combiners_count() >= 1, 60, federation)

        package, seed = build_example(var_dir)
        print(api.set_active_package(str(package), "numpyhelper", name="digits")["message"])
        print(api.set_active_model(str(seed))["message"])

        for index, name in enumerate(client_names):
            workdir = var_dir / "clients" / name
            workdir.mkdir(parents=True)
            federation.start(
                name,
                PY,
                "-m",
                "fedplane.client",
                "start",
                "--controller",
                url,
                "--name",
                name,
                "--workdir",
                str(workdir / "package"),
                *(["--token-file", str(token_files[name])] if args.auth else []),
                cwd=workdir,
                extra_env={"FEDPLANE_CLIENT_INDEX": str(index), "FEDPLANE_NUM_CLIENTS": str(args.clients)},
            )
        wait_for(
            f"{args.clients} clients online",
            lambda: api.get_active_clients()["count"] >= args.clients,
            120,
            federation,
        )

        session_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        answer = api.start_session(
            id=session_id,
            rounds=args.rounds,
            round_timeout=60,
            min_clients=args.clients,
            requested_clients=args.clients,
        )
        if not answer.get("success"):
            raise SystemExit(f"The session did not start: {answer.get('message')}")
        print(f"\nSession {session_id}: {args.rounds} rounds of fedavg over {args.clients} clients\n")
        print(
            "Each client holds its own share of scikit-learn's 8x8 handwritten digits and trains a small\n"
            "neural network (examples/digits) on it; each round the combiner averages their updates into\n"
            "a new global model. accuracy and loss are that model's on the clients' held-out test digits\n"
            "(the mean over clients); seconds is how long the round took.\n"
        )
        print(f"{'round':>5}  {'participants':>12}  {'accuracy':>8}  {'loss':>8}  {'seconds':>8}")
        printed: set[str] = set()
        last = time.monotonic()
        deadline = time.monotonic() + 60 * args.rounds + 120
        status = ""
        # Once the session has ended, its last validations still come in for a moment.
        validations_deadline: float | None = None
        while time.monotonic() < deadline:
            federation.check_alive()
            status = api.get_session_status(session_id)
            if status in ("Finished", "Failed", "Stopped") and validations_deadline is None:
                validations_deadline = time.monotonic() + VALIDATIONS_AFTER_END
            rows = round_rows(api, session_id)
            late = validations_deadline is not None and time.monotonic() >= validations_deadline
            for row in rows:
                if row["round"] in printed:
                    continue
                if not row_ready(row, session_over=late):
                    break  # the table stays in round order
                now = time.monotonic()
                accuracy = f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "-"
                loss = f"{row['loss']:.3f}" if row["loss"] is not None else "-"
                print(
                    f"{row['round']:>5}  {row['participants']:>12}  {accuracy:>8}  {loss:>8}  {now - last:>8.1f}"
                )
                printed.add(row["round"])
                last = now
            if late or (validations_deadline is not None and {row["round"] for row in rows} <= printed):
                break
            time.sleep(0.5)
        session = api.get_session(session_id)
        print(f"\nSession {session['status']}: {session.get('status_reason', '')}")
        print(f"Total time {time.monotonic() - began:.0f} s\n")
        print(f"Admin:    {url}/admin/   user admin, password {password}")
        print(f"API:      {url}/api/v1/   docs {url}/api/docs/ and {url}/api/redoc/")
        if args.auth:
            print(
                f"Token:    export FEDN_AUTH_TOKEN=$(cat {token_files['operator']})"
                "   (role admin, for fedplane and APIClient)"
            )
        if not args.serve:
            print(
                "\nThe demo stops everything it started now, so these addresses answer only while it runs\n"
                f"with --serve: `make demo ARGS=--serve` keeps it up; `make serve ARGS='--var-dir {shown(var_dir)}'`\n"
                "serves this demo's data again (database, models, admin user) without training."
            )
        if args.serve:
            print("\nServing; press Ctrl-C to stop everything.")
            serving = True
            while True:
                federation.check_alive()
                time.sleep(1)
        return 0 if session["status"] == "Finished" else 1
    except KeyboardInterrupt:
        # Ctrl-C is how serve mode ends; before that it cuts the demo short.
        print("\nStopped." if serving else "\nInterrupted.")
        return 0 if serving else 130
    finally:
        print("Stopping what the demo started ...")
        federation.stop()


if __name__ == "__main__":
    sys.exit(main())
