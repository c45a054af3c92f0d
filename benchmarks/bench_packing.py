"""Packing against length-grouped batches (#28, item 2: the reading and pre-training stages).

    python benchmarks/bench_packing.py [--env base] [--data-root DIR]

Packing short examples into full sequences saves the arithmetic spent on padding, and nothing else: every real token
is still computed. So its most is the share of padding in the batches a stage trains on now. For each TRL stage of
the sft pipeline (pre-training on the training documents, reading comprehension on the generated documents, SFT on
the demonstrations), with the env's parameters (batch size, ``group_by_length``, ``max_length``, steps), this counts
the tokens of the batches a seeded draw of transformers' own length-grouped sampler (the one TRL's trainer uses with
``train_sampling_strategy: group_by_length``) gives, against uniformly random batches, and bounds the time packing
could save: the padding share times the stage's time in an earlier ``kedro run`` (``08_reporting/node_timings.csv``;
pre-training and reading share the node ``sft.pretrain_policy``, whose time is split by their tokens).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402


def padding_share(lengths: np.ndarray, batch_size: int, steps: int, grouped: bool, seed: int) -> tuple[float, int]:
    """``(share of padding, real tokens)`` over ``steps`` batches of ``batch_size`` examples of ``lengths``, drawn
    epoch after epoch by transformers' length-grouped sampler (``grouped``) or uniformly at random."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    gen = torch.Generator().manual_seed(seed)
    real = padded = done = 0
    while done < steps:
        order = (get_length_grouped_indices(lengths.tolist(), batch_size, generator=gen) if grouped
                 else torch.randperm(len(lengths), generator=gen).tolist())
        for i in range(0, len(order), batch_size):
            batch = lengths[order[i:i + batch_size]]
            real, padded, done = real + int(batch.sum()), padded + int(batch.max()) * len(batch), done + 1
            if done >= steps:
                break
    return 1 - real / padded, real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="base")
    ap.add_argument("--data-root", default=None, help="the earlier run's data root (default: the env's)")
    args = ap.parse_args()
    data = Path(args.data_root or os.environ.get("RU_RLHF_DATA_ROOT", str(ROOT / "data")))
    import bench_repeated_work as brw

    from ru_rlhf.models.policy import format_prompt, load_tokenizer
    from ru_rlhf.models.training import stage_steps
    from ru_rlhf.pipelines.sft.nodes import reading_examples
    from ru_rlhf.pipelines.sft.params import SftParams

    p = SftParams.of(brw._params(args.env)["sft"])
    tok = load_tokenizer(data / "06_models" / "tokenizer")

    def lengths(texts: list[str], cap: int) -> np.ndarray:
        return np.array([min(cap, len(ids)) for ids in tok(texts)["input_ids"]])

    docs = pd.read_parquet(data / "02_intermediate" / "documents.parquet")
    splits = pd.read_parquet(data / "02_intermediate" / "doc_splits.parquet")
    train_ids = set(splits.loc[splits["split"] == "train", "doc_id"])
    r = p.reading
    reading = reading_examples(r.documents, r.seed, r.tatar_share, r.passage_share, r.passage_extra_sentences,
                               r.easy_keep)
    demos = pd.read_parquet(data / "03_primary" / "demonstrations.parquet")
    demos = demos[demos["split"] == "train"]
    stages = {
        "pre-training": (p.pretrain, lengths(docs.loc[docs["doc_id"].isin(train_ids), "text"].tolist(),
                                             p.pretrain.max_length)),
        "reading": (r.stage, lengths([a + b for a, b in zip(reading["prompt"], reading["completion"])],
                                     r.stage.max_length)),
        "sft": (p.sft, lengths([format_prompt(a) + b for a, b in zip(demos["prompt"], demos["response"])],
                               p.sft.max_length)),
    }
    timings = pd.read_csv(data / "08_reporting" / "node_timings.csv")
    node_s = dict(zip(timings["node"], timings["seconds"]))
    rows, tokens = [], {}
    for name, (stage, lens) in stages.items():
        steps = stage_steps(stage, len(lens))
        grouped, real = padding_share(lens, stage.batch_size, steps, True, p.seed)
        rand, _ = padding_share(lens, stage.batch_size, steps, False, p.seed)
        tokens[name] = real
        rows.append((name, stage, len(lens), steps, grouped, rand, real))
    share_of_node = {n: tokens[n] / (tokens["pre-training"] + tokens["reading"]) for n in ("pre-training", "reading")}
    lines = ["| stage | examples | steps x batch | median, 95th pct length | padding, length-grouped (the env) | "
             "padding, random batches | stage time, s | most packing could save, s |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    for name, stage, n, steps, grouped, rand, _real in rows:
        lens = stages[name][1]
        node = "sft.sft_policy" if name == "sft" else "sft.pretrain_policy"
        secs = node_s.get(node, float("nan")) * (share_of_node.get(name, 1.0))
        group_on = "" if stage.group_by_length else " (the env does not group)"
        lines.append(f"| {name} | {n} | {steps} x {stage.batch_size} | {np.median(lens):.0f}, "
                     f"{np.percentile(lens, 95):.0f} | {grouped:.1%}{group_on} | {rand:.1%} | {secs:.0f} | "
                     f"{secs * (grouped if stage.group_by_length else rand):.0f} |")
    table = "\n".join(lines)
    print(table)
    append_result(f"Packing against length-grouped batches, env {args.env}", [], markdown=table,
                  notes=(f"Tokens of the sft pipeline's training batches (the tokenizer and documents under `{data}`;"
                         " lengths cut at each stage's `max_length`), a seeded draw of transformers' length-grouped "
                         "sampler against uniformly random batches. The stage times are that run's node times "
                         "(pre-training and reading split by their tokens), so the last column is an upper bound: "
                         "the padding's share of the stage's arithmetic, as if all of its time were token-linear."))


if __name__ == "__main__":
    main()
