"""PPO throughput (rollouts/s, optimisation steps/s) and reward-model scoring throughput (responses/s).

Uses the base run's SFT policy, reference and multi-head reward model, the alignment parameters of
``conf/base/parameters_alignment.yml`` (PPO section) and the training prompts of the alignment stage.

    python benchmarks/bench_rl.py [--steps 20] [--rm-responses 1000]

Run ``kedro run --pipelines alignment`` (or at least its ``select_alignment_prompts`` node) first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

from ru_rlhf.models.policy import load_policy, load_tokenizer  # noqa: E402
from ru_rlhf.models.reward import load_reward_model, score_prompts  # noqa: E402
from ru_rlhf.rl import loop  # noqa: E402
from ru_rlhf.rl.params import RLParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rm-responses", type=int, default=1000)
    args = ap.parse_args()
    data = ROOT / "data"
    prompts = pd.read_parquet(data / "05_model_input" / "alignment_prompts.parquet")
    train = prompts[prompts["role"] == "train"].reset_index(drop=True)
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    policy, ref = load_policy(data / "06_models" / "sft_policy"), load_policy(data / "06_models" / "sft_policy")
    rm, rm_tok = load_reward_model(data / "06_models" / "reward_model")
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_alignment.yml").read_text())["alignment"]
    cfg = RLParams.of(
        {**{k: v for k, v in params["ppo"]["train"].items() if k not in ("method", "reward")}, "steps": args.steps, "eval_every": 10**9}
    ).config(seed=0)

    def reward(ps, rs):
        import torch

        return torch.tensor(score_prompts(rm, rm_tok, ps, rs)["scalar"].to_numpy())

    start = time.perf_counter()
    _, log, _ = loop.train(policy, ref, tok, train, reward, cfg, progress=False)
    seconds = time.perf_counter() - start
    steps = len(log)
    updates = steps * cfg.ppo_epochs * -(-cfg.batch_size // cfg.minibatch_size)

    cands = pd.read_parquet(data / "03_primary" / "candidates.parquet")
    rows = [(p, r) for p, rs in zip(cands["prompt"], cands["responses"]) for r in rs][: args.rm_responses]
    t0 = time.perf_counter()
    score_prompts(rm, rm_tok, [p for p, _ in rows], [r for _, r in rows])
    rm_seconds = time.perf_counter() - t0

    table = [
        ("PPO config", f"{cfg.batch_size} rollouts/step, {cfg.ppo_epochs} epochs x minibatch {cfg.minibatch_size}, "
                       f"max {cfg.max_new_tokens} new tokens"),
        ("PPO steps timed", f"{steps} in {seconds:.1f} s ({seconds / steps:.2f} s/step)"),
        ("rollouts/s", f"{steps * cfg.batch_size / seconds:.1f}"),
        ("optimisation steps/s (minibatch updates)", f"{updates / seconds:.2f}"),
        ("200 PPO steps (projected)", f"{200 * seconds / steps / 60:.1f} min (target about 5 min)"),
        ("reward-model scoring", f"{len(rows)} responses in {rm_seconds:.1f} s = {len(rows) / rm_seconds:.0f} responses/s"),
    ]
    for k, v in table:
        print(f"{k}: {v}")
    append_result("PPO and reward-model throughput", table)


if __name__ == "__main__":
    main()
