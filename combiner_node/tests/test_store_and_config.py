"""Artifact store key safety and the round-config parser."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from combiner_node.roundconfig import RoundConfigError, parse_aggregator_kwargs, parse_round_config
from combiner_node.store import ArtifactNotFound, DirectoryStore, S3Store, StoreError, store_from_spec


def test_directory_store_round_trip_and_delete(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "media")
    payload = b"x" * (3 * 1024 * 1024 + 5)
    store.write("models/a.npz", io.BytesIO(payload))
    assert store.exists("models/a.npz")
    with store.open_read("models/a.npz") as handle:
        assert handle.read() == payload
    store.delete("models/a.npz")
    store.delete("models/a.npz")
    assert not store.exists("models/a.npz")
    with pytest.raises(ArtifactNotFound), store.open_read("models/a.npz"):
        pass
    assert not [p for p in (tmp_path / "media" / "models").iterdir() if p.name.startswith(".partial")]


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "models/../../x", "", "a//b", "a\\b", "models/./a"])
def test_directory_store_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    store = DirectoryStore(tmp_path / "media")
    with pytest.raises(StoreError):
        store.write(key, io.BytesIO(b"x"))
    assert not (tmp_path / "x").exists()


def test_directory_store_refuses_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "media" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(StoreError, match="escapes"):
        DirectoryStore(tmp_path / "media").write("link/x", io.BytesIO(b"x"))


def test_store_from_spec() -> None:
    s3 = store_from_spec(
        "s3://fedplane-test",
        {"S3_ENDPOINT_URL": "http://127.0.0.1:1", "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s"},
    )
    assert isinstance(s3, S3Store) and s3.bucket == "fedplane-test"
    assert isinstance(store_from_spec("var/media", {}), DirectoryStore)
    with pytest.raises(StoreError):
        store_from_spec("s3://", {})
    with pytest.raises(StoreError, match="cannot use S3 store"):
        store_from_spec("s3://bucket", {"S3_ACCESS_KEY": "only-half"})


def test_round_config_parses_fedn_stringified_values() -> None:
    config = parse_round_config(
        {
            "task": "training",
            "round_id": "12",
            "session_id": "s",
            "model_id": "0b0e5f9c-1f43-4c1e-9d1c-3a7e3a0f0d11",
            "aggregator": "fedopt",
            "aggregator_kwargs": "{'serveropt': 'adam', 'learning_rate': 0.01}",
            "round_timeout": "180",
            "buffer_size": "-1",
            "clients_required": "2",
            "clients_requested": "8.0",
            "delete_models_storage": "True",
            "validate": "False",
            "helper_type": "numpyhelper",
        }
    )
    assert config.aggregator_kwargs == {"serveropt": "adam", "learning_rate": 0.01}
    assert (config.round_timeout, config.buffer_size, config.clients_required) == (180.0, -1, 2)
    assert config.clients_requested == 8 and config.delete_models_storage and not config.validate
    assert config.raw["round_id"] == "12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("None", {}), ("", {}), ("{}", {}), ('{"a": true}', {"a": True}), ("{'a': 1}", {"a": 1})],
)
def test_aggregator_kwargs_literals(text: str, expected: dict) -> None:
    assert parse_aggregator_kwargs(text) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"aggregator_kwargs": "__import__('os').system('true')"},
        {"aggregator_kwargs": "[1, 2]"},
        {"round_timeout": "-1"},
        {"round_timeout": "nan"},
        {"clients_required": "0"},
        {"clients_requested": "2.5"},
        {"validate": "maybe"},
        {"model_id": ""},
        {"round_id": ""},
        {"round_id": "1/2"},
    ],
)
def test_round_config_errors(overrides: dict) -> None:
    params = {"task": "training", "round_id": "1", "model_id": "m1", **overrides}
    with pytest.raises(RoundConfigError):
        parse_round_config(params)


@pytest.mark.s3
def test_s3_store_against_the_real_server(s3_settings: dict[str, str]) -> None:
    store = S3Store(
        s3_settings["bucket"],
        endpoint_url=s3_settings["endpoint_url"] or None,
        access_key=s3_settings["access_key"],
        secret_key=s3_settings["secret_key"],
        region=s3_settings["region"],
    )
    key = f"combiner-tests/{uuid.uuid4()}.npz"
    payload = os.urandom(9 * 1024 * 1024)  # above boto3's multipart threshold
    try:
        assert not store.exists(key)
        store.write(key, io.BytesIO(payload))
        assert store.exists(key)
        with store.open_read(key) as handle:
            assert handle.read() == payload
    finally:
        store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ArtifactNotFound), store.open_read(key):
        pass
