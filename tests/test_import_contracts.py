"""The import contracts of pyproject.toml hold on the tree, and they do catch what they forbid.

Each violation is planted in a copy of the packages, so the contracts are shown to break on a
circle, on an import against the layers, and on Django inside the user-side SDK.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("apps", "controlplane", "combiner_node", "fedplane")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "migrations")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def plant(root: Path, module: str, source: str) -> Path:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(source)
    return path


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_the_copy_keeps_every_contract_before_anything_is_planted(tree_copy: Path) -> None:
    result = lint_imports(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        pytest.param(
            "apps.packages.planted",
            "from apps.sessions import models\n",
            "apps.packages is not allowed to import apps.sessions",
            id="a-base-app-imports-sessions",
        ),
        pytest.param(
            "apps.combiners.planted",
            "def late():\n    from apps.clients import models\n",
            "apps.combiners is not allowed to import apps.clients",
            id="a-late-import-against-the-layers",
        ),
        pytest.param(
            "controlplane.planted",
            "import apps.models.models\n",
            "controlplane is not allowed to import apps.models",
            id="the-ground-floor-imports-an-app",
        ),
        pytest.param(
            "fedplane.planted",
            "import django.conf\n",
            "fedplane.planted -> django",
            id="the-sdk-imports-django",
        ),
        pytest.param(
            "combiner_node.planted",
            "from controlplane import tokens\n",
            "combiner_node.planted -> controlplane",
            id="the-combiner-imports-the-control-plane",
        ),
        pytest.param(
            "apps.sessions.choices",
            None,
            "No cycles are allowed in apps.sessions",
            id="a-circle-inside-an-app",
        ),
    ],
)
def test_a_planted_violation_breaks_a_contract(
    tree_copy: Path, module: str, source: str | None, broken: str
) -> None:
    planted: list[Path] = []
    try:
        if source is None:
            # models imports choices; choices importing models closes a circle.
            choices = tree_copy / "apps" / "sessions" / "choices.py"
            original = choices.read_text()
            choices.write_text(original + "\nfrom apps.sessions import models  # noqa\n")
        else:
            planted.append(plant(tree_copy, module, source))
        result = lint_imports(tree_copy)
    finally:
        for path in planted:
            path.unlink()
        if source is None:
            choices.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in " ".join(result.stdout.split()), result.stdout
