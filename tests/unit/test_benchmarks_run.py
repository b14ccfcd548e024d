"""benchmarks/run.py's table logic (the benchmarks themselves are run by hand, never timed here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


def test_every_figure_names_a_script_of_this_tree_with_a_json_option() -> None:
    run = load()
    for fig in run.FIGURES:
        script = run.script_file(fig.script)
        assert script.parent == ROOT / "benchmarks" and script.exists(), fig
        assert fig.script in run.SCRIPTS, fig
        assert '"--json"' in script.read_text(), f"{script.name} has no --json"
        assert fig.kind in ("ratio", "overhead", "max", "min", "cost"), fig


def test_ratio_overhead_and_max_figures() -> None:
    run = load()
    ratio = run.Figure("r", "s", "a.v", "a.c", "ratio", 0.8)
    data = {"a": {"v": 90.0, "c": 100.0}}
    assert run.evaluate(ratio, data) == {
        "value": 90.0, "ceiling": 100.0, "ratio": 0.9, "target": ">= 0.8", "met": True
    }  # fmt: skip
    over = run.Figure("o", "s", "v", "c", "overhead", 0.03, unit="s")
    row = run.evaluate(over, {"v": 1.05, "c": 1.0})
    assert row["target"] == "<= +3%" and not row["met"] and abs(row["ratio"] - 0.05) < 1e-9
    top = run.Figure("m", "s", "v", "c", "max", 10.0, unit="ms")
    row = run.evaluate(top, {"v": 12.0, "c": 4.0})
    assert row["target"] == "< 10 ms" and not row["met"] and row["ratio"] == 3.0
    floor = run.Figure("n", "s", "v", "c", "min", 20_000)
    row = run.evaluate(floor, {"v": 15_000.0, "c": 10_000.0})
    assert row["target"] == ">= 20,000/s" and not row["met"] and row["ratio"] == 1.5
    cost = run.Figure("c", "s", "v", "c", "cost", 0.9, unit="us")
    row = run.evaluate(cost, {"v": 200.0, "c": 150.0})
    assert row["target"] == ">= 0.9" and not row["met"] and row["ratio"] == 0.75


def test_a_missing_script_is_listed_not_failed(tmp_path: Path) -> None:
    run = load()
    assert "not in this tree" in run.run_script("no_such_benchmark", [], tmp_path)
