"""Starting FEDn 0.9.5's own `fedn client start` from the .fedn095 venv (scripts/fedn_venv.sh)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tests.e2e.harness import ROOT, Federation, Process

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
