"""The artifact store shared with the controller: an S3 bucket or a local directory.

Models move as streams; nothing here holds a whole model in memory.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

COPY_CHUNK_BYTES = 1024 * 1024


class StoreError(Exception):
    """A store operation failed (bad key, missing object, backend error)."""


class ArtifactNotFound(StoreError):
    pass


def validate_key(key: str) -> str:
    """Refuse keys that could name something outside the store (absolute, `..`, empty parts)."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(f"invalid artifact key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(abc.ABC):
    @abc.abstractmethod
    def open_read(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A readable binary stream of the object; raises ArtifactNotFound."""

    @abc.abstractmethod
    def write(self, key: str, fileobj: IO[bytes]) -> None:
        """Store the stream's remaining bytes under `key`, replacing any previous object."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""


class DirectoryStore(ArtifactStore):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"artifact key {key!r} escapes the store root")
        return path

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact {key!r} in {self.root}") from exc
        with handle:
            yield handle

    def write(self, key: str, fileobj: IO[bytes]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so readers never see a half-written model.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(fileobj, out, COPY_CHUNK_BYTES)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


class S3Store(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        if client is None:
            import boto3
            import botocore.config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region or "us-east-1",
                config=botocore.config.Config(
                    s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 3}
                ),
            )
        self._client = client

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r})"

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=validate_key(key))["Body"]
        except Exception as exc:
            if self._is_missing(exc):
                raise ArtifactNotFound(f"no artifact {key!r} in bucket {self.bucket}") from exc
            raise StoreError(f"reading {key!r} from bucket {self.bucket} failed: {exc}") from exc
        try:
            yield body
        finally:
            body.close()

    def write(self, key: str, fileobj: IO[bytes]) -> None:
        try:
            self._client.upload_fileobj(fileobj, self.bucket, validate_key(key))
        except Exception as exc:
            raise StoreError(f"writing {key!r} to bucket {self.bucket} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except Exception as exc:
            if self._is_missing(exc):
                return False
            raise StoreError(f"checking {key!r} in bucket {self.bucket} failed: {exc}") from exc
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=validate_key(key))
        except Exception as exc:
            if not self._is_missing(exc):
                raise StoreError(f"deleting {key!r} from bucket {self.bucket} failed: {exc}") from exc


def store_from_spec(spec: str, environ: dict[str, str] | None = None) -> ArtifactStore:
    """`s3://<bucket>` (credentials from S3_* variables) or a directory path."""
    env = os.environ if environ is None else environ
    if spec.startswith("s3://"):
        bucket = spec.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise StoreError(f"invalid S3 store {spec!r}: expected s3://<bucket>")
        try:
            return S3Store(
                bucket,
                endpoint_url=env.get("S3_ENDPOINT_URL") or None,
                access_key=env.get("S3_ACCESS_KEY") or None,
                secret_key=env.get("S3_SECRET_KEY") or None,
                region=env.get("S3_REGION") or None,
            )
        except Exception as exc:  # botocore raises several unrelated types for bad settings
            raise StoreError(f"cannot use S3 store {spec!r}: {exc}") from exc
    return DirectoryStore(spec)


def model_key(model_id: str) -> str:
    return f"models/{model_id}.npz"
