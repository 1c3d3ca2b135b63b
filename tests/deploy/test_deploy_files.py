"""What can be checked of deploy/ without starting it: systemd's own verifier on the units, the
units against the Procfile, the Containerfile without a builder, and docs/deploy.md's environment
table against the variables the code reads."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.deployfiles import (
    ALL_UNITS,
    CONFIG_DIR,
    DEPLOY,
    PROCFILE_UNITS,
    ROOT,
    STATE_DIR,
    Installation,
    code_variables,
    dockerignore_patterns,
    documented_variables,
    ignored,
    launch,
    read_containerfile,
    read_procfile,
    read_unit,
    relative_to_install,
)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def installed_copy(unit_name: str, installation: Installation, target: Path, instance: str) -> Path:
    """The unit as it would be installed on this checkout; a template as one of its instances."""
    text = installation.path((DEPLOY / "systemd" / unit_name).read_text())
    name = unit_name.replace("@.", f"@{instance}.")
    path = target / name
    path.write_text(text)
    return path


needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd); units not verified",
)
# systemd-analyze security's exposure, times ten: at most 3.0 ("OK"; 10 is no sandbox at all).
MAX_EXPOSURE = 30


def installed_unit(unit_name: str, tmp_path: Path) -> Path:
    """The unit on this checkout, with its environment files present; a template as an instance."""
    installation = Installation(root=ROOT, config_dir=tmp_path / "etc", state_dir=tmp_path / "state")
    installation.config_dir.mkdir()
    for env_file in ("fedplane.env", "combiner-test.env", "client-test.env"):
        (installation.config_dir / env_file).write_text("FEDPLANE_CONTROLLER=http://127.0.0.1:8092\n")
    return installed_copy(unit_name, installation, tmp_path, instance="test")


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_systemd_analyze
@pytest.mark.parametrize("unit_name", ALL_UNITS)
def test_systemd_analyze_verifies_the_unit(unit_name: str, tmp_path: Path) -> None:
    """systemd's verifier finds no error and no warning (unknown keys, bad values, missing binaries)."""
    path = installed_unit(unit_name, tmp_path)
    done = systemd_analyze("verify", "--man=no", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Unknown keys and unparsable values are only warnings to systemd; here they fail.
    assert done.stderr.strip() == "", done.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit_name", ALL_UNITS)
def test_systemd_analyze_rates_the_sandbox_ok(unit_name: str, tmp_path: Path) -> None:
    path = installed_unit(unit_name, tmp_path)
    done = systemd_analyze(
        "security", "--offline=yes", "--no-pager", f"--threshold={MAX_EXPOSURE}", str(path), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


@pytest.mark.parametrize("unit_name", ALL_UNITS)
def test_unit_runs_unprivileged_sandboxed_and_restarts(unit_name: str) -> None:
    unit = read_unit(unit_name)
    service = dict(unit.sections["Service"])
    assert service["User"] == "fedplane"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == STATE_DIR
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > 0
    assert unit.values("Service", "EnvironmentFile"), "no EnvironmentFile="
    assert all(
        path.lstrip("-").startswith(CONFIG_DIR + "/") for path in unit.values("Service", "EnvironmentFile")
    )
    assert unit.value("Install", "WantedBy") == "multi-user.target"


def test_procfile_and_units_run_the_same_commands(tmp_path: Path) -> None:
    """Each Procfile line is its unit's ExecStart, run from the checkout's root."""
    installation = Installation(root=Path("/opt/fedplane"), config_dir=tmp_path, state_dir=tmp_path / "state")
    (tmp_path / "fedplane.env").write_text("")
    procfile = read_procfile()
    assert set(procfile) == set(PROCFILE_UNITS)
    for process, unit_name in PROCFILE_UNITS.items():
        spec = launch(read_unit(unit_name), installation, {}, instance="c1")
        assert spec.cwd == Path("/opt/fedplane")
        assert relative_to_install(spec.argv) == shlex.split(procfile[process]), process


# -- the Containerfile ---------------------------------------------------------------------------


def test_containerfile_copies_what_exists_and_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    copies = [i for i in read_containerfile() if i.keyword in ("COPY", "ADD")]
    assert copies
    for instruction in copies:
        assert instruction.keyword == "COPY", "ADD fetches and unpacks; COPY says what it does"
        *sources, _destination = shlex.split(instruction.arguments)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
            assert not ignored(source, patterns), f"COPY {source}: left out by .dockerignore"
    # The runtime packages and what the processes start with are all copied.
    copied = {source.rstrip("/") for i in copies for source in shlex.split(i.arguments)[:-1]}
    for needed in ("manage.py", "controlplane", "apps", "combiner_node", "fedplane", "requirements.txt"):
        assert needed in copied, needed
    for needed in ("deploy/Procfile", "deploy/run-process", "deploy/healthcheck.py"):
        assert needed in copied, needed


def test_containerfile_installs_pinned_requirements_as_a_non_root_user() -> None:
    instructions = read_containerfile()
    assert instructions[0].keyword == "FROM"
    assert instructions[0].arguments == "python:3.11-slim"
    runs = " && ".join(i.arguments for i in instructions if i.keyword == "RUN")
    installed = re.findall(r"pip install [^&]*-r (\S+)", runs)
    assert installed == ["requirements.txt"]
    requirements = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert requirements
    unpinned = [
        line for line in requirements if not re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[A-Za-z0-9_.]+", line)
    ]
    assert unpinned == [], f"requirements.txt lines without an exact pin: {unpinned}"
    assert "manage.py collectstatic --noinput" in runs
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"
    # The user is switched to after everything is installed and collected as root.
    last_user = max(index for index, i in enumerate(instructions) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in instructions[last_user:])


def test_container_runs_the_procfile_and_checks_health_with_the_tested_probe() -> None:
    """ENTRYPOINT is deploy/run-process (the Procfile's lines, which the units run), CMD the web
    process, and HEALTHCHECK the probe that tests/deploy/test_deploy_run.py runs on the served stack."""
    instructions = {i.keyword: i.arguments for i in read_containerfile()}
    workdir = instructions["WORKDIR"]
    assert workdir == "/opt/fedplane", "the units' installed root, so every command reads the same"
    assert instructions["ENTRYPOINT"] == f'["{workdir}/deploy/run-process"]'
    assert instructions["CMD"] == '["web"]'
    assert "web" in read_procfile()
    healthcheck = instructions["HEALTHCHECK"]
    assert healthcheck.split(" CMD ", 1)[1] == (
        f'["{workdir}/.venv/bin/python", "{workdir}/deploy/healthcheck.py"]'
    ), healthcheck
    assert (DEPLOY / "run-process").stat().st_mode & 0o111, "run-process is not executable"


# -- docs/deploy.md's environment table ---------------------------------------------------------


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = documented_variables()
    missing = {name: sorted(modules) for name, modules in code_variables().items() if name not in documented}
    assert missing == {}, f"read by the code, not in docs/deploy.md's Environment table: {missing}"


def test_every_documented_variable_is_read_by_the_code() -> None:
    read = code_variables()
    invented = sorted(name for name in documented_variables() if name not in read)
    assert invented == [], f"in docs/deploy.md's Environment table, read nowhere: {invented}"


def test_the_example_environment_file_names_only_documented_variables() -> None:
    documented = documented_variables()
    named = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (DEPLOY / "fedplane.env.example").read_text(), re.MULTILINE)
    assert named
    assert sorted(set(named) - set(documented)) == []


def test_nginx_body_limit_is_the_controllers_upload_limit() -> None:
    """A lower limit at the proxy answers 413 to uploads the controller takes."""
    from django.conf import settings

    config = (DEPLOY / "nginx" / "fedplane.conf").read_text()
    (size,) = re.findall(r"^\s*client_max_body_size\s+(\d+)([kmg]?);", config, re.MULTILINE)
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[size[1]]
    assert int(size[0]) * factor == settings.FEDPLANE_MAX_UPLOAD_BYTES


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("environ", "target"),
    [
        ({}, ("127.0.0.1", 8092, "127.0.0.1")),
        (
            {"FEDPLANE_BIND": "0.0.0.0:8092", "DJANGO_ALLOWED_HOSTS": "fedplane.example.org,127.0.0.1"},
            ("127.0.0.1", 8092, "fedplane.example.org"),
        ),
        (
            {"FEDPLANE_BIND": "[::]:9000", "DJANGO_ALLOWED_HOSTS": ".example.org"},
            ("127.0.0.1", 9000, "example.org"),
        ),
        ({"FEDPLANE_BIND": "10.0.0.5:8092", "DJANGO_ALLOWED_HOSTS": "*"}, ("10.0.0.5", 8092, "10.0.0.5")),
    ],
)
def test_healthcheck_asks_where_gunicorn_listens_with_an_allowed_host(
    environ: dict[str, str], target: tuple[str, int, str]
) -> None:
    assert load_healthcheck().probe_target(environ) == target
