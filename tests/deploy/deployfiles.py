"""Readers for the files of deploy/: systemd units, the Procfile, the Containerfile, and the
environment variables the code reads (for docs/deploy.md's table).

The units name the installed layout (/opt/fedplane, /etc/fedplane, /var/lib/fedplane); the tests
map it onto this checkout and a temporary folder, and expand ExecStart= as systemd would.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
PROCFILE = DEPLOY / "Procfile"
CONTAINERFILE = DEPLOY / "Containerfile"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

INSTALL_ROOT = "/opt/fedplane"
CONFIG_DIR = "/etc/fedplane"
STATE_DIR = "/var/lib/fedplane"

# Procfile process name -> the unit that runs the same command.
PROCFILE_UNITS = {
    "web": "fedplane-web.service",
    "worker": "fedplane-worker.service",
    "beat": "fedplane-beat.service",
    "combiner": "fedplane-combiner@.service",
}
ALL_UNITS = (*PROCFILE_UNITS.values(), "fedplane-client@.service")


@dataclass(frozen=True)
class Unit:
    """One unit file: each section's (key, value) pairs in order (keys may repeat)."""

    name: str
    sections: dict[str, list[tuple[str, str]]]

    def values(self, section: str, key: str) -> list[str]:
        return [value for found, value in self.sections.get(section, []) if found == key]

    def value(self, section: str, key: str, default: str | None = None) -> str | None:
        found = self.values(section, key)
        return found[-1] if found else default

    @property
    def templated(self) -> bool:
        return self.name.endswith("@.service")


def read_unit(name: str) -> Unit:
    """Parse a unit file: [Section] headers, Key=Value lines, # and ; comments, \\ continuations."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{name}: not a unit file line: {raw!r}")
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return Unit(name, sections)


def specifiers(unit: Unit, instance: str) -> dict[str, str]:
    """The specifiers the units use, for one instance of a template (`%i`, `%I`, `%n`, `%%`)."""
    unit_name = unit.name.replace("@.", f"@{instance}.") if unit.templated else unit.name
    return {"i": instance, "I": instance, "n": unit_name, "%": "%"}


def expand_specifiers(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter not in values:
            raise ValueError(f"specifier %{letter} is not one these tests expand")
        return values[letter]

    return re.sub(r"%(.)", replace, text)


@dataclass(frozen=True)
class Installation:
    """Where the installed layout lands for a test: the checkout, a config and a state folder."""

    root: Path
    config_dir: Path
    state_dir: Path

    def path(self, text: str) -> str:
        """`text` with the installed layout's folders replaced by this installation's."""
        return (
            text.replace(INSTALL_ROOT, str(self.root))
            .replace(CONFIG_DIR, str(self.config_dir))
            .replace(STATE_DIR, str(self.state_dir))
        )


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd reads them (comments, blank lines, optional quotes)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Launch:
    """What systemd would run for a unit: argv, working directory, environment, stop policy."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    kill_signal: signal.Signals
    stop_timeout: float
    kill_mode: str


def expand_command(command: str, env: Mapping[str, str]) -> list[str]:
    """ExecStart= split into argv: ${VAR} is one word, $VAR splits on spaces (systemd.service(5))."""
    words: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words.extend(env.get(whole.group(1), "").split())
            continue
        words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def launch(unit: Unit, installation: Installation, base_env: Mapping[str, str], instance: str = "") -> Launch:
    """The unit's ExecStart as systemd would start it, on `installation`.

    The environment is `base_env` (what systemd itself gives: PATH, LANG), then Environment=, then
    each EnvironmentFile= in order (a leading `-` makes the file optional), later ones winning.
    """
    spec = specifiers(unit, instance)

    def expanded(section: str, key: str) -> list[str]:
        return [installation.path(expand_specifiers(value, spec)) for value in unit.values(section, key)]

    env = dict(base_env)
    for assignments in expanded("Service", "Environment"):
        for assignment in shlex.split(assignments):
            key, _, value = assignment.partition("=")
            env[key] = value
    for file_name in expanded("Service", "EnvironmentFile"):
        optional = file_name.startswith("-")
        path = Path(file_name.removeprefix("-"))
        if not path.exists():
            if optional:
                continue
            raise FileNotFoundError(f"{unit.name}: EnvironmentFile {path} is missing")
        env.update(read_environment_file(path))
    (command,) = expanded("Service", "ExecStart")
    (workdir,) = expanded("Service", "WorkingDirectory")
    kill_signal = unit.value("Service", "KillSignal", "SIGTERM") or "SIGTERM"
    return Launch(
        argv=expand_command(command, env),
        cwd=Path(workdir),
        env=env,
        kill_signal=signal.Signals[kill_signal],
        stop_timeout=float(unit.value("Service", "TimeoutStopSec", "90") or 90),
        kill_mode=unit.value("Service", "KillMode", "control-group") or "control-group",
    )


def read_procfile() -> dict[str, str]:
    """name -> command of each `name: command` line (what honcho and foreman read)."""
    entries: dict[str, str] = {}
    for line in PROCFILE.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(.+)", line.strip())
        if match:
            entries[match.group(1)] = match.group(2).strip()
    return entries


def relative_to_install(argv: Iterable[str]) -> list[str]:
    """argv with the installed root dropped, as a command run from the checkout's root reads."""
    return [word.replace(INSTALL_ROOT + "/", "") for word in argv]


# -- the Containerfile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def read_containerfile() -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def dockerignore_patterns() -> list[re.Pattern[str]]:
    """.dockerignore's patterns as regular expressions over paths relative to the build context."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            raise ValueError("exceptions (!pattern) are not handled by these tests")
        regex = re.escape(line.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append(re.compile(regex))
    return patterns


def ignored(relative: str, patterns: list[re.Pattern[str]]) -> bool:
    """Whether the build context leaves out `relative` (itself or one of its parent folders)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    return any(pattern.fullmatch(prefix) for pattern in patterns for prefix in prefixes)


def containerfile_env() -> dict[str, str]:
    """The image's ENV, in order."""
    env: dict[str, str] = {}
    for instruction in read_containerfile():
        if instruction.keyword == "ENV":
            for assignment in shlex.split(instruction.arguments):
                key, _, value = assignment.partition("=")
                env[key] = value
    return env


def assemble_image_tree(installation: Installation) -> None:
    """What the image's WORKDIR would hold, without a builder: each COPY from the build context
    (less what .dockerignore leaves out) into `installation.root`, the checkout's virtualenv in place
    of the one the image installs, then the RUN steps that run the project's own code."""
    instructions = read_containerfile()
    workdir = next(i.arguments for i in instructions if i.keyword == "WORKDIR")
    assert workdir == INSTALL_ROOT, "the image's WORKDIR is the units' installed root"
    patterns = dockerignore_patterns()
    target = installation.root
    target.mkdir(parents=True)

    def copy_file(source: Path, destination: Path) -> None:
        relative = str(source.relative_to(ROOT))
        if ignored(relative, patterns):
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)

    for instruction in instructions:
        if instruction.keyword != "COPY":
            continue
        *sources, destination = shlex.split(instruction.arguments)
        into = target / destination
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                for file in path.rglob("*"):
                    if file.is_file():
                        copy_file(file, into / file.relative_to(path))
            else:
                copy_file(path, into / path.name if destination.endswith("/") else into)
    (target / ".venv").symlink_to(ROOT / ".venv")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **{key: installation.path(value) for key, value in containerfile_env().items()},
    }
    for instruction in instructions:
        # The virtualenv and the user are the builder's; collectstatic and compileall are ours.
        if instruction.keyword == "RUN" and "manage.py" in instruction.arguments:
            subprocess.run(["sh", "-c", instruction.arguments], cwd=target, env=env, check=True, timeout=300)


# -- environment variables read by the code --------------------------------------------------------

# Readers of the settings (controlplane/settings/env.py): the first argument is a variable's name.
ENV_READERS = frozenset({"env_str", "env_bool", "env_int", "env_list", "getenv"})
# Mappings that hold the process's environment, under the names the code gives them.
ENV_MAPPINGS = frozenset({"os.environ", "environ", "env"})
# Keyword arguments that list variables by name (fedplane.tokenfile.resolve_token).
ENV_NAME_KEYWORDS = frozenset({"variables", "file_variables"})
# The operating system's own variables, passed on to compute packages, not settings of fedplane.
OS_VARIABLES = frozenset({"PATH", "PYTHONHOME", "HOME"})


def _string_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.targets[0].id] = node.value.value
    return constants


def _name_of(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    """A variable name spelled by `node`: a literal, a module constant, or PREFIX + literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _name_of(node.left, constants), _name_of(node.right, constants)
        if left is not None and right is not None:
            return left + right
    return None


def _prefixed_readers(tree: ast.Module, constants: Mapping[str, str]) -> dict[str, str]:
    """Local helpers like combiner_node's `env(key)`: `return environ.get(PREFIX + key, ...)`."""
    readers: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or not node.body:
            continue
        statement = node.body[-1]
        if not (isinstance(statement, ast.Return) and isinstance(statement.value, ast.Call)):
            continue
        call = statement.value
        if not (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == "get"
            and ast.unparse(call.func.value) in ENV_MAPPINGS
            and call.args
        ):
            continue
        key = call.args[0]
        if isinstance(key, ast.BinOp) and isinstance(key.op, ast.Add):
            prefix = _name_of(key.left, constants)
            if prefix is not None and isinstance(key.right, ast.Name):
                readers[node.name] = prefix
    return readers


def variables_read(path: Path) -> set[str]:
    """The environment variables a Python module reads, by name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = _string_constants(tree)
    prefixed = _prefixed_readers(tree, constants)
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ENV_READERS and node.args:
                found.add(_name_of(node.args[0], constants))
            elif isinstance(func, ast.Name) and func.id in prefixed and node.args:
                suffix = _name_of(node.args[0], constants)
                found.add(prefixed[func.id] + suffix if suffix is not None else None)
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in {"get", "getenv", "setdefault"}
                and ast.unparse(func.value) in ENV_MAPPINGS | {"os"}
                and node.args
            ):
                found.add(_name_of(node.args[0], constants))
            for keyword in node.keywords:
                if keyword.arg in ENV_NAME_KEYWORDS and isinstance(keyword.value, ast.Tuple | ast.List):
                    found.update(_name_of(element, constants) for element in keyword.value.elts)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) in ENV_MAPPINGS
        ):
            found.add(_name_of(node.slice, constants))
    return {name for name in found if name is not None} - OS_VARIABLES


def code_variables() -> dict[str, set[str]]:
    """variable -> the modules that read it, over the processes' code (tests excluded)."""
    modules = [
        path
        for package in ("controlplane", "apps", "combiner_node", "fedplane")
        for path in (ROOT / package).rglob("*.py")
        if "tests" not in path.relative_to(ROOT).parts and "migrations" not in path.parts
    ]
    # Test settings only: tests' own broker, never set in a deployment.
    modules.remove(ROOT / "controlplane" / "settings" / "test.py")
    modules.append(DEPLOY / "healthcheck.py")
    readers: dict[str, set[str]] = {}
    for module in modules:
        for name in variables_read(module):
            readers.setdefault(name, set()).add(str(module.relative_to(ROOT)))
    return readers


def documented_variables() -> dict[str, str]:
    """variable -> its row, from the table under docs/deploy.md's "## Environment" heading."""
    text = DEPLOY_DOC.read_text()
    section = text.split("\n## Environment", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", line)
        if match:
            rows[match.group(1)] = line
    return rows
