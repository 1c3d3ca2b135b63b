"""The deploy checks refuse the development secret key and a wildcard host, outside the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import Tags, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from controlplane.checks import refuse_insecure_deployment
from controlplane.settings.base import DEVELOPMENT_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
REAL_KEY = "k3v9-Wq2xZ7pLm4Rt8Yb1Nc6Hd0Fs5Gj2Ka9Ue3Io7Pw1Qx4Vz8By2Cn6Dm0El5"
ALL_DEFAULTS = {"SECRET_KEY": DEVELOPMENT_SECRET_KEY, "ALLOWED_HOSTS": ["*"], "FEDPLANE_DEMO": False}


def fedplane_errors() -> list[str]:
    found = run_checks(include_deployment_checks=True, tags=[Tags.security])
    return sorted(message.id for message in found if message.id.startswith("fedplane."))


def test_defaults_outside_the_demo_are_errors() -> None:
    with override_settings(**ALL_DEFAULTS):
        assert fedplane_errors() == ["fedplane.E001", "fedplane.E002"]
        with pytest.raises(SystemCheckError, match=r"fedplane\.E001"):
            call_command("check", "--deploy")
        with pytest.raises(SystemCheckError, match=r"fedplane\.E002"):
            refuse_insecure_deployment()


@pytest.mark.parametrize(
    ("changed", "left"),
    [
        ({"SECRET_KEY": REAL_KEY}, ["fedplane.E002"]),
        ({"ALLOWED_HOSTS": ["fl.example.org"]}, ["fedplane.E001"]),
    ],
)
def test_each_check_fires_on_its_own_setting(changed: dict, left: list[str]) -> None:
    with override_settings(**{**ALL_DEFAULTS, **changed}):
        assert fedplane_errors() == left


def test_silent_in_the_demo() -> None:
    with override_settings(**{**ALL_DEFAULTS, "FEDPLANE_DEMO": True}):
        assert fedplane_errors() == []
        refuse_insecure_deployment()


def test_silent_with_a_real_key_and_named_hosts() -> None:
    with override_settings(
        SECRET_KEY=REAL_KEY, ALLOWED_HOSTS=["fl.example.org", ".internal"], FEDPLANE_DEMO=False
    ):
        assert fedplane_errors() == []
        refuse_insecure_deployment()


def test_only_deploy_checks_see_the_defaults() -> None:
    """`make check`, migrate and runserver run the other checks: the defaults pass those."""
    with override_settings(**ALL_DEFAULTS):
        found = run_checks(include_deployment_checks=False)
    assert [message.id for message in found if message.id.startswith("fedplane.")] == []


def run_in_a_fresh_process(tmp_path: Path, argv: list[str], **extra: str) -> subprocess.CompletedProcess:
    """The defaults, as an operator who set nothing gets them."""
    unset = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "FEDPLANE_DEMO", "DATABASE_URL")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "FEDPLANE_VAR_DIR": str(tmp_path / "var"),
            "PYTHONPATH": str(ROOT),
            **extra,
        }
    )
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_manage_py_check_deploy_fails_on_the_defaults_and_passes_in_the_demo(tmp_path: Path) -> None:
    command = [sys.executable, "manage.py", "check", "--deploy"]
    refused = run_in_a_fresh_process(tmp_path, command)
    assert refused.returncode != 0
    assert "fedplane.E001" in refused.stderr and "fedplane.E002" in refused.stderr
    demo = run_in_a_fresh_process(tmp_path, command, FEDPLANE_DEMO="1")
    assert demo.returncode == 0, demo.stderr
    assert "fedplane." not in demo.stderr


def test_wsgi_application_refuses_to_load_on_the_defaults(tmp_path: Path) -> None:
    load = [sys.executable, "-c", "import controlplane.wsgi"]
    refused = run_in_a_fresh_process(tmp_path, load)
    assert refused.returncode != 0
    assert "Refusing to serve an insecure deployment" in refused.stderr
    assert "fedplane.E001" in refused.stderr
    served = run_in_a_fresh_process(
        tmp_path, load, DJANGO_SECRET_KEY=REAL_KEY, DJANGO_ALLOWED_HOSTS="fl.example.org"
    )
    assert served.returncode == 0, served.stderr
