"""Model files on the combiner's disk: staged global models (served to clients by Download)
and model updates received from clients (Upload)."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

CHUNK_BYTES = 1024 * 1024
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class InvalidModelId(ValueError):
    pass


class UploadTooLarge(ValueError):
    pass


class UploadNotWanted(ValueError):
    """An upload from a caller with no outstanding task, or more uploads than its tasks."""


def check_model_id(model_id: str) -> str:
    """Model ids become file names here, so only plain names are allowed."""
    if not SAFE_ID.match(model_id) or ".." in model_id:
        raise InvalidModelId(f"invalid model id {model_id!r}")
    return model_id


class ModelFiles:
    def __init__(self, workdir: Path, *, max_upload_bytes: int, keep_staged: int = 4) -> None:
        self.staged_dir = workdir / "staged"
        self.updates_dir = workdir / "updates"
        self.staged_dir.mkdir(parents=True, exist_ok=True)
        self.updates_dir.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = max_upload_bytes
        self._keep_staged = keep_staged
        self._staged: collections.OrderedDict[str, Path] = collections.OrderedDict()
        # Unclaimed uploads per uploader ("" for callers without an identity), oldest first.
        self._uploads: dict[str, collections.OrderedDict[str, None]] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    # Global models -------------------------------------------------------------------------

    def stage(self, model_id: str, source: IO[bytes]) -> Path:
        """Copy a global model from the store; the last few stay so late downloads still work."""
        path = self.staged_dir / f"{check_model_id(model_id)}.npz"
        with self._lock:
            if model_id in self._staged:
                self._staged.move_to_end(model_id)
                return path
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
        os.replace(partial, path)
        with self._lock:
            self._staged[model_id] = path
            while len(self._staged) > self._keep_staged:
                _, old = self._staged.popitem(last=False)
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        return path

    def is_staged(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._staged

    def staged_path(self, model_id: str) -> Path | None:
        with self._lock:
            return self._staged.get(model_id)

    def read_chunks(self, model_id: str) -> Iterator[bytes]:
        path = self.staged_path(model_id)
        if path is None:
            raise FileNotFoundError(model_id)
        # Opened before the first chunk so a concurrent eviction cannot pull the file away mid-stream.
        handle = path.open("rb")
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    # Model updates -------------------------------------------------------------------------

    def update_path(self, model_update_id: str) -> Path:
        return self.updates_dir / check_model_id(model_update_id)

    def receive_upload(
        self, model_id: str, chunks: Iterable[bytes], *, owner: str = "", quota: int | None = None
    ) -> Path:
        """Write an uploaded update; refuses ids already present and uploads over the size bound.

        `quota` bounds the unclaimed uploads `owner` may keep on disk: a named owner's oldest
        upload makes room for its newest (a retry), a nameless caller is refused instead.
        """
        path = self.update_path(model_id)
        partial = path.with_name(path.name + ".partial")
        if quota is not None and quota <= 0:
            raise UploadNotWanted(
                "no training task of the current round waits for a model update from this caller"
            )
        if owner == "" and quota is not None and self.pending_uploads("") >= quota:
            raise UploadNotWanted(f"{quota} model updates are already waiting for their tasks")
        if path.exists() or partial.exists():
            raise FileExistsError(f"model {model_id!r} was already uploaded")
        size = 0
        try:
            with partial.open("xb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise UploadTooLarge(
                            f"model {model_id!r} exceeds the upload limit of {self.max_upload_bytes} bytes"
                        )
                    out.write(chunk)
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        evicted: list[str] = []
        with self._lock:
            uploads = self._uploads.setdefault(owner, collections.OrderedDict())
            uploads[model_id] = None
            self._owners[model_id] = owner
            while quota is not None and len(uploads) > quota:
                old, _ = uploads.popitem(last=False)
                self._owners.pop(old, None)
                evicted.append(old)
        for old in evicted:
            with contextlib.suppress(FileNotFoundError, InvalidModelId):
                self.update_path(old).unlink()
        return path

    def upload_owner(self, model_update_id: str) -> str | None:
        """Who uploaded an update still on disk ("" for a caller without an identity)."""
        with self._lock:
            return self._owners.get(model_update_id)

    def pending_uploads(self, owner: str) -> int:
        with self._lock:
            return len(self._uploads.get(owner, ()))

    def discard_update(self, model_update_id: str) -> None:
        self._forget(model_update_id)
        with contextlib.suppress(FileNotFoundError, InvalidModelId):
            self.update_path(model_update_id).unlink()

    def _forget(self, model_update_id: str) -> None:
        with self._lock:
            owner = self._owners.pop(model_update_id, None)
            if owner is not None:
                uploads = self._uploads.get(owner)
                if uploads is not None:
                    uploads.pop(model_update_id, None)
                    if not uploads:
                        del self._uploads[owner]

    def purge_updates_older_than(self, timestamp: float) -> int:
        """Uploads that no SendModelUpdate claimed; called between rounds to bound disk use."""
        removed = 0
        for path in self.updates_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < timestamp:
                    path.unlink()
                    self._forget(path.name)
                    removed += 1
        return removed
