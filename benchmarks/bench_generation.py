"""Generation: a per-prompt `model.generate` loop (as in the HelpSteer2 notebook) against the batched node.

Both generate the same candidate grid (6 sampling settings) for the same prompts with the same
model; each reports new tokens per second (the median of 3 alternating repeats; each timed batched
call after an untimed one of the same size), and the ratio is taken in this one run (after a short
untimed warm-up of both paths).

    python benchmarks/bench_generation.py [--prompts 192] [--budgets uniform|node] [--max-new-tokens 64] [--repeats 3]

The batched path is the node's call: ``generate`` with the base env's ``sft.candidates.batch_size``
(768 rows decoded at once, continuously batched: new prompts' rows join as ended rows leave). The
node runs 18 000 rows through it; 192 prompts (1 152 rows) keep the loop's side to about a minute per
repeat. With 48 prompts (288 rows, fewer than one batch) there is nothing to refill and the figure is
that of one batch's drain; ``docs/benchmarks.md`` reports both.

``--budgets uniform`` (the default) gives every prompt ``--max-new-tokens``; ``--budgets node`` gives each
prompt its task's budget from the base env's ``sft.candidates.max_new_tokens_by_task`` (typed by
``SftParams``: qa 24, dialogue 48, summarization 64), to both paths; the batched path runs them all in
one call with per-row budgets, as the candidates node does.

The model is the trained SFT policy in data/06_models/sft_policy when it exists (run
`kedro run --pipelines ingestion,sft` first), else a fresh model of the default size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

from ru_rlhf.models.generation import GenerationStats, generate  # noqa: E402
from ru_rlhf.models.policy import PolicySize, format_prompt, load_policy, load_tokenizer  # noqa: E402
from ru_rlhf.pipelines.sft.params import SftParams  # noqa: E402


def per_prompt_loop(model, tok, prompts, temps, tops, budgets) -> tuple[int, float]:
    """The notebook's way: one `model.generate` call per prompt and sampling setting."""
    new_tokens, start = 0, time.perf_counter()
    for p, t, tp, b in zip(prompts, temps, tops, budgets):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=t, top_p=tp, max_new_tokens=b,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new_tokens += int(out.shape[1] - enc["input_ids"].shape[1])
    return new_tokens, time.perf_counter() - start


def batched(model, tok, prompts, temps, tops, budgets, seeds, batch_size) -> GenerationStats:
    """The node's way: one `generate` call for all rows, each with its own token budget."""
    _, stats = generate(model, tok, list(prompts), temperatures=list(temps), top_ps=list(tops), seeds=seeds,
                        max_new_tokens=list(budgets), batch_size=batch_size, progress=False)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=192)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the base env's sft.candidates.batch_size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budgets", choices=["uniform", "node"], default="uniform")
    args = ap.parse_args()

    model_dir, tok_dir = ROOT / "data/06_models/sft_policy", ROOT / "data/06_models/tokenizer"
    prompts_path = ROOT / "data/03_primary/prompts.parquet"
    if not (tok_dir.exists() and prompts_path.exists()):
        sys.exit("run `kedro run --pipelines ingestion,sft` first (the benchmark uses its tokenizer and prompts)")
    tok = load_tokenizer(tok_dir)
    if model_dir.exists():
        model, which = load_policy(model_dir), "trained SFT policy"
    else:
        model, which = load_policy(size=PolicySize(), tokenizer=tok, seed=0), "fresh default-size policy"
    model.eval()
    sample = pd.read_parquet(prompts_path).sample(n=args.prompts, random_state=0)
    node = SftParams.of(yaml.safe_load((ROOT / "conf/base/parameters_sft.yml").read_text())["sft"])
    by_task = node.candidates.max_new_tokens_by_task if args.budgets == "node" else {}
    args.batch_size = args.batch_size or node.candidates.batch_size
    grid = [(t, p) for t in (0.3, 0.7, 1.0) for p in (0.85, 0.95)]
    rows = [(format_prompt(x), t, p, by_task.get(task, args.max_new_tokens))
            for x, task in zip(sample["prompt"], sample["task_type"]) for t, p in grid]
    texts, temps, tops, budgets = zip(*rows)
    torch.manual_seed(0)
    # warm-up of both paths on other prompts (first-call allocations and kernel selection are not timed)
    per_prompt_loop(model, tok, texts[-6:], temps[-6:], tops[-6:], [8] * 6)
    generate(model, tok, list(texts[-12:]), temperatures=list(temps[-12:]), top_ps=list(tops[-12:]),
             seeds=list(range(12)), max_new_tokens=8, batch_size=args.batch_size, progress=False)

    # each path 3 times, alternating, and the median of each (one run's figure moves by ~10 % with
    # the machine's state; alternating keeps a slow spell from falling on one path only). Each
    # timed batched call follows an untimed one of the same size with other seeds: the loop is
    # timed in its steady state (one call per row, back to back), and so is the node, which runs
    # right after other work; a lone call after the loop also pays for first touching its cache's memory.
    loops, runs, stats = [], [], None
    for rep in range(args.repeats):
        loop_tokens, loop_s = per_prompt_loop(model, tok, texts, temps, tops, budgets)
        loops.append((loop_tokens / loop_s, loop_tokens, loop_s))
        batched(model, tok, texts, temps, tops, budgets, [10_000 * (rep + 1) + i for i in range(len(texts))],
                args.batch_size)
        stats = batched(model, tok, texts, temps, tops, budgets, list(range(len(texts))), args.batch_size)
        runs.append((stats.tokens_per_second, stats.new_tokens, stats.seconds))
    (loop_tps, loop_tokens, loop_s), (batch_tps, batch_tokens, batch_s) = (
        sorted(r)[len(r) // 2] for r in (loops, runs))
    ratio = batch_tps / loop_tps
    table = [
        ("model", f"{which}, {model.num_parameters() / 1e6:.2f}M parameters"),
        ("sequences (prompts x 6 settings)", f"{len(texts)} ({args.prompts} x 6)"),
        ("max new tokens", str(args.max_new_tokens) if args.budgets == "uniform"
         else "per task, as the node: " + ", ".join(f"{k} {v}" for k, v in by_task.items())),
        ("repeats (median shown)", str(args.repeats)),
        ("per-prompt loop: new tokens, seconds, tokens/s", f"{loop_tokens}, {loop_s:.1f}, {loop_tps:.1f}"),
        ("per-prompt loop: tokens/s of each repeat", ", ".join(f"{r[0]:.1f}" for r in loops)),
        (f"batched node ({args.batch_size} rows at once, continuous batching): new tokens, seconds, tokens/s",
         f"{batch_tokens}, {batch_s:.2f}, {batch_tps:.1f}"),
        ("batched node: tokens/s of each repeat", ", ".join(f"{r[0]:.1f}" for r in runs)),
        ("ratio batched / loop (tokens/s)", f"{ratio:.1f}x (target >= 20x)"),
        ("batched: times ended rows were dropped from the running batch", str(stats.compactions)),
    ]
    for k, v in table:
        print(f"{k}: {v}")
    append_result(f"Generation: batched vs per-prompt loop ({args.budgets} token budgets)", table)


if __name__ == "__main__":
    main()
