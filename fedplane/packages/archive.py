"""Package archives: every member is checked before anything touches the disk, and extraction
writes regular files and directories only, within bounds on size and member count.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # 1 GiB unpacked
DEFAULT_MAX_MEMBERS = 20_000
_COPY_CHUNK = 1024 * 1024


class PackageError(ValueError):
    """A compute package that cannot be used."""


class UnsafeArchive(PackageError):
    """An archive that is malformed or would write outside its target, or too much."""


# --------------------------------------------------------------------------- archive members


@dataclass(frozen=True)
class _Member:
    """One archive member reduced to what the checks and the extraction need."""

    name: str  # normalised relative posix path, no trailing slash
    is_dir: bool
    size: int
    mode: int  # permission bits only


def archive_kind(path: str | os.PathLike[str]) -> str:
    """'tar:gz', 'tar:bz2' or 'zip', from the file name; anything else is refused."""
    name = os.fspath(path).lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar:gz"
    if name.endswith(".tar.bz2"):
        return "tar:bz2"
    if name.endswith(".zip"):
        return "zip"
    raise UnsafeArchive(
        f"unsupported package type '{os.path.basename(name)}': use .tar.gz, .tgz, .tar.bz2 or .zip"
    )


def _normalise_member_name(raw: str) -> str:
    if not raw or "\x00" in raw:
        raise UnsafeArchive(f"member with an invalid name {raw!r}")
    name = raw.replace("\\", "/")
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"member {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member {raw!r} has a '..' component")
    return "/".join(parts)


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        name = _normalise_member_name(info.name)
        if info.issym() or info.islnk():
            raise UnsafeArchive(f"member {info.name!r} is a link; links are not allowed in packages")
        if info.isdir():
            yield _Member(name, True, 0, 0o755)
        elif info.isfile():
            yield _Member(name, False, info.size, info.mode & 0o777)
        else:
            raise UnsafeArchive(f"member {info.name!r} is a device, fifo or other special file")


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        name = _normalise_member_name(info.filename)
        unix_mode = info.external_attr >> 16
        # Zip writers often store permission bits without a file type; that means a file.
        file_type = stat.S_IFMT(unix_mode)
        if file_type == stat.S_IFLNK:
            raise UnsafeArchive(f"member {info.filename!r} is a link; links are not allowed in packages")
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchive(f"member {info.filename!r} is a device, fifo or other special file")
        if info.is_dir():
            yield _Member(name, True, 0, 0o755)
        else:
            yield _Member(name, False, info.file_size, (unix_mode & 0o777) or 0o644)


def _checked(members: Iterator[_Member], max_bytes: int, max_members: int) -> Iterator[_Member]:
    """Apply the bounds and the duplicate/shape rules while members stream past."""
    total = 0
    count = 0
    files: set[str] = set()
    dirs: set[str] = set()
    for member in members:
        count += 1
        if count > max_members:
            raise UnsafeArchive(f"archive has more than {max_members} members")
        if member.name == "":
            if member.is_dir:
                continue  # "./" itself
            raise UnsafeArchive("member with an empty name")
        total += member.size
        if total > max_bytes:
            raise UnsafeArchive(f"archive unpacks to more than {max_bytes} bytes")
        parents = member.name.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            if "/".join(parents[:i]) in files:
                raise UnsafeArchive(f"member {member.name!r} is nested under a file")
        if member.is_dir:
            if member.name in files:
                raise UnsafeArchive(f"member {member.name!r} is both a file and a directory")
            dirs.add(member.name)
        else:
            if member.name in dirs or member.name in files:
                raise UnsafeArchive(f"member {member.name!r} appears twice")
            files.add(member.name)
        yield member


class _OpenArchive:
    """A tar or zip archive behind one small interface."""

    def __init__(self, path: Path):
        self.kind = archive_kind(path)
        if not path.is_file():
            raise UnsafeArchive(f"package file {path} does not exist")
        if path.stat().st_size == 0:
            raise UnsafeArchive(f"package file {path.name} is empty")
        self._tar: tarfile.TarFile | None = None
        self._zip: zipfile.ZipFile | None = None
        try:
            if self.kind == "zip":
                self._zip = zipfile.ZipFile(path)
            else:
                # Closed in close(); the archive outlives this constructor.
                self._tar = tarfile.open(path, "r:" + self.kind.split(":")[1])  # noqa: SIM115
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise UnsafeArchive(f"{path.name} is not a readable {self.kind} archive: {exc}") from exc

    def members(self) -> Iterator[_Member]:
        try:
            if self._zip is not None:
                yield from _zip_members(self._zip)
            else:
                assert self._tar is not None
                yield from _tar_members(self._tar)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise UnsafeArchive(f"corrupt archive: {exc}") from exc

    def open_member(self, name_in_archive: str) -> IO[bytes]:
        """Open a member by its name as stored (first match, after normalisation)."""
        if self._zip is not None:
            for info in self._zip.infolist():
                if _normalise_member_name(info.filename) == name_in_archive and not info.is_dir():
                    return self._zip.open(info)
        else:
            assert self._tar is not None
            for info in self._tar.getmembers():
                if _normalise_member_name(info.name) == name_in_archive and info.isfile():
                    handle = self._tar.extractfile(info)
                    if handle is not None:
                        return handle
        raise UnsafeArchive(f"member {name_in_archive!r} not found")

    def iter_file_data(self) -> Iterator[tuple[str, IO[bytes]]]:
        """Stream (normalised name, file object) for every regular file, in archive order."""
        if self._zip is not None:
            for info in self._zip.infolist():
                if not info.is_dir():
                    with self._zip.open(info) as handle:
                        yield _normalise_member_name(info.filename), handle
        else:
            assert self._tar is not None
            for info in self._tar.getmembers():
                if info.isfile():
                    handle = self._tar.extractfile(info)
                    if handle is not None:
                        yield _normalise_member_name(info.name), handle

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> _OpenArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- extraction


def safe_extract(
    archive_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Extract `archive_path` into `dest_dir` (which must not exist, or be empty).

    Every member is checked first; the content goes to a temporary sibling folder that is
    renamed into place only when everything was written, so a refused or broken archive
    leaves nothing behind. Returns the destination path.
    """
    archive = Path(archive_path)
    dest = Path(dest_dir).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"extraction target {dest} exists and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)

    with _OpenArchive(archive) as opened:
        members = {m.name: m for m in _checked(opened.members(), max_bytes, max_members)}
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            for member in members.values():
                if member.is_dir:
                    (staging / member.name).mkdir(parents=True, exist_ok=True)
            written = 0
            for name, handle in opened.iter_file_data():
                member = members[name]
                target = staging / name
                # Belt and braces: the name checks above already rule this out.
                if staging not in target.resolve().parents:
                    raise UnsafeArchive(f"member {name!r} escapes the target folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _copy_bounded(handle, target, max_bytes - written, name)
                os.chmod(target, (member.mode | 0o600) & 0o755)
            if dest.exists():
                dest.rmdir()
            os.rename(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def _copy_bounded(source: IO[bytes], target: Path, budget: int, name: str) -> int:
    """Copy a member, refusing to write more than `budget` bytes (compressed-size lies)."""
    written = 0
    try:
        with open(target, "xb") as out:
            while True:
                chunk = source.read(_COPY_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > budget:
                    raise UnsafeArchive(f"archive unpacks to more bytes than allowed (at {name!r})")
                out.write(chunk)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise UnsafeArchive(f"corrupt archive member {name!r}: {exc}") from exc
    return written
