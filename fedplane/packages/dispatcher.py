"""Running a package's entry points: bounded subprocesses, and the package's own virtualenv."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from fedplane.packages.archive import _normalise_member_name
from fedplane.packages.manifest import FEDN_YAML, InvalidPackage, entry_points_of, read_fedn_yaml

logger = logging.getLogger(__name__)

STDERR_TAIL_BYTES = 4096
_VENV_READY_MARKER = ".fedplane-venv-ready"


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
        exited = _exit_notifier(process.pid)
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
                if exited is not None:
                    # Woken the moment the child exits, not at Popen.wait's next poll (its sleeps
                    # grow to 50 ms, a second task's worth for a quick entry point).
                    select.select([exited], [], [], min(remaining, 0.2))
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=min(remaining, 0.2))
        except BaseException:
            _kill_group(process)
            raise
        finally:
            if exited is not None:
                os.close(exited)
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


def _exit_notifier(pid: int) -> int | None:
    """A descriptor that turns readable when the child `pid` exits (Linux pidfd), or None where
    there is none; the caller closes it."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return int(pidfd_open(pid))
    except OSError:
        return None


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
