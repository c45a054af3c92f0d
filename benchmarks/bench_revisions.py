"""Before and after, side by side: one command at an earlier commit and at the working tree, alternating.

    python benchmarks/bench_revisions.py --before f03dccc                      # kedro run --env smoke, 3 of each
    python benchmarks/bench_revisions.py --before f03dccc --repeats 2 -- kedro run --env smoke --pipelines sft

The earlier commit is checked out in a temporary git worktree and run with that worktree's ``src`` first on
``PYTHONPATH`` (the environment is the same: this compares the project's code and configuration, not its libraries).
Each run is a fresh process writing to an empty data root (``RU_RLHF_DATA_ROOT``); the sides alternate (before,
after, before, after, ...) so that a slower or busier stretch of the machine falls on both. MLflow tracking stays on
(the default), each side in its own checkout's local store; a side's first run may create that store, which is why
the table gives each side's fastest run as well as its median. The section is written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result, timed  # noqa: E402


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--title", default=None, help="the section's title (default: the command)")
    ap.add_argument("--note", default="", help="what changed between the two sides, for the section's notes")
    ap.add_argument("command", nargs="*", help="the command (default: kedro run --env smoke)")
    args = ap.parse_args()
    command = args.command or ["kedro", "run", "--env", "smoke"]
    if command[0] == "kedro":
        command = [str(Path(sys.executable).with_name("kedro")), *command[1:]]
    before_rev = git("rev-parse", "--short", args.before)
    after_rev = git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--", "src", "conf")
                                                         else "")
    tree = Path(tempfile.mkdtemp(prefix="ru_rlhf_before_"))
    git("worktree", "add", "--detach", str(tree / "main"), before_rev)
    base_env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
                "TQDM_DISABLE": "1", "COLUMNS": "400"}
    sides = {f"before ({before_rev})": (tree / "main", {**base_env, "PYTHONPATH": str(tree / "main" / "src")}),
             f"after ({after_rev})": (ROOT, base_env)}
    times: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for i in range(args.repeats):
            for side, (cwd, env) in sides.items():
                with tempfile.TemporaryDirectory(prefix="ru_rlhf_rev_") as root:
                    took = timed(command, {**env, "RU_RLHF_DATA_ROOT": root}, cwd)
                times[side].append(took)
                print(f"run {i + 1}, {side}: {took:.2f} s", flush=True)
    finally:
        git("worktree", "remove", "--force", str(tree / "main"))
        shutil.rmtree(tree, ignore_errors=True)
    before, after = list(sides)
    shown = " ".join(["kedro", *command[1:]] if command[0].endswith("kedro") else command)
    md = ["| command | side | runs, s | fastest, s | median, s |", "|---|---|---|---:|---:|"]
    for side in sides:
        runs = ", ".join(f"{t:.1f}" for t in times[side])
        md.append(f"| `{shown}` | {side} | {runs} | {min(times[side]):.1f} | {statistics.median(times[side]):.1f} |")
    md.append("")
    md.append(f"after / before: fastest {min(times[after]) / min(times[before]):.3f}, "
              f"median {statistics.median(times[after]) / statistics.median(times[before]):.3f}")
    notes = (f"Fresh processes, each from an empty data root, the sides alternating, {args.repeats} of each; the "
             f"earlier commit in a temporary git worktree, the same Python environment. {args.note}").strip()
    append_result(args.title or f"Before and after: `{shown}`", [], notes, markdown="\n".join(md))


if __name__ == "__main__":
    main()
