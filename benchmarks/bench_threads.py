"""Thread settings (#28, item 3): how the RL steps of the base env scale with torch's threads on this machine.

    python benchmarks/bench_threads.py [--env base] [--steps 6] [--method reinforce] [--data-root DIR]

The env's RL ``--method`` (REINFORCE by default: the base run's slowest RL run), its first ``--steps`` steps on the SFT
policy with the env's reward model, no evaluation, on the artifacts of an earlier ``kedro run`` (as
``bench_repeated_work.py``'s RL rows set them up), three ways, each in fresh processes:

1. one process, 2 torch threads (the project's setting: torch's default, one per core);
2. one process, 1 thread;
3. two processes at once, 1 thread each (what running two RL runs side by side, e.g. with Kedro's ParallelRunner,
   would give): both set up first, then released together; their throughput against row 1's.

The ratio of each row is its time (row 3: the time the two runs take together, per run) over row 1's. The same seed on
every side, so the runs do the same arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402


def worker(args) -> None:
    """One side: set the threads, set up the env's RL run, wait for the go file, train, print the seconds."""
    import copy

    import torch

    torch.set_num_threads(args.threads)
    import bench_repeated_work as brw

    from ru_rlhf.rl import loop

    data = Path(args.data_root)
    train_prompts, tok, sft, ref, reward, cfg = brw._rl_setup(data, brw._params(args.env), args.steps, args.method)
    print("READY", flush=True)
    while args.go and not Path(args.go).exists():
        time.sleep(0.05)
    start = time.perf_counter()
    loop.train(copy.deepcopy(sft), ref, tok, train_prompts, reward, cfg, progress=False)
    took = time.perf_counter() - start
    print("RESULT " + json.dumps({"threads": torch.get_num_threads(), "seconds": took, "end": time.time()}), flush=True)


def _spawn(args, threads: int, go: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--steps", str(args.steps),
           "--method", args.method, "--env", args.env, "--data-root", str(args.data_root), "--go", go]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    # stderr (logs) to a file, not a pipe: a pipe nobody reads while the worker runs could fill and block it
    err = tempfile.NamedTemporaryFile("w+", prefix="bench-threads-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    proc.stderr_path = err.name
    return proc


def _stderr_tail(p: subprocess.Popen) -> str:
    """The last lines a worker wrote to its stderr file."""
    return Path(p.stderr_path).read_text(errors="replace")[-3000:]


def _together(args, threads: list[int]) -> list[dict]:
    """Start one process per entry of ``threads``, release them together once all are set up; their results."""
    go = Path(tempfile.mkdtemp(prefix="bench-threads-")) / "go"
    procs = [_spawn(args, t, str(go)) for t in threads]
    for p in procs:  # each prints READY once set up
        for line in p.stdout:
            if line.startswith("READY"):
                break
        else:
            raise SystemExit(f"a worker ended before it was ready:\n{_stderr_tail(p)}")
    go.touch()
    out = []
    for p in procs:
        rest, _ = p.communicate()
        line = next((x for x in rest.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            raise SystemExit(f"a worker failed:\n{_stderr_tail(p)}")
        out.append(json.loads(line[len("RESULT "):]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="base")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--method", default="reinforce")
    ap.add_argument("--data-root", default=None, help="the earlier run's data root (default: the env's)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--go", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.data_root is None:
        args.data_root = os.environ.get("RU_RLHF_DATA_ROOT", str(ROOT / "data"))
    if args.worker:
        worker(args)
        return

    two = _together(args, [2])[0]["seconds"]
    one = _together(args, [1])[0]["seconds"]
    pair = _together(args, [1, 1])
    start = min(r["end"] - r["seconds"] for r in pair)
    both = max(r["end"] for r in pair) - start  # wall time from the first start to the last end
    each = ", ".join(f"{r['seconds']:.1f}" for r in pair)
    what = f"{args.method.upper()} of env {args.env}, {args.steps} steps (no evaluation)"
    table = [
        ("one process, 2 threads (the project's setting)", f"{two:.1f} s"),
        ("one process, 1 thread", f"{one:.1f} s: {one / two:.2f}x the 2-thread time; 2 threads run "
                                  f"{one / two:.2f}x as fast (2.00 would be perfect scaling)"),
        ("two processes at once, 1 thread each", f"{both:.1f} s for both ({each}"
                                                 f" s each): {both / 2:.1f} s a run, {both / 2 / two:.2f}x row 1's"),
    ]
    for k, v in table:
        print(f"{k}: {v}")
    gain = two / (both / 2)
    append_result(f"Thread settings, env {args.env}", table,
                  notes=(f"{what}, on the artifacts under `{args.data_root}`; each side in fresh processes, set up "
                         f"(models loaded, the reward normalisation's reference answers sampled) before its clock "
                         f"starts. Two 1-thread processes side by side do {gain:.2f}x the work per second of one "
                         f"2-thread process. The project keeps torch's default of one thread per core and runs its "
                         f"nodes one after another: running RL runs side by side would need Kedro's ParallelRunner "
                         f"(every dataset those nodes read saved and loaded in each process) and would hold two runs' "
                         f"models in memory at once; not built."))


if __name__ == "__main__":
    main()
