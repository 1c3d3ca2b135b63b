"""Run every benchmark figure and write one table, with the machine it ran on, to bench/RESULTS.md.

    .venv/bin/python bench/run.py            # full sizes (make bench)
    .venv/bin/python bench/run.py --quick    # small sizes, under 5 minutes (make bench-quick)
    .venv/bin/python bench/run.py --only api,round_overhead

Each figure is a script of its own in bench/. A script reports by printing result lines,
``BENCH-RESULT {json}``, one per measured value, with the baseline it measured beside it in the
same run and its target; everything else it prints is kept in its log. The runner computes each
line's ratio and whether the target is met, so every figure is judged the same way:

    {"name": "...", "value": 812.0, "unit": "req/s", "baseline": 1500.0, "baseline_name": "plain view",
     "target": {"ratio_at_least": 0.25}}

Targets: ``ratio_at_least`` / ``ratio_at_most`` bound value / baseline; ``at_least`` / ``at_most``
bound the value itself (in its unit); no target means the line is shown for context only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
RESULT_PREFIX = "BENCH-RESULT "
TARGET_KINDS = ("ratio_at_least", "ratio_at_most", "at_least", "at_most")


@dataclass
class Line:
    """One measured value of a figure, judged against its target."""

    figure: str
    name: str
    value: float | None = None
    unit: str = ""
    baseline: float | None = None
    baseline_name: str = ""
    target: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        """`met`, `missed`, or `—` when the line has no target (or nothing was measured: `missed`)."""
        if not self.target:
            return "—"
        if self.value is None:
            return "missed"
        (kind, bound), *_ = self.target.items()
        if kind.startswith("ratio_"):
            if self.ratio is None:
                return "missed"
            measured = self.ratio
        else:
            measured = self.value
        return "met" if (measured >= bound if kind.endswith("at_least") else measured <= bound) else "missed"

    def target_text(self) -> str:
        if not self.target:
            return "—"
        (kind, bound), *_ = self.target.items()
        sign = "≥" if kind.endswith("at_least") else "≤"
        if kind.startswith("ratio_"):
            return f"{sign} {bound:g}x baseline"
        return f"{sign} {bound:g} {self.unit}".rstrip()


def parse_result(figure: str, text: str) -> Line:
    """A ``BENCH-RESULT`` line's JSON as a Line; a malformed one raises ValueError naming what is wrong."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError("a result needs a name")
    target = data.get("target") or {}
    if not isinstance(target, dict) or len(target) > 1 or any(k not in TARGET_KINDS for k in target):
        raise ValueError(f"target must be one of {', '.join(TARGET_KINDS)}: {target!r}")

    def number(key: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number: {value!r}")
        return float(value)

    return Line(
        figure=figure,
        name=data["name"],
        value=number("value"),
        unit=str(data.get("unit", "")),
        baseline=number("baseline"),
        baseline_name=str(data.get("baseline_name", "")),
        target={k: float(v) for k, v in target.items()},
        note=str(data.get("note", "")),
    )


def parse_results(figure: str, output: str) -> list[Line]:
    """Every result line of a script's output; a malformed one becomes a `missed` line saying why."""
    lines = []
    for raw in output.splitlines():
        if not raw.startswith(RESULT_PREFIX):
            continue
        try:
            lines.append(parse_result(figure, raw[len(RESULT_PREFIX) :]))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            lines.append(Line(figure, "unreadable result line", target={"at_least": 0}, note=str(exc)))
    return lines


# bench/aggregation.py prints a table: one row per N (see its README section).
AGGREGATION_ROW = re.compile(
    r"^\s*(?P<n>\d+)\s+(?P<adds>[\d.]+)\s+(?P<finish>[\d.]+)\s+(?P<e2e>[\d.]+)\s+(?P<load>[\d.]+)\s+"
    r"(?P<fold>[\d.]+)\s+(?P<copy>[\d.]+)\s+(?P<ratio>[\d.]+)\s+(?P<peak>[\d.]+)\s+(?P<model>[\d.]+)\s"
)


def parse_aggregation(output: str) -> list[Line]:
    """The fedavg table as two lines: the slowest fold against copy, the largest peak against the bound."""
    rows = [m.groupdict() for raw in output.splitlines() if (m := AGGREGATION_ROW.match(raw))]
    if not rows:
        return [
            Line("aggregation", "fedavg table", target={"at_least": 0}, note="no table rows in the output")
        ]
    counts = ", ".join(row["n"] for row in rows)
    slowest = min(rows, key=lambda row: float(row["fold"]) / float(row["copy"]))
    largest = max(rows, key=lambda row: float(row["peak"]))
    model_mb = float(largest["model"])
    return [
        Line(
            "aggregation",
            f"fedavg fold, {model_mb:.0f} MB model, slowest of N = {counts} (N = {slowest['n']})",
            value=float(slowest["fold"]),
            unit="GB/s",
            baseline=float(slowest["copy"]),
            baseline_name="np.copyto",
            target={"ratio_at_least": 0.5},
        ),
        Line(
            "aggregation",
            f"fedavg peak memory growth, largest of N = {counts} (N = {largest['n']})",
            value=float(largest["peak"]),
            unit="MB",
            baseline=model_mb,
            baseline_name="model size",
            target={"at_most": 2 * model_mb + 100},
        ),
    ]


# bench/model_transfer.py prints one line per size and direction.
TRANSFER_ROW = re.compile(
    r"^transfer\s+(?P<size>\S+)\s+(?P<direction>download|upload)\s+combiner\s+(?P<value>[\d.]+) MB/s\s+"
    r"raw gRPC\s+(?P<baseline>[\d.]+) MB/s\s+ratio\s+[\d.]+\s+target >= (?P<target>[\d.]+)x"
)


def parse_model_transfer(output: str) -> list[Line]:
    """Its result lines when it prints them; otherwise its rows, one line per size and direction."""
    lines = parse_results("model transfer", output)
    if lines:
        return lines
    for raw in output.splitlines():
        if match := TRANSFER_ROW.match(raw):
            lines.append(
                Line(
                    "model transfer",
                    f"{match['size']} {match['direction']} through the combiner",
                    value=float(match["value"]),
                    unit="MB/s",
                    baseline=float(match["baseline"]),
                    baseline_name="raw gRPC",
                    target={"ratio_at_least": float(match["target"])},
                )
            )
        elif raw.startswith("transfer") and " skipped: " in raw:
            lines.append(Line("model transfer", raw.removeprefix("transfer").strip(), target={"at_least": 0}))
    return lines


@dataclass
class Figure:
    name: str
    script: str
    full_args: Sequence[str] = ()
    quick_args: Sequence[str] = ()
    timeout: float = 1800
    quick_timeout: float = 150
    # Scripts that do not print BENCH-RESULT lines get an adapter reading what they print.
    parse: Callable[[str], list[Line]] | None = None
    # Quick arguments passed only when the script's --help lists the first of them.
    optional_quick_args: Sequence[str] = ()


FIGURES = [
    Figure(
        "aggregation",
        "aggregation.py",
        quick_args=("--model-mb", "50", "--counts", "5,20"),
        quick_timeout=90,
        parse=parse_aggregation,
    ),
    Figure(
        "model transfer",
        "model_transfer.py",
        optional_quick_args=("--sizes", "100M", "--repeat", "1"),
        quick_timeout=60,
        parse=parse_model_transfer,
    ),
    Figure(
        "ingest", "ingest.py", quick_args=("--samples", "11", "--updates", "2"), quick_timeout=90, timeout=600
    ),
    Figure("api", "api.py", quick_args=("--quick",), quick_timeout=100),
    Figure(
        "clients per combiner",
        "clients_per_combiner.py",
        quick_args=("--quick",),
        timeout=900,
        quick_timeout=150,
    ),
    # Last: its hundred client processes and their database writes leave the machine busy for a
    # while after it ends, which the figures measured after it would pay for.
    Figure("round overhead", "round_overhead.py", quick_args=("--quick",), quick_timeout=240),
]


def run_script(argv: list[str], timeout: float, log: Path) -> tuple[int | None, str]:
    """Run a figure in its own process group, killed whole at the deadline; (exit code or None, output).

    Its output is echoed as it comes and kept in `log`.
    """
    output: list[str] = []
    with log.open("w") as handle:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

        def copy_output() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                output.append(raw)
                handle.write(raw)
                handle.flush()
                sys.stdout.write(raw)
                sys.stdout.flush()

        reader = threading.Thread(target=copy_output, daemon=True)
        reader.start()
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if process.poll() is None:
                # SIGTERM lets the figure stop what it started (servers, databases); then SIGKILL.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            reader.join(timeout=10)
    return code, "".join(output)


def run_figure(figure: Figure, quick: bool, logs: Path) -> list[Line]:
    script = BENCH_DIR / figure.script
    if not script.is_file():
        return [Line(figure.name, f"absent: bench/{figure.script} does not exist", note="skipped")]
    args = list(figure.quick_args if quick else figure.full_args)
    if quick and figure.optional_quick_args and figure.optional_quick_args[0] in _help_text(script):
        args.extend(figure.optional_quick_args)
    argv = [sys.executable, str(script), *args]
    print(f"\n== {figure.name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    timeout = figure.quick_timeout if quick else figure.timeout
    code, output = run_script(argv, timeout, logs / f"{figure.script.removesuffix('.py')}.log")
    seconds = time.monotonic() - started
    print(f"== {figure.name}: {'timed out' if code is None else f'exit {code}'} after {seconds:.0f} s")
    lines = (figure.parse or (lambda text: parse_results(figure.name, text)))(output)
    if code is None:
        lines.append(Line(figure.name, f"timed out after {timeout:.0f} s", target={"at_least": 0}))
    elif not lines:
        lines.append(
            Line(
                figure.name, f"printed no result lines (exit {code})", target={"at_least": 0}, note="see log"
            )
        )
    return lines


def _help_text(script: Path) -> str:
    try:
        return subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---------------------------------------------------------------- the machine and the table


def machine_description() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for raw in Path("/proc/cpuinfo").read_text().splitlines():
            if raw.startswith("model name"):
                cpu = raw.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for raw in Path("/proc/meminfo").read_text().splitlines():
            if raw.startswith("MemTotal:"):
                memory = f"{int(raw.split()[1]) / 1024**2:.1f} GiB"
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": memory,
        "python": platform.python_version(),
        "postgresql": postgres_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
    }


def postgres_version() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return "not configured (DATABASE_URL unset)"
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as connection:
            row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"
    except Exception as exc:  # the table still gets written; the reason is shown instead
        return f"unreachable ({type(exc).__name__})"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(lines: Sequence[Line]) -> str:
    rows = [
        "| figure | measured | value | baseline (same run) | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        value = f"{_number(line.value)} {line.unit}".strip() if line.value is not None else "—"
        baseline = "—"
        if line.baseline is not None:
            baseline = (
                f"{_number(line.baseline)} ({line.baseline_name})"
                if line.baseline_name
                else _number(line.baseline)
            )
        ratio = f"{line.ratio:.2f}x" if line.ratio is not None else "—"
        name = f"{line.name} ({line.note})" if line.note else line.name
        rows.append(
            f"| {line.figure} | {name} | {value} | {baseline} | {ratio} | {line.target_text()} | {line.verdict} |"
        )
    return "\n".join(rows)


def results_markdown(
    lines: Sequence[Line], machine: dict[str, str], *, quick: bool, started: dt.datetime, seconds: float
) -> str:
    mode = "make bench-quick (small sizes)" if quick else "make bench (full sizes)"
    missed = sum(line.verdict == "missed" for line in lines)
    met = sum(line.verdict == "met" for line in lines)
    parts = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.py` ({mode}) on {started:%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s. "
        "Each value is compared with its baseline measured beside it in the same run; on a shared "
        "machine the absolute figures move with the load, the ratios much less.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in machine.items()],
        "",
        "## Figures",
        "",
        table(lines),
        "",
        f"{met} met, {missed} missed. Each figure's full output is in its log under var/bench/.",
        "",
    ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under 5 minutes")
    parser.add_argument("--only", default="", help="comma-separated figure names (default: all)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where the table goes (bench/RESULTS.md)"
    )
    args = parser.parse_args(argv)

    wanted = {name.strip().replace("_", " ") for name in args.only.split(",") if name.strip()}
    unknown = wanted - {figure.name for figure in FIGURES}
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(sorted(unknown))}")
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    machine = machine_description()
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    lines: list[Line] = []
    for figure in FIGURES:
        if not wanted or figure.name in wanted:
            lines.extend(run_figure(figure, args.quick, logs))
    machine["load average at the end"] = " ".join(f"{value:.2f}" for value in os.getloadavg())
    text = results_markdown(
        lines, machine, quick=args.quick, started=started, seconds=time.monotonic() - clock
    )
    args.output.write_text(text)
    print(f"\n{table(lines)}\n\nwritten to {args.output}")
    return 1 if any(line.verdict == "missed" for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
