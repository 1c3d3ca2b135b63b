"""Compute packages: hostile archives are refused, good ones unpack, entry points run bounded."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from fedplane.packages import (
    Dispatcher,
    EntryPointFailed,
    InvalidPackage,
    UnsafeArchive,
    find_package_root,
    inspect_archive,
    read_fedn_yaml,
    safe_extract,
)

FEDN_YAML = b"""entry_points:
  train:
    command: python train.py
  validate:
    command: [python, validate.py]
"""


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _make_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    mode = "w:bz2" if path.name.endswith(".bz2") else "w:gz"
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            _add_file(tar, name, data)
        for info in extra:
            tar.addfile(info)
    return path


def _good_files(top: str = "client") -> dict[str, bytes]:
    prefix = f"{top}/" if top else ""
    return {
        f"{prefix}fedn.yaml": FEDN_YAML,
        f"{prefix}train.py": b"print('train')\n",
        f"{prefix}data/readme.txt": b"hello\n",
    }


@pytest.mark.parametrize("suffix", [".tgz", ".tar.gz", ".tar.bz2"])
def test_good_tar_extracts_and_inspects(tmp_path: Path, suffix: str) -> None:
    archive = _make_tar(tmp_path / f"package{suffix}", _good_files())
    info = inspect_archive(archive)
    assert info.root == "client"
    assert info.entry_points == {"train": "python train.py", "validate": ["python", "validate.py"]}
    assert info.member_count == 3

    dest = safe_extract(archive, tmp_path / "out")
    assert (dest / "client" / "data" / "readme.txt").read_bytes() == b"hello\n"
    root = find_package_root(dest)
    assert root == dest / "client"
    assert read_fedn_yaml(root)["entry_points"]["train"]["command"] == "python train.py"


def test_fedn_yaml_at_archive_root_is_accepted(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "p.tgz", _good_files(top=""))
    assert inspect_archive(archive).root == ""


def test_good_zip_inspects_and_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in _good_files().items():
            zf.writestr(name, data)
    assert inspect_archive(archive).root == "client"
    dest = safe_extract(archive, tmp_path / "out")
    assert (dest / "client" / "train.py").is_file()


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


HOSTILE = {
    "absolute path": ({"/etc/evil": b"x"}, [], "absolute"),
    "dot dot": ({"client/../../evil": b"x"}, [], r"'\.\.'"),
    "symlink": ({}, [_symlink("client/link", "/etc/passwd")], "link"),
    "relative symlink": ({}, [_symlink("client/link", "../x")], "link"),
    "hardlink": ({"client/a": b"x"}, [_hardlink("client/b", "client/a")], "link"),
    "device": ({}, [_device("client/null")], "device"),
    "fifo": ({}, [_fifo("client/pipe")], "fifo"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_is_refused_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    files, extra, message = HOSTILE[case]
    archive = _make_tar(tmp_path / "p.tgz", {**_good_files(), **files}, list(extra))
    with pytest.raises(UnsafeArchive, match=message):
        inspect_archive(archive)
    target = tmp_path / "out" / "pkg"
    with pytest.raises(UnsafeArchive, match=message):
        safe_extract(archive, target)
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_archive_over_size_bound_is_refused(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "p.tgz", {**_good_files(), "client/big.bin": b"\0" * 200_000})
    with pytest.raises(UnsafeArchive, match="more than 100000 bytes"):
        safe_extract(archive, tmp_path / "out", max_bytes=100_000)
    with pytest.raises(UnsafeArchive, match="more than"):
        inspect_archive(archive, max_bytes=100_000)
    assert not (tmp_path / "out").exists()


def test_too_many_members_is_refused(tmp_path: Path) -> None:
    files = {f"client/f{i}.txt": b"x" for i in range(20)}
    archive = _make_tar(tmp_path / "p.tgz", {**_good_files(), **files})
    with pytest.raises(UnsafeArchive, match="more than 10 members"):
        safe_extract(archive, tmp_path / "out", max_members=10)


def test_zip_that_lies_about_its_size_is_stopped(tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("client/fedn.yaml", FEDN_YAML)
        zf.writestr("client/bomb.bin", b"\0" * 300_000)
    # Rewrite the declared size in the central directory so the bound check is fooled.
    raw = bytearray(archive.read_bytes())
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchive):
        safe_extract(archive, tmp_path / "out", max_bytes=100_000)
    assert not (tmp_path / "out").exists()


def test_package_without_fedn_yaml_is_refused(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "p.tgz", {"client/train.py": b"x"})
    with pytest.raises(InvalidPackage, match=r"fedn\.yaml"):
        inspect_archive(archive)


def test_fedn_yaml_without_entry_points_is_refused(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "p.tgz", {"client/fedn.yaml": b"name: x\n"})
    with pytest.raises(InvalidPackage, match="entry_points"):
        inspect_archive(archive)


def test_empty_and_garbage_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tgz"
    empty.write_bytes(b"")
    with pytest.raises(UnsafeArchive, match="empty"):
        inspect_archive(empty)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not gzip" * 10)
    with pytest.raises(UnsafeArchive, match="not a readable"):
        safe_extract(garbage, tmp_path / "out")
    with pytest.raises(UnsafeArchive, match="unsupported"):
        inspect_archive(tmp_path / "package.rar")


def test_zip_with_dot_dot_or_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("client/fedn.yaml", FEDN_YAML)
        zf.writestr("client/../../evil.txt", b"x")
    with pytest.raises(UnsafeArchive, match=r"'\.\.'"):
        inspect_archive(archive)
    with pytest.raises(UnsafeArchive, match=r"'\.\.'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()

    linked = tmp_path / "l.zip"
    with zipfile.ZipFile(linked, "w") as zf:
        zf.writestr("client/fedn.yaml", FEDN_YAML)
        info = zipfile.ZipInfo("client/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchive, match="link"):
        safe_extract(linked, tmp_path / "out2")


def test_extract_refuses_non_empty_target(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "p.tgz", _good_files())
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        safe_extract(archive, target)
    assert (target / "keep.txt").read_text() == "mine"


def test_extracted_files_lose_setuid_and_keep_exec(tmp_path: Path) -> None:
    path = tmp_path / "p.tgz"
    with tarfile.open(path, "w:gz") as tar:
        _add_file(tar, "client/fedn.yaml", FEDN_YAML)
        _add_file(tar, "client/run.sh", b"#!/bin/sh\n", mode=0o4755)
    dest = safe_extract(path, tmp_path / "out")
    mode = (dest / "client" / "run.sh").stat().st_mode
    assert mode & stat.S_ISUID == 0
    assert mode & stat.S_IXUSR


# --------------------------------------------------------------------------- Dispatcher


def _package_dir(tmp_path: Path, entry_points: str) -> Path:
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "fedn.yaml").write_text(f"entry_points:\n{entry_points}")
    return root


def test_entry_point_runs_in_package_dir_with_args(tmp_path: Path) -> None:
    root = _package_dir(
        tmp_path,
        "  train:\n    command: python -c 'import sys, os; open(sys.argv[2], \"w\").write(os.getcwd())'\n",
    )
    (root / "script.py").write_text("")
    out = tmp_path / "dir with space" / "out.txt"
    out.parent.mkdir()
    dispatcher = Dispatcher(root)
    dispatcher.run("train", "in.npz", str(out), timeout=30)
    assert out.read_text() == str(root)


def test_argv_entry_point_runs_without_shell(tmp_path: Path) -> None:
    root = _package_dir(
        tmp_path,
        '  validate:\n    command: [python, -c, \'import sys; open(sys.argv[1], "w").write("ok")\']\n',
    )
    out = tmp_path / "o.json"
    Dispatcher(root).run("validate", str(out), timeout=30)
    assert out.read_text() == "ok"


def test_entry_point_failure_carries_stderr_tail(tmp_path: Path) -> None:
    root = _package_dir(
        tmp_path,
        '  train:\n    command: python -c \'import sys; sys.stderr.write("x" * 10000 + "boom-marker"); sys.exit(3)\'\n',
    )
    with pytest.raises(EntryPointFailed) as failure:
        Dispatcher(root).run("train", timeout=30)
    assert failure.value.returncode == 3
    assert failure.value.stderr_tail.endswith("boom-marker")
    assert len(failure.value.stderr_tail) <= 4096
    assert "exited with code 3" in str(failure.value)


def test_missing_entry_point_is_a_clear_failure(tmp_path: Path) -> None:
    root = _package_dir(tmp_path, "  train:\n    command: python x.py\n")
    with pytest.raises(EntryPointFailed, match="no entry point 'validate'"):
        Dispatcher(root).run("validate", timeout=5)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    root = _package_dir(tmp_path, f"  train:\n    command: sleep 60 & echo $! > {pid_file}; wait\n")
    started = time.monotonic()
    with pytest.raises(EntryPointFailed) as failure:
        Dispatcher(root).run("train", timeout=1.0)
    assert failure.value.timed_out
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_python_on_path_is_the_clients_interpreter(tmp_path: Path) -> None:
    root = _package_dir(tmp_path, "  train:\n    command: python -c 'import sys; print(sys.executable)' >\n")
    out = tmp_path / "exe.txt"
    Dispatcher(root).run("train", str(out), timeout=30)
    assert os.path.dirname(out.read_text().strip()) == os.path.dirname(sys.executable)


def test_python_env_is_built_once_and_reused(tmp_path: Path) -> None:
    root = _package_dir(tmp_path, "  train:\n    command: python -c 'import sys; print(sys.prefix)' >\n")
    (root / "fedn.yaml").write_text((root / "fedn.yaml").read_text() + "python_env: python_env.yaml\n")
    (root / "python_env.yaml").write_text("name: my_env\ndependencies: []\n")
    dispatcher = Dispatcher(root)
    venv = dispatcher.prepare_python_env(timeout=120)
    assert venv == root / "my_env"
    marker_mtime = (venv / ".fedplane-venv-ready").stat().st_mtime_ns
    out = tmp_path / "prefix.txt"
    dispatcher.run("train", str(out), timeout=30)
    assert out.read_text().strip() == str(venv)

    again = Dispatcher(root)
    assert again.prepare_python_env(timeout=120) == venv
    assert (venv / ".fedplane-venv-ready").stat().st_mtime_ns == marker_mtime
