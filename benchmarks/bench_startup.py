"""Start-up of a fresh process: the environment byte-compiled at install (after) against compiled at every import
(before: `pip install --no-compile`, which `make install` used for a while).

    python benchmarks/bench_startup.py [--repeats 2]

Where ``PYTHONDONTWRITEBYTECODE`` is set (as on the machines this project is tested on), Python never writes the
compiled module it makes at import, so an environment installed without byte-compiling compiles torch, transformers
and the rest again in every process. The "before" side reproduces that on this environment without touching it:
``PYTHONPYCACHEPREFIX`` points Python at an empty cache folder, so it finds no compiled module and (with
``PYTHONDONTWRITEBYTECODE``) writes none. Each side runs the same commands in fresh processes, alternating:

- ``import``: the imports of a ``kedro run`` (kedro, the project's pipelines, which import torch and transformers);
- ``kedro run --env smoke --pipelines ingestion``: a short run, from an empty data root each time.

The section is written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_result, timed  # noqa: E402

IMPORTS = ("import torch, transformers, trl; from kedro.framework.project import configure_project; "
           "configure_project('ru_rlhf'); from ru_rlhf.pipeline_registry import register_pipelines; "
           "register_pipelines()")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    kedro = str(Path(sys.executable).with_name("kedro"))
    base_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1", "RU_RLHF_MLFLOW": "off", "TQDM_DISABLE": "1"}
    base_env.pop("PYTHONPYCACHEPREFIX", None)
    empty_cache = tempfile.mkdtemp(prefix="no_pyc_")
    sides = {"compiled at every import (before)": {**base_env, "PYTHONPYCACHEPREFIX": empty_cache},
             "byte-compiled at install (after)": base_env}
    commands = {"imports of a `kedro run`": lambda d: [sys.executable, "-c", IMPORTS],
                "`kedro run --env smoke --pipelines ingestion`": lambda d: [kedro, "run", "--env", "smoke",
                                                                           "--pipelines", "ingestion"]}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for what, cmd in commands.items():
            for side, env in sides.items():
                with tempfile.TemporaryDirectory() as root:
                    t = timed(cmd(root), {**env, "RU_RLHF_DATA_ROOT": root})
                times.setdefault((what, side), []).append(t)
                print(f"{what}, {side}: {t:.2f} s", flush=True)
    before, after = list(sides)
    md = ["| command | before: compiled at every import, s | after: byte-compiled at install, s | after / before |",
          "|---|---:|---:|---:|"]
    for what in commands:
        b, a = min(times[(what, before)]), min(times[(what, after)])
        md.append(f"| {what} | {b:.2f} | {a:.2f} | {a / b:.3f} |")
    notes = (f"Fresh processes, the two sides alternating, {args.repeats} of each; the table gives each side's "
             "fastest. PYTHONDONTWRITEBYTECODE=1 on both sides; before: PYTHONPYCACHEPREFIX at an empty folder "
             "(no compiled module is found or written), after: the environment's own byte-compiled modules.")
    append_result("Start-up: byte-compiled environment", [], notes, markdown="\n".join(md))


if __name__ == "__main__":
    main()
