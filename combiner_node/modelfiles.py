"""Model files on the combiner's disk: staged global models (served to clients by Download)
and model updates received from clients (Upload).

Both directions move in chunks between the wire and the disk, so memory does not grow with the
model. An update's size is bounded by the round's global model (UploadLimits) and by the room
left on the disk, checked while it arrives.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedplane.npzreader import open_layers

CHUNK_BYTES = 1024 * 1024
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MIB = 1024 * 1024
GIB = 1024 * MIB
# Free space is measured again after at most this many bytes of an upload: uploads running side
# by side share the disk, so one look at the start does not hold for long.
DISK_CHECK_BYTES = 16 * MIB


class InvalidModelId(ValueError):
    pass


class UploadTooLarge(ValueError):
    """An upload over its size limit, or one the disk has no room for (RESOURCE_EXHAUSTED)."""


class DiskFull(UploadTooLarge):
    pass


class UploadNotWanted(ValueError):
    """An upload from a caller with no outstanding task, or more uploads than its tasks."""


def check_model_id(model_id: str) -> str:
    """Model ids become file names here, so only plain names are allowed."""
    if not SAFE_ID.match(model_id) or ".." in model_id:
        raise InvalidModelId(f"invalid model id {model_id!r}")
    return model_id


@dataclass(frozen=True)
class UploadLimits:
    """How large a client's model update may be, and how much disk the combiner keeps free.

    An update has the layers of the global model its task sent, so its size follows that model:
    at most `factor` times the model plus `margin_bytes` (zip and array headers, which differ a
    little between writers). The model's size is the larger of its file and what its arrays
    declare, so an update written plainly from a compressed seed of zeros still fits.
    `max_bytes` caps every update whatever the model; None leaves the cap to the disk, where an
    upload is refused once it would leave less than `disk_reserve_bytes` free.
    """

    factor: float = 2.0
    margin_bytes: int = 16 * MIB
    max_bytes: int | None = None
    disk_reserve_bytes: int = GIB

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"the update size factor must be positive, got {self.factor}")
        if self.margin_bytes < 0 or self.disk_reserve_bytes < 0:
            raise ValueError("the update size margin and the disk reserve cannot be negative")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"the maximum upload size must be positive, got {self.max_bytes}")

    def bound(self, model_bytes: int | None) -> tuple[int | None, str]:
        """The largest update allowed against a global model of `model_bytes`, and what sets it."""
        bounds: list[tuple[int, str]] = []
        if model_bytes is not None:
            bounds.append(
                (
                    int(self.factor * model_bytes) + self.margin_bytes,
                    f"{self.factor:g} x the round's {model_bytes}-byte global model "
                    f"+ {self.margin_bytes} bytes",
                )
            )
        if self.max_bytes is not None:
            bounds.append((self.max_bytes, "the combiner's maximum upload size"))
        if not bounds:
            return None, "no bound but the disk"
        return min(bounds)


def model_size(path: Path) -> int:
    """What an update of this model may be expected to weigh: its file, or its arrays if larger."""
    size = path.stat().st_size
    try:
        with open_layers(path) as reader:
            return max(size, reader.declared_bytes)
    except (ValueError, OSError):
        # Not a readable model: the round refuses it when it starts; the file size will do.
        return size


class ModelFiles:
    def __init__(self, workdir: Path, *, limits: UploadLimits | None = None, keep_staged: int = 4) -> None:
        self.staged_dir = workdir / "staged"
        self.updates_dir = workdir / "updates"
        self.staged_dir.mkdir(parents=True, exist_ok=True)
        self.updates_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits or UploadLimits()
        self._keep_staged = keep_staged
        self._staged: collections.OrderedDict[str, Path] = collections.OrderedDict()
        self._sizes: dict[str, int] = {}
        # Unclaimed uploads per uploader ("" for callers without an identity), oldest first.
        self._uploads: dict[str, collections.OrderedDict[str, None]] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()
        # Stages a global model that is no longer staged, or raises FileNotFoundError (set by the
        # round handler, which reads the store).
        self.fetch_missing: Callable[[str], Path] | None = None

    # Global models -------------------------------------------------------------------------

    def reuse_staged(self, model_id: str) -> Path | None:
        """The staged copy of a global model, if there is one (it becomes the newest kept)."""
        with self._lock:
            path = self._staged.get(model_id)
            if path is not None:
                self._staged.move_to_end(model_id)
            return path

    def stage_local(self, model_id: str, source: Path) -> Path:
        """Stage a model file of this machine (a hard link where the disk allows, else a copy);
        `source` stays where it is."""
        path = self.staged_dir / f"{check_model_id(model_id)}.npz"
        partial = path.with_suffix(".partial")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        try:
            os.link(source, partial)
        except OSError:
            with source.open("rb") as handle:
                return self.stage(model_id, handle)
        return self._keep_staged_file(model_id, partial, path)

    def stage(self, model_id: str, source: IO[bytes]) -> Path:
        """Copy a global model from the store; the last few stay so late downloads still work."""
        path = self.staged_dir / f"{check_model_id(model_id)}.npz"
        with self._lock:
            if model_id in self._staged:
                self._staged.move_to_end(model_id)
                return path
        partial = path.with_suffix(".partial")
        try:
            with partial.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK_BYTES)
        except BaseException:
            # A full disk or a broken store stream must not leave gigabytes of a half model behind.
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        return self._keep_staged_file(model_id, partial, path)

    def _keep_staged_file(self, model_id: str, partial: Path, path: Path) -> Path:
        try:
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        size = model_size(path)
        with self._lock:
            self._staged[model_id] = path
            self._sizes[model_id] = size
            while len(self._staged) > self._keep_staged:
                old_id, old = self._staged.popitem(last=False)
                self._sizes.pop(old_id, None)
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        return path

    def is_staged(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._staged

    def staged_path(self, model_id: str) -> Path | None:
        with self._lock:
            return self._staged.get(model_id)

    def staged_size(self, model_id: str) -> int | None:
        """A staged global model's size as `model_size` measures it."""
        with self._lock:
            return self._sizes.get(model_id)

    def upload_bound(self, global_model_id: str | None) -> tuple[int | None, str]:
        """The size limit for an update of `global_model_id` (None or not staged: the cap alone)."""
        model_bytes = self.staged_size(global_model_id) if global_model_id else None
        return self.limits.bound(model_bytes)

    def disk_room(self) -> int:
        """Bytes the updates folder may still take before the disk reserve."""
        return shutil.disk_usage(self.updates_dir).free - self.limits.disk_reserve_bytes

    def read_chunks(self, model_id: str) -> Iterator[bytes]:
        # Opened before the first chunk so a concurrent eviction cannot pull the file away mid-stream.
        handle = self._open_global(model_id)
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def _open_global(self, model_id: str) -> IO[bytes]:
        path = self.staged_path(model_id)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):  # evicted since the look-up
                return path.open("rb")
        if self.fetch_missing is None:
            raise FileNotFoundError(model_id)
        return self.fetch_missing(model_id).open("rb")

    # Model updates -------------------------------------------------------------------------

    def update_path(self, model_update_id: str) -> Path:
        return self.updates_dir / check_model_id(model_update_id)

    def receive_upload(
        self,
        model_id: str,
        chunks: Iterable[bytes],
        *,
        owner: str = "",
        quota: int | None = None,
        global_model_id: str | None = None,
    ) -> Path:
        """Write an uploaded update; refuses ids already present and uploads over their bounds.

        `quota` bounds the unclaimed uploads `owner` may keep on disk: a named owner's oldest
        upload makes room for its newest (a retry), a nameless caller is refused instead.
        `global_model_id` is the model the round sent, which sets the size limit (UploadLimits).
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
        limit, limit_reason = self.upload_bound(global_model_id)
        room = self.disk_room()
        if room <= 0:
            raise self._disk_full(model_id, 0)
        size = 0
        room_checked_at = 0
        try:
            with partial.open("xb") as out:
                for chunk in chunks:
                    arriving = size + len(chunk)
                    if limit is not None and arriving > limit:
                        raise UploadTooLarge(
                            f"model update {model_id!r} is larger than the upload limit of {limit} "
                            f"bytes ({limit_reason})"
                        )
                    if arriving - room_checked_at > min(room, DISK_CHECK_BYTES):
                        room, room_checked_at = self.disk_room(), size
                        if len(chunk) > room:
                            raise self._disk_full(model_id, size)
                    out.write(chunk)
                    size = arriving
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        evicted: list[str] = []
        with self._lock:
            uploads = self._uploads.setdefault(owner, collections.OrderedDict())
            # Uploads side by side each passed the check above: a nameless caller never makes room
            # by evicting another's upload from the shared pool; its own is refused instead.
            refused = owner == "" and quota is not None and len(uploads) >= quota
            if not refused:
                uploads[model_id] = None
                self._owners[model_id] = owner
            while quota is not None and len(uploads) > quota:
                old, _ = uploads.popitem(last=False)
                self._owners.pop(old, None)
                evicted.append(old)
        for old in evicted:
            with contextlib.suppress(FileNotFoundError, InvalidModelId):
                self.update_path(old).unlink()
        if refused:
            path.unlink(missing_ok=True)
            raise UploadNotWanted(f"{quota} model updates are already waiting for their tasks")
        return path

    def _disk_full(self, model_id: str, received: int) -> DiskFull:
        free = shutil.disk_usage(self.updates_dir).free
        return DiskFull(
            f"the combiner's disk has no room for model update {model_id!r}: {free} bytes free after "
            f"{received} bytes of it, and {self.limits.disk_reserve_bytes} bytes are kept in reserve"
        )

    def upload_owner(self, model_update_id: str) -> str | None:
        """Who uploaded an update still on disk ("" for a caller without an identity)."""
        with self._lock:
            return self._owners.get(model_update_id)

    def claim_update(self, model_update_id: str) -> None:
        """The update's task took it: it no longer waits for one, so it leaves its uploader's
        quota (the file stays until `discard_update`, and so does its owner)."""
        with self._lock:
            owner = self._owners.get(model_update_id)
            uploads = self._uploads.get(owner) if owner is not None else None
            if uploads is not None:
                uploads.pop(model_update_id, None)
                if not uploads:
                    del self._uploads[owner]

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
