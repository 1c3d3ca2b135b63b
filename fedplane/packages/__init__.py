"""Compute packages: safe unpacking, fedn.yaml reading and running entry points.

A compute package is a `.tar.gz`/`.tgz`/`.tar.bz2` (or, for uploads checked by the controller,
`.zip`) holding a `fedn.yaml` with `entry_points`. Archives come from the network, so every
member is checked before anything touches the disk, and extraction writes regular files and
directories only. Pure Python: no Django, no fedplane dependencies beyond PyYAML.

`archive` checks and extracts archives, `manifest` reads and checks fedn.yaml (and a whole
archive, for the controller's upload check), `dispatcher` runs the entry points.
"""

from fedplane.packages.archive import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    PackageError,
    UnsafeArchive,
    archive_kind,
    safe_extract,
)
from fedplane.packages.dispatcher import STDERR_TAIL_BYTES, Dispatcher, EntryPointFailed, EntryPointResult
from fedplane.packages.manifest import (
    FEDN_YAML,
    InvalidPackage,
    PackageInfo,
    entry_points_of,
    find_package_root,
    inspect_archive,
    parse_fedn_yaml,
    read_fedn_yaml,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "FEDN_YAML",
    "STDERR_TAIL_BYTES",
    "Dispatcher",
    "EntryPointFailed",
    "EntryPointResult",
    "InvalidPackage",
    "PackageError",
    "PackageInfo",
    "UnsafeArchive",
    "archive_kind",
    "entry_points_of",
    "find_package_root",
    "inspect_archive",
    "parse_fedn_yaml",
    "read_fedn_yaml",
    "safe_extract",
]
