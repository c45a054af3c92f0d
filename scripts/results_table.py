"""The README's results table, generated from the stage reports of the runs on this machine.

    python scripts/results_table.py                      # print the table for the base and ru_detox envs
    python scripts/results_table.py --env smoke          # another env (repeat --env for several)
    python scripts/results_table.py --write README.md    # replace the table between the README's markers

For each env, every stage report that exists under the env's data root gives one row: the stage, its headline
figure (the same text as the run summary, ``ru_rlhf.hooks.stage_headlines``) and the run that wrote it. The
run is named by the run record (``08_reporting/run_record.json``, written at the end of every run with the
git commit, whether the tree was dirty, and the start and end times) when the report was written during that
run; otherwise by the report file's modification time, with the commit marked "not recorded". A stage with no
report gets a row saying so. Nothing is computed here: every figure is read from a report.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"


def _catalog(env: str):
    """The env's catalog, built from its configuration as ``kedro run --env`` would."""
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import configure_project
    from kedro.io import DataCatalog

    configure_project("ru_rlhf")
    from kedro.framework.project import settings

    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=env, base_env="base", default_run_env=env,
                               **{k: v for k, v in settings.CONFIG_LOADER_ARGS.items()
                                  if k not in {"base_env", "default_run_env"}})
    run = (loader["parameters"].get("run") or {}).get("pipelines")
    return DataCatalog.from_config(loader["catalog"]), run


def _stages(run) -> list[str]:
    """The stages an env runs by default: its ``run.pipelines`` parameter, else the default pipeline's."""
    from ru_rlhf.pipeline_registry import ORDER

    return list(run) if run else list(ORDER)


def _when(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


def env_rows(env: str) -> list[dict]:
    """One row per stage report of ``env`` that exists (and one per stage of the env without a report), for the
    stages the env runs by default."""
    from ru_rlhf.hooks import HEADLINES, stage_headlines

    catalog, run = _catalog(env)
    stages = _stages(run)
    record = None
    if "run_record" in catalog and catalog.exists("run_record"):
        record = catalog.load("run_record")
    present = [r for r in stage_headlines(None, catalog)
               if r["stage"] in stages and r["path"] and Path(r["path"]).exists()]
    seen = {r["stage"] for r in present}
    rows = []
    for r in present:
        written = _when(Path(r["path"]))
        run = {"commit": "not recorded", "dirty": None}
        if record and record.get("started") and record.get("finished"):
            start, end = (datetime.fromisoformat(record[k]) for k in ("started", "finished"))
            if start <= written <= end and any(s["report"] == r["report"] for s in record.get("stages", [])):
                run = {"commit": (record.get("commit") or "not recorded")[:7], "dirty": record.get("dirty")}
        rows.append({"env": env, **r, "date": written.strftime("%Y-%m-%d %H:%M UTC"), **run})
    for stage in (s for s in HEADLINES if s in stages):
        if stage not in seen:
            rows.append({"env": env, "stage": stage, "report": None, "path": None,
                         "headline": "no report under this env's data root (stage not run here)",
                         "date": "-", "commit": "-", "dirty": None})
    return rows


def markdown(rows: list[dict]) -> str:
    """The table (markdown), one row per stage and env, in data-flow order."""
    lines = ["| env | stage | headline | run (commit, date) |", "|---|---|---|---|"]
    for r in rows:
        commit = r["commit"] + (" + uncommitted changes" if r.get("dirty") else "")
        run = "-" if r["date"] == "-" else f"{commit}, {r['date']}"
        lines.append(f"| {r['env']} | {r['stage']} | {r['headline'].replace('|', '/')} | {run} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", action="append", help="env(s) to read (default: base and ru_detox)")
    ap.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    rows = [r for env in (args.env or ["base", "ru_detox"]) for r in env_rows(env)]
    table = markdown(rows)
    if args.write:
        text = args.write.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            print(f"{args.write}: the markers {BEGIN} and {END} are missing", file=sys.stderr)
            return 2
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        args.write.write_text(f"{head}{BEGIN}\n{table}{END}{tail}", encoding="utf-8")
        print(f"wrote {len(rows)} rows into {args.write}")
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
