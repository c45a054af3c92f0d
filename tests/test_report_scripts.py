"""The report scripts: comparing two runs, the README's results table, the benchmarks file's order."""

from __future__ import annotations

import importlib.util
import json
import sys

import pandas as pd

from tests.conftest import PROJECT_ROOT


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


compare_runs = _load(PROJECT_ROOT / "scripts" / "compare_runs.py")
results_table = _load(PROJECT_ROOT / "scripts" / "results_table.py")
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
bench = _load(PROJECT_ROOT / "benchmarks" / "_common.py")


def _run(root, seconds: float, accuracy: float, root_name: str) -> None:
    (root / "08_reporting").mkdir(parents=True)
    (root / "08_reporting" / "m.json").write_text(json.dumps({"seconds": seconds, "accuracy": accuracy,
                                                              "report": f"/x/{root_name}/08_reporting/m.json"}))
    pd.DataFrame({"step": [1, 2], "reward": [0.5, accuracy], "seconds": [seconds, 2 * seconds]}).to_parquet(
        root / "08_reporting" / "log.parquet")
    (root / "08_reporting" / "cost.md").write_text(
        "| node | wall time (s) | loss |\n|---|---|---|\n" f"| a | {seconds} | {accuracy} |\n")


def test_runs_that_differ_only_in_wall_clock_fields_and_data_root_are_equal(tmp_path):
    _run(tmp_path / "a", 1.0, 0.9, "a")
    _run(tmp_path / "b", 2.5, 0.9, "b")
    assert compare_runs.compare(tmp_path / "a", tmp_path / "b") == []


def test_a_changed_result_is_found_in_every_format(tmp_path):
    _run(tmp_path / "a", 1.0, 0.9, "a")
    _run(tmp_path / "b", 1.0, 0.8, "b")
    (tmp_path / "b" / "extra.bin").write_bytes(b"x")
    problems = compare_runs.compare(tmp_path / "a", tmp_path / "b")
    assert sorted(p.split(":")[0] for p in problems) == [
        "08_reporting/cost.md", "08_reporting/log.parquet", "08_reporting/m.json", f"only in {tmp_path / 'b'}"]


def test_the_results_table_names_the_run_of_each_row():
    rows = [{"env": "base", "stage": "sft", "headline": "QA 0.5 | x", "date": "2026-12-06 10:00 UTC",
             "commit": "abc1234", "dirty": True},
            {"env": "base", "stage": "alignment", "headline": "no report", "date": "-", "commit": "-", "dirty": None}]
    lines = results_table.markdown(rows).splitlines()
    assert lines[2] == "| base | sft | QA 0.5 / x | abc1234 + uncommitted changes, 2026-12-06 10:00 UTC |"
    assert lines[3] == "| base | alignment | no report | - |"


def test_the_benchmarks_file_opens_with_the_newest_run_of_each_benchmark():
    sections = [("E2E", "2026-11-21 10:00 UTC", "old\n"), ("Gen", "2026-11-22 10:00 UTC", "gen\n"),
                ("E2E", "2026-12-06 10:00 UTC", "new\n")]
    text = bench.render(sections)
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads == ["# Benchmarks", "## Current figures", "### E2E (2026-12-06 10:00 UTC)",
                     "### Gen (2026-11-22 10:00 UTC)", "## History", "### E2E (2026-11-21 10:00 UTC)"]
    assert bench.render(bench._sections(text)) == text


def test_the_base_env_end_to_end_budget_opens_the_benchmarks_file_whatever_its_date():
    sections = [("End to end, env base", "2026-11-21 10:00 UTC", "base\n"), ("Gen", "2026-12-06 10:00 UTC", "gen\n"),
                ("Note", "", "undated\n"), ("End to end, env smoke", "2026-12-07 10:00 UTC", "smoke\n")]
    heads = [line for line in bench.render(sections).splitlines() if line.startswith("### ")]
    assert heads == ["### End to end, env base (2026-11-21 10:00 UTC)", "### End to end, env smoke (2026-12-07 10:00 UTC)",
                     "### Gen (2026-12-06 10:00 UTC)", "### Note"]


def test_the_index_of_changes_follows_the_base_budget_and_keeps_its_place_after_a_new_run():
    sections = [("End to end, env base", "2026-11-21 10:00 UTC", "base\n"), ("Gen", "2026-12-06 10:00 UTC", "gen\n"),
                (bench.SUMMARY, "", "index\n")]
    text = bench.render(sections)
    heads = [line for line in text.splitlines() if line.startswith("### ")]
    assert heads == ["### End to end, env base (2026-11-21 10:00 UTC)", f"### {bench.SUMMARY}",
                     "### Gen (2026-12-06 10:00 UTC)"]
    again = bench.render([*bench._sections(text), ("Gen", "2026-12-07 10:00 UTC", "gen 2\n")])
    heads = [line for line in again.splitlines() if line.startswith("### ")]
    assert heads[:3] == ["### End to end, env base (2026-11-21 10:00 UTC)", f"### {bench.SUMMARY}",
                         "### Gen (2026-12-07 10:00 UTC)"]
    assert "index" in again
