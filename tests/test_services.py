"""The backing services the suite relies on answer when their environment is set.

Each check skips, with the reason, when its variable is absent (the embedded SQLite/filesystem run).
Start the services with `scripts/services.sh start` and `eval "$(scripts/services.sh env)"`.
"""

import os
import uuid
from typing import Any

import pytest
from django.core.files.base import ContentFile

DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.mark.skipif(
    not DATABASE_URL.startswith(("postgres://", "postgresql://")),
    reason="DATABASE_URL does not name a PostgreSQL server (embedded SQLite run)",
)
def test_postgresql_answers_a_query() -> None:
    import psycopg

    with psycopg.connect(DATABASE_URL, connect_timeout=5, autocommit=True) as connection:
        row = connection.execute(
            "SELECT current_database(), 6 * 7, current_setting('server_version_num')"
        ).fetchone()
    assert row is not None
    database, answer, version = row
    assert database == DATABASE_URL.rsplit("/", 1)[-1].split("?", 1)[0]
    assert answer == 42
    assert int(version) >= 150000


@pytest.mark.skipif(
    not REDIS_URL.startswith("redis://"), reason="REDIS_URL is not set (no Redis for this run)"
)
def test_redis_answers_ping_and_stores_a_key() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    key = f"fedplane-test:{uuid.uuid4().hex}"
    try:
        assert client.ping() is True
        assert client.set(key, b"value", ex=60) is True
        assert client.get(key) == b"value"
    finally:
        client.delete(key)
        client.close()


def _client(s3: dict[str, str], secret_key: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"] or None,
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=secret_key if secret_key is not None else s3["secret_key"],
        region_name=s3["region"],
        config=Config(
            s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}
        ),
    )


@pytest.mark.s3
def test_s3_put_get_delete(s3_settings: dict[str, str]) -> None:
    from botocore.exceptions import ClientError

    client = _client(s3_settings)
    bucket = s3_settings["bucket"]
    key = f"tests/services/{uuid.uuid4().hex}.bin"
    payload = os.urandom(64 * 1024)
    client.put_object(Bucket=bucket, Key=key, Body=payload)
    try:
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == payload
    finally:
        client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket=bucket, Key=key)
    assert missing.value.response["Error"]["Code"] in {"404", "NoSuchKey"}


@pytest.mark.s3
def test_s3_rejects_a_wrong_secret(s3_settings: dict[str, str]) -> None:
    from botocore.exceptions import ClientError

    client = _client(s3_settings, secret_key=s3_settings["secret_key"] + "-wrong")
    with pytest.raises(ClientError) as rejected:
        client.put_object(Bucket=s3_settings["bucket"], Key=f"tests/services/{uuid.uuid4().hex}", Body=b"x")
    assert rejected.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}


@pytest.mark.s3
def test_s3_storage_fixture_writes_under_its_own_prefix(s3_storage: Any, s3_settings: dict[str, str]) -> None:
    from django.core.files.storage import default_storage

    name = default_storage.save("models/global.npz", ContentFile(b"weights"))
    assert s3_storage.exists(name)
    with default_storage.open(name, "rb") as stored:
        assert stored.read() == b"weights"
    listed = _client(s3_settings).list_objects_v2(
        Bucket=s3_settings["bucket"], Prefix=s3_storage.location + "/"
    )
    assert [item["Key"] for item in listed["Contents"]] == [f"{s3_storage.location}/{name}"]
    assert s3_storage.location.startswith("tests/")


def test_fs_storage_fixture_writes_under_tmp_path(fs_storage: Any, tmp_path: Any) -> None:
    from django.core.files.storage import default_storage

    name = default_storage.save("models/global.npz", ContentFile(b"weights"))
    assert (tmp_path / "media" / name).read_bytes() == b"weights"
    assert fs_storage.exists(name)
