"""Compute packages: safe unpacking, fedn.yaml reading and running entry points.

A compute package is a `.tar.gz`/`.tgz`/`.tar.bz2` (or, for uploads checked by the controller,
`.zip`) holding a `fedn.yaml` with `entry_points`. Archives come from the network, so every
member is checked before anything touches the disk, and extraction writes regular files and
directories only. Pure Python: no Django, no fedplane dependencies beyond PyYAML.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # 1 GiB unpacked
DEFAULT_MAX_MEMBERS = 20_000
FEDN_YAML = "fedn.yaml"
STDERR_TAIL_BYTES = 4096
_COPY_CHUNK = 1024 * 1024
_VENV_READY_MARKER = ".fedplane-venv-ready"


class PackageError(ValueError):
    """A compute package that cannot be used."""


class UnsafeArchive(PackageError):
    """An archive that is malformed or would write outside its target, or too much."""


class InvalidPackage(PackageError):
    """A well-formed archive that is not a compute package (no or bad fedn.yaml)."""


class EntryPointFailed(RuntimeError):
    """An entry point exited non-zero, timed out or could not be started."""

    def __init__(
        self, entry_point: str, returncode: int | None, stderr_tail: str, *, timed_out: bool = False
    ):
        self.entry_point = entry_point
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out
        if timed_out:
            what = "timed out and was killed"
        elif returncode is None:
            what = "could not be started"
        else:
            what = f"exited with code {returncode}"
        tail = stderr_tail.strip()
        super().__init__(f"entry point '{entry_point}' {what}" + (f": {tail[-500:]}" if tail else ""))


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


# --------------------------------------------------------------------------- fedn.yaml


@dataclass(frozen=True)
class PackageInfo:
    """What `inspect_archive` learned about a package without extracting it."""

    kind: str
    root: str  # "" when fedn.yaml is at the archive root, else the single top folder
    config: dict[str, Any]
    entry_points: dict[str, str | list[str]]
    member_count: int
    total_bytes: int
    python_env: str | None = None
    files: list[str] = field(default_factory=list)


def parse_fedn_yaml(text: str | bytes, *, source: str = FEDN_YAML) -> dict[str, Any]:
    """Parse and validate fedn.yaml content: a mapping with an `entry_points` mapping."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidPackage(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidPackage(f"{source} must be a mapping")
    entry_points = config.get("entry_points")
    if not isinstance(entry_points, dict) or not entry_points:
        raise InvalidPackage(f"{source} has no 'entry_points' mapping")
    for name, spec in entry_points.items():
        _command_of(name, spec, source)
    python_env = config.get("python_env")
    if python_env is not None:
        if not isinstance(python_env, str) or not python_env:
            raise InvalidPackage(f"{source}: python_env must be a file name")
        _normalise_member_name(python_env)
    return config


def _command_of(name: object, spec: object, source: str = FEDN_YAML) -> str | list[str]:
    if not isinstance(name, str) or not name:
        raise InvalidPackage(f"{source}: entry point names must be strings")
    command = spec.get("command") if isinstance(spec, dict) else None
    if isinstance(command, str) and command.strip():
        return command
    if isinstance(command, list) and command and all(isinstance(part, str) for part in command):
        return list(command)
    raise InvalidPackage(f"{source}: entry point '{name}' needs a 'command' (a string or a list of strings)")


def entry_points_of(config: Mapping[str, Any]) -> dict[str, str | list[str]]:
    return {name: _command_of(name, spec) for name, spec in config.get("entry_points", {}).items()}


def read_fedn_yaml(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / FEDN_YAML
    if not path.is_file():
        raise InvalidPackage(f"no {FEDN_YAML} in {directory}")
    return parse_fedn_yaml(path.read_bytes(), source=str(path))


def find_package_root(directory: str | os.PathLike[str]) -> Path:
    """The first folder (breadth-first, sorted) under `directory` holding a fedn.yaml."""
    base = Path(directory)
    queue = [base]
    while queue:
        current = queue.pop(0)
        if (current / FEDN_YAML).is_file():
            return current
        queue.extend(sorted(p for p in current.iterdir() if p.is_dir() and not p.is_symlink()))
    raise InvalidPackage(f"no {FEDN_YAML} found under {directory}")


def inspect_archive(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> PackageInfo:
    """Validate a package archive without extracting it (the controller's upload check)."""
    with _OpenArchive(Path(path)) as opened:
        members = list(_checked(opened.members(), max_bytes, max_members))
        files = [m.name for m in members if not m.is_dir]
        if FEDN_YAML in files:
            root = ""
        else:
            tops = {name.split("/")[0] for name in (m.name for m in members)}
            candidate = f"{next(iter(tops))}/{FEDN_YAML}" if len(tops) == 1 else ""
            if not candidate or candidate not in files:
                raise InvalidPackage(f"{FEDN_YAML} must be at the archive root or in its single top folder")
            root = next(iter(tops))
        yaml_name = f"{root}/{FEDN_YAML}" if root else FEDN_YAML
        with opened.open_member(yaml_name) as handle:
            raw = handle.read(1024 * 1024 + 1)
        if len(raw) > 1024 * 1024:
            raise InvalidPackage(f"{FEDN_YAML} is larger than 1 MiB")
        config = parse_fedn_yaml(raw)
        python_env = config.get("python_env")
        if python_env:
            env_name = f"{root}/{python_env}" if root else python_env
            if _normalise_member_name(env_name) not in files:
                raise InvalidPackage(
                    f"{FEDN_YAML} names python_env '{python_env}', which is not in the package"
                )
        return PackageInfo(
            kind=opened.kind,
            root=root,
            config=config,
            entry_points=entry_points_of(config),
            member_count=len(members),
            total_bytes=sum(m.size for m in members),
            python_env=python_env,
            files=files,
        )


# --------------------------------------------------------------------------- running entry points


@dataclass(frozen=True)
class EntryPointResult:
    entry_point: str
    returncode: int
    duration: float
    stdout_tail: str
    stderr_tail: str


class _TailReader(threading.Thread):
    """Drains a pipe so the child never blocks, keeping only the last bytes."""

    def __init__(self, stream: IO[bytes], limit: int, log_prefix: str):
        super().__init__(daemon=True)
        self._stream = stream
        self._limit = limit
        self._log_prefix = log_prefix
        self._buffer = bytearray()

    def run(self) -> None:
        # read1 returns what is there, so one endless line cannot grow memory without bound.
        for chunk in iter(lambda: self._stream.read1(65536), b""):  # type: ignore[attr-defined]
            self._buffer.extend(chunk)
            if len(self._buffer) > self._limit:
                del self._buffer[: len(self._buffer) - self._limit]
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s %s", self._log_prefix, chunk.decode(errors="replace").rstrip())
        self._stream.close()

    def text(self) -> str:
        return self._buffer.decode(errors="replace")


class Dispatcher:
    """Runs a package's entry points as subprocesses in the package folder.

    String commands run as `bash -c "<command> <args>"` (what FEDn 0.9.5 does, arguments quoted
    here); list commands run as an argv without a shell. Without `python_env` the current
    interpreter's folder leads PATH so `python` means the client's Python, as with FEDn.
    """

    def __init__(
        self,
        package_dir: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        *,
        extra_env: Mapping[str, str] | None = None,
    ):
        self.package_dir = Path(package_dir).absolute()
        self.config = dict(config) if config is not None else read_fedn_yaml(self.package_dir)
        self.entry_points = entry_points_of(self.config)
        self.extra_env = dict(extra_env or {})
        self.venv_dir: Path | None = None

    def has(self, entry_point: str) -> bool:
        return entry_point in self.entry_points

    # -- python_env -----------------------------------------------------------------------

    def prepare_python_env(self, *, timeout: float = 1800.0) -> Path | None:
        """Build the package's virtualenv once (python -m venv + pip install -r); reuse it later."""
        env_file = self.config.get("python_env")
        if not env_file:
            return None
        env_path = self.package_dir / _normalise_member_name(env_file)
        if not env_path.is_file():
            raise InvalidPackage(f"python_env file {env_file} not found in the package")
        spec = yaml.safe_load(env_path.read_text()) or {}
        if not isinstance(spec, dict):
            raise InvalidPackage(f"{env_file} must be a mapping")
        name = _normalise_member_name(str(spec.get("name") or "fedn_env"))
        venv_dir = self.package_dir / name
        if (venv_dir / _VENV_READY_MARKER).is_file():
            logger.info("event=python_env_reused path=%s", venv_dir)
            self.venv_dir = venv_dir
            return venv_dir
        shutil.rmtree(venv_dir, ignore_errors=True)  # a half-built env from an earlier crash
        requirements = [
            str(dep) for key in ("build_dependencies", "dependencies") for dep in (spec.get(key) or [])
        ]
        deadline = time.monotonic() + timeout
        venv_cmd = [sys.executable, "-m", "venv", str(venv_dir)]
        if not requirements:
            venv_cmd.insert(3, "--without-pip")
        logger.info("event=python_env_build path=%s requirements=%d", venv_dir, len(requirements))
        try:
            self._run_argv("python_env", venv_cmd, deadline - time.monotonic(), env=self._base_env())
            for key in ("build_dependencies", "dependencies"):
                deps = [str(dep) for dep in (spec.get(key) or [])]
                if not deps:
                    continue
                req_file = venv_dir / f"requirements-{key}.txt"
                req_file.write_text("\n".join(deps) + "\n")
                pip = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(req_file)]
                self._run_argv("python_env", pip, deadline - time.monotonic(), env=self._base_env())
        except BaseException:
            shutil.rmtree(venv_dir, ignore_errors=True)
            raise
        (venv_dir / _VENV_READY_MARKER).write_text("ok\n")
        self.venv_dir = venv_dir
        return venv_dir

    # -- running ----------------------------------------------------------------------------

    def run(
        self, entry_point: str, *args: str, timeout: float, cancel: threading.Event | None = None
    ) -> EntryPointResult:
        """Run an entry point with arguments; raise EntryPointFailed on failure or timeout.

        Setting `cancel` (e.g. on shutdown) kills the child like a timeout does.
        """
        if entry_point not in self.entry_points:
            raise EntryPointFailed(entry_point, None, f"no entry point '{entry_point}' in {FEDN_YAML}")
        command = self.entry_points[entry_point]
        if isinstance(command, list):
            argv = [*command, *args]
        else:
            argv = ["bash", "-c", " ".join([command, *(shlex.quote(str(a)) for a in args)])]
        return self._run_argv(entry_point, argv, timeout, env=self._entry_point_env(), cancel=cancel)

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PIP_NO_INPUT"] = "1"
        return env

    def _entry_point_env(self) -> dict[str, str]:
        env = self._base_env()
        if self.venv_dir is not None:
            bin_dir = str(self.venv_dir / "bin")
            env["VIRTUAL_ENV"] = str(self.venv_dir)
            env.pop("PYTHONHOME", None)
        else:
            bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        return env

    def _run_argv(
        self,
        name: str,
        argv: Sequence[str],
        timeout: float,
        *,
        env: dict[str, str],
        cancel: threading.Event | None = None,
    ) -> EntryPointResult:
        if timeout <= 0:
            raise EntryPointFailed(name, None, "no time left to run", timed_out=True)
        started = time.monotonic()
        logger.info("event=entry_point_start entry_point=%s cwd=%s", name, self.package_dir)
        try:
            # A new session makes the child a process-group leader, so a timeout kills the
            # whole tree (bash and whatever it started), not just bash.
            process = subprocess.Popen(
                list(argv),
                cwd=self.package_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise EntryPointFailed(name, None, str(exc)) from exc
        assert process.stdout is not None and process.stderr is not None
        out_reader = _TailReader(process.stdout, STDERR_TAIL_BYTES, f"entry_point={name} stream=stdout")
        err_reader = _TailReader(process.stderr, STDERR_TAIL_BYTES, f"entry_point={name} stream=stderr")
        out_reader.start()
        err_reader.start()
        timed_out = cancelled = False
        deadline = started + timeout
        try:
            while process.poll() is None:
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    _kill_group(process)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    _kill_group(process)
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=min(remaining, 0.2))
        except BaseException:
            _kill_group(process)
            raise
        finally:
            out_reader.join(timeout=5)
            err_reader.join(timeout=5)
        duration = time.monotonic() - started
        stderr_tail = err_reader.text()
        if cancelled:
            raise EntryPointFailed(
                name, process.returncode, stderr_tail + "\n[cancelled: client shutting down]"
            )
        if timed_out or process.returncode != 0:
            logger.warning(
                "event=entry_point_failed entry_point=%s returncode=%s timed_out=%s seconds=%.2f",
                name,
                process.returncode,
                timed_out,
                duration,
            )
            raise EntryPointFailed(name, process.returncode, stderr_tail, timed_out=timed_out)
        logger.info("event=entry_point_done entry_point=%s seconds=%.2f", name, duration)
        return EntryPointResult(name, process.returncode, duration, out_reader.text(), stderr_tail)


def _kill_group(process: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            # The leader is gone; take any stragglers in the group with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=grace)
