"""Starting FEDn 0.9.5's own `fedn client start` from the .fedn095 venv (scripts/fedn_venv.sh)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.e2e.harness import ROOT, Federation, Process, prepare_backend

FEDN_VENV = ROOT / ".fedn095"
FEDN = FEDN_VENV / "bin" / "fedn"
PROJECT_BIN = ROOT / ".venv" / "bin"


def spawn_fedn_client(federation: Federation, name: str, args: Sequence[str], workdir: Path) -> Process:
    """`fedn client start <args>` in `workdir`, as installed in its venv.

    The package's entry points run `python model.py ...`: the project venv comes first on PATH so
    that `python` has numpy and scikit-learn, while the client itself is FEDn's (nothing of this
    repository on its path).
    """
    return federation.spawn(
        name,
        [str(FEDN), "client", "start", *args],
        env={
            "PATH": f"{PROJECT_BIN}{os.pathsep}{FEDN_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": "",
            "VIRTUAL_ENV": str(FEDN_VENV),
        },
        cwd=workdir,
    )


@contextlib.contextmanager
def federation_with_fedn_client(
    var_dir: Path, client_name: str, combiner: str = "combiner"
) -> Iterator[Federation]:
    """Controller, worker, one combiner and the digits package, with FEDn 0.9.5's client online."""
    backend = prepare_backend(var_dir)
    running = Federation(backend, client_env={"FEDPLANE_EPOCHS": "1"})
    try:
        running.start_controller()
        running.start_worker()
        running.start_combiner(combiner)
        running.upload_digits()
        workdir = running.var_dir / "client1"
        workdir.mkdir()
        args = ["-d", "127.0.0.1", "-p", str(running.port), "-n", client_name]
        spawn_fedn_client(running, client_name, args, workdir)
        running.wait_clients_online(1, timeout=120)
        yield running
    finally:
        running.stop()
        backend.close()
