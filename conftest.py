"""Storage fixtures shared by the whole suite.

Django and the apps are imported inside the fixtures only: this file is loaded before any test
module, and app code must not be imported at collection time.
"""

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

S3_BACKEND = "storages.backends.s3.S3Storage"


def _s3_client(s3: dict[str, str], **overrides: str) -> Any:
    import boto3
    from botocore.config import Config

    credentials = {"aws_access_key_id": s3["access_key"], "aws_secret_access_key": s3["secret_key"]}
    credentials.update(overrides)
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"] or None,
        region_name=s3["region"],
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 2},
        ),
        **credentials,
    )


@pytest.fixture(scope="session")
def s3_settings() -> Iterator[dict[str, str]]:
    """The S3 server's settings from the environment (scripts/services.sh env); skips without S3_BUCKET."""
    bucket = os.environ.get("S3_BUCKET", "")
    if not bucket:
        pytest.skip("S3_BUCKET is not set: no S3 server for this run (see scripts/services.sh env)")
    s3 = {
        "bucket": bucket,
        "endpoint_url": os.environ.get("S3_ENDPOINT_URL", ""),
        "access_key": os.environ.get("S3_ACCESS_KEY", ""),
        "secret_key": os.environ.get("S3_SECRET_KEY", ""),
        "region": os.environ.get("S3_REGION", "us-east-1"),
    }
    from botocore.exceptions import BotoCoreError, ClientError

    # Fail once, clearly, instead of every storage call timing out on its own.
    try:
        _s3_client(s3).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as error:
        pytest.fail(f"S3 bucket {bucket!r} at {s3['endpoint_url'] or 'AWS'} is not reachable: {error}")
    yield s3


def _delete_prefix(s3: dict[str, str], prefix: str) -> None:
    client = _s3_client(s3)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"], Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=s3["bucket"], Delete={"Objects": keys, "Quiet": True})


def _override_default_storage(default: dict[str, Any]) -> Iterator[Any]:
    from django.conf import settings
    from django.core.files.storage import storages
    from django.test import override_settings

    # Django's setting_changed handler resets default_storage when STORAGES changes, so code
    # under test that uses default_storage gets this same instance.
    with override_settings(STORAGES={**settings.STORAGES, "default": default}):
        yield storages["default"]


@pytest.fixture
def s3_storage(s3_settings: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Any]:
    """Django's default storage on the S3 server, under a key prefix unique to this test; emptied after."""
    from django.conf import settings

    test_name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    prefix = f"tests/{test_name}-{uuid.uuid4().hex[:12]}"
    current = settings.STORAGES["default"]
    if current["BACKEND"] == S3_BACKEND:
        options = dict(current.get("OPTIONS", {}))
    else:
        options = {
            "bucket_name": s3_settings["bucket"],
            "endpoint_url": s3_settings["endpoint_url"] or None,
            "access_key": s3_settings["access_key"] or None,
            "secret_key": s3_settings["secret_key"] or None,
            "region_name": s3_settings["region"],
            "addressing_style": "path",
            "signature_version": "s3v4",
            "file_overwrite": True,
            "querystring_auth": True,
        }
    options["location"] = prefix
    try:
        yield from _override_default_storage({"BACKEND": S3_BACKEND, "OPTIONS": options})
    finally:
        _delete_prefix(s3_settings, prefix + "/")


# ---------------------------------------------------------------- the fuzz run's summary
# tests/fuzz counts what each pass did (tests/fuzz/tally.py); the summary is printed here, where the
# terminal is, in a serial run and in pytest-xdist's controller alike.


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """A pytest-xdist worker ended: add what it fuzzed to the summary."""
    from tests.fuzz.tally import WORKER_OUTPUT_KEY, merge

    merge(getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY, []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.fuzz.tally import write_summary

    write_summary(terminalreporter)


@pytest.fixture
def fs_storage(tmp_path: Path) -> Iterator[Any]:
    """Django's default storage as plain files under this test's tmp_path."""
    location = tmp_path / "media"
    location.mkdir()
    yield from _override_default_storage(
        {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "base_url": "/media/"},
        }
    )
