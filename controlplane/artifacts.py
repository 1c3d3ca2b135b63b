"""The one module that touches artifact storage (STORAGES["default"]): S3 or var/media.

Keys are uuid-addressed (`models/<uuid>.npz`, `packages/<uuid>.<ext>`), so the key asked for is the
key stored. Data moves in chunks; sha256 and size are computed on the way in.
"""

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.http import StreamingHttpResponse

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class SpooledUpload:
    path: Path
    sha256: str
    size: int


@contextmanager
def spool_upload(
    upload: UploadedFile | IO[bytes], max_bytes: int, suffix: str = ""
) -> Iterator[SpooledUpload]:
    """Copy an upload to a private temporary file, hashing it; the file is removed afterwards."""
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(prefix="fedplane-upload-", suffix=suffix, delete=True) as spool:
        chunks = (
            upload.chunks(CHUNK_SIZE)
            if hasattr(upload, "chunks")
            else iter(lambda: upload.read(CHUNK_SIZE), b"")
        )
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"the upload is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            spool.write(chunk)
        spool.flush()
        yield SpooledUpload(path=Path(spool.name), sha256=digest.hexdigest(), size=size)


def warm_up() -> None:
    """Build this thread's storage client now (for S3, boto3 loads its service models: most of a
    second) rather than in the first step that reads or writes an artifact."""
    getattr(default_storage, "bucket", None)


def save(key: str, path: Path) -> str:
    """Store the file at `key`; returns the stored key."""
    with path.open("rb") as handle:
        return save_fileobj(key, handle)


def save_fileobj(key: str, handle: IO[bytes]) -> str:
    stored = default_storage.save(key, File(handle, name=key))
    if stored != key:
        default_storage.delete(stored)
        raise RuntimeError(f"artifact storage renamed {key} to {stored}")
    return stored


def iter_chunks(key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Stream an artifact without holding it whole in memory or spooling it to local disk."""
    bucket = getattr(default_storage, "bucket", None)
    if bucket is not None:
        # S3: read the object body straight from boto3 instead of django-storages' spooled file.
        from storages.utils import clean_name

        name = default_storage._normalize_name(clean_name(key))
        body = bucket.Object(name).get()["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()
        return
    with default_storage.open(key, "rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def exists(key: str) -> bool:
    return default_storage.exists(key)


def delete(key: str) -> None:
    if key and default_storage.exists(key):
        default_storage.delete(key)


def download(key: str, path: Path) -> None:
    """Write an artifact to a local file, in chunks."""
    with path.open("wb") as handle:
        for chunk in iter_chunks(key):
            handle.write(chunk)


def digest(key: str) -> tuple[int, str]:
    """(size, sha256) of a stored artifact, read as a stream."""
    sha256 = hashlib.sha256()
    size = 0
    for chunk in iter_chunks(key):
        sha256.update(chunk)
        size += len(chunk)
    return size, sha256.hexdigest()


@contextmanager
def local_copy(key: str, suffix: str = "") -> Iterator[Path]:
    """A temporary local copy of an artifact, for code that needs a real file (numpy, tarfile)."""
    with tempfile.TemporaryDirectory(prefix="fedplane-artifact-") as folder:
        path = Path(folder) / f"artifact{suffix}"
        download(key, path)
        yield path


def streaming_response(key: str, filename: str, size: int | None = None) -> StreamingHttpResponse:
    """An attachment download that streams the artifact in chunks."""
    response = StreamingHttpResponse(iter_chunks(key), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    if size:
        response["Content-Length"] = str(size)
    return response
