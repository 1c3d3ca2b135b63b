"""bench/run.py: reading the figures' result lines, judging them, and writing the results table.

Canned output only; no benchmark runs here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


OUTPUT = """\
starting the server
BENCH-RESULT {"name": "list: rate", "value": 400, "unit": "req/s", "baseline": 1000, "baseline_name": "plain view", "target": {"ratio_at_least": 0.25}}
BENCH-RESULT {"name": "list: p95", "value": 31.5, "unit": "ms", "baseline": 4.0, "target": {"at_most": 20}}
BENCH-RESULT {"name": "10 clients", "value": 0.2, "unit": "s", "baseline": 1.1, "baseline_name": "polling"}
BENCH-RESULT {"name": "broken", "value": "fast"}
BENCH-RESULT not json
done
"""


def test_result_lines_are_read_and_judged(runner: ModuleType) -> None:
    lines = runner.parse_results("api", OUTPUT)
    assert [line.name for line in lines] == [
        "list: rate",
        "list: p95",
        "10 clients",
        "unreadable result line",
        "unreadable result line",
    ]
    rate, p95, context, broken, not_json = lines
    assert rate.ratio == pytest.approx(0.4)
    assert rate.verdict == "met"
    assert rate.target_text() == "≥ 0.25x baseline"
    assert p95.verdict == "missed"
    assert p95.target_text() == "≤ 20 ms"
    assert context.verdict == "—"
    assert context.ratio == pytest.approx(0.2 / 1.1)
    assert "value must be a number" in broken.note
    assert broken.verdict == not_json.verdict == "missed"


@pytest.mark.parametrize(
    ("target", "value", "baseline", "verdict"),
    [
        ({"ratio_at_least": 0.5}, 0.5, 1.0, "met"),
        ({"ratio_at_least": 0.5}, 0.49, 1.0, "missed"),
        ({"ratio_at_most": 2}, 3.0, 1.0, "missed"),
        ({"at_least": 3}, 3.0, None, "met"),
        ({"at_most": 0.3}, 0.31, 2.0, "missed"),
        ({"ratio_at_least": 0.5}, 1.0, None, "missed"),  # a ratio target needs its baseline
        ({"at_most": 1}, None, None, "missed"),  # nothing measured
    ],
)
def test_verdicts(
    runner: ModuleType, target: dict, value: float | None, baseline: float | None, verdict: str
) -> None:
    line = runner.Line("f", "n", value=value, baseline=baseline, target=target)
    assert line.verdict == verdict


def test_a_target_of_an_unknown_kind_is_refused(runner: ModuleType) -> None:
    with pytest.raises(ValueError, match="target must be one of"):
        runner.parse_result("f", '{"name": "n", "value": 1, "target": {"faster": 2}}')


AGGREGATION_OUTPUT = """\
  N  adds s finish s e2e GB/s load GB/s fold GB/s copy GB/s fold/copy  peak MB model MB  memory  speed
----------------------------------------------------------------------------------------------------
  2    2.56     0.36     0.07      7.59      4.84      4.30      1.12      114      100    PASS  PASS
 10    0.29     0.25     1.85      6.64      1.50      3.47      0.43      250      100    PASS  FAIL
OVERALL: FAIL
"""


def test_the_aggregation_table_gives_its_slowest_fold_and_largest_peak(runner: ModuleType) -> None:
    fold, memory = runner.parse_aggregation(AGGREGATION_OUTPUT)
    assert (fold.value, fold.baseline, fold.verdict) == (1.50, 3.47, "missed")
    assert "N = 10" in fold.name
    assert (memory.value, memory.target, memory.verdict) == (250.0, {"at_most": 300.0}, "met")
    [nothing] = runner.parse_aggregation("worker failed\n")
    assert nothing.verdict == "missed"


def test_the_runner_writes_the_table_with_the_machine(
    runner: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "good.py").write_text(
        "print('warming up')\n"
        'print(\'BENCH-RESULT {"name": "x: rate", "value": 3, "unit": "req/s", "baseline": 4, '
        '"baseline_name": "plain", "target": {"ratio_at_least": 0.5}}\')\n'
    )
    (tmp_path / "silent.py").write_text("import sys; sys.exit(2)\n")
    monkeypatch.setattr(runner, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(
        runner,
        "FIGURES",
        [
            runner.Figure("good", "good.py"),
            runner.Figure("silent", "silent.py"),
            runner.Figure("model transfer", "model_transfer.py"),
        ],
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    output = tmp_path / "RESULTS.md"

    assert runner.main(["--quick", "--output", str(output)]) == 1  # the silent figure counts as missed

    text = output.read_text()
    assert "make bench-quick" in text
    for key in ("cpu:", "memory:", "python:", "postgresql: not configured", "load average at start"):
        assert key in text
    assert "| good | x: rate | 3 req/s | 4 (plain) | 0.75x | ≥ 0.5x baseline | met |" in text
    assert "| silent | printed no result lines (exit 2) (see log) |" in text
    assert "absent: bench/model_transfer.py does not exist" in text
    assert (tmp_path / "var" / "bench" / "good.log").read_text().startswith("warming up")


TRANSFER_OUTPUT = """\
model transfer: 2 cores, load average 5.1, chunk 1048576 bytes, scratch /tmp
transfer  100M download combiner   693.7 MB/s  raw gRPC  1454.6 MB/s  ratio 0.48  target >= 0.6x  missed
transfer  100M download (raw gRPC without the disk  1222.4 MB/s: combiner at 0.57x of the transport alone)
transfer  100M upload   combiner   571.7 MB/s  raw gRPC   636.2 MB/s  ratio 0.90  target >= 0.6x  met
transfer    3G skipped: needs 9.1 GB free under /tmp, has 2.0 GB
OVERALL: missed
"""


def test_the_model_transfer_rows_become_lines(runner: ModuleType) -> None:
    download, upload, skipped = runner.parse_model_transfer(TRANSFER_OUTPUT)
    assert (download.name, download.value, download.baseline) == (
        "100M download through the combiner",
        693.7,
        1454.6,
    )
    assert download.verdict == "missed"
    assert (upload.value, upload.verdict, upload.target_text()) == (571.7, "met", "≥ 0.6x baseline")
    assert skipped.name.startswith("3G skipped") and skipped.verdict == "missed"
    # Once the script prints result lines, those are what counts.
    [line] = runner.parse_model_transfer(TRANSFER_OUTPUT + 'BENCH-RESULT {"name": "n", "value": 1}\n')
    assert line.name == "n"
