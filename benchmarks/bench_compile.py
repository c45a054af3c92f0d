"""torch.compile on CPU (#28, item 3): the training steps that dominate the base run, eager against compiled.

    python benchmarks/bench_compile.py [--env base] [--data-root DIR] [--steps 40] [--warmup 10]

Three rows; the first two each on a fresh model built as the sft pipeline builds one (``load_policy`` with the env's
``sft.policy.size`` and the trained tokenizer of an earlier run under the data root: its vocabulary, 4 167 tokens on
base, not the configured upper bound ``sft.tokenizer.vocab_size``; random weights: only the arithmetic matters here)
and the same seeded batches on both sides:

1. **The reward model's training step** (``ru_rlhf.models.reward.RewardModel`` on the policy's backbone, the env's
   pooling and match feature): forward, Bradley–Terry loss, backward, clipping, AdamW. 32 pairs a step (64 sequences),
   each batch padded to a width drawn from the base pairs' range (64 to 192 tokens; the longest base pair is about 180
   policy tokens). In the base run this step is 58 % backward passes and 37 % forward (py-spy, docs/benchmarks.md).
2. **The policy's training step** (as PPO's, REINFORCE's and SFT's updates): the causal LM's forward over prompt and
   response (logits over the whole vocabulary), the log-likelihood of the response tokens, backward, AdamW. 32
   sequences a step, widths 96 to 160 (a prompt and up to 48 new tokens).
3. **The RL runs' token statistics** (``ru_rlhf.rl.rollout.token_stats``: log-probabilities, entropy and exact KL to
   the reference over the whole vocabulary) on one rollout batch of the env's REINFORCE, without a gradient (as in the
   rollout) and with one (as in PPO's update): a pure function of two logits tensors, the kind of memory-bound
   elementwise work inductor fuses into one pass.

In rows 1 and 2 each side runs ``--warmup`` steps (the compiled side compiles in them: the first width, then again
once with dynamic shapes), then ``--steps`` steps timed; the sides alternate twice (eager, compiled, eager, compiled;
dynamo's caches reset and inductor's on-disk cache new before each compiled side), and the fastest of each side's
timed steps is given. The check column gives the compiled side's extra warm-up time (mostly compilation; the smaller
of the two) and how many steps its saving would need to pay for it. Row 3 gives the fastest of 5 calls each, after one
compiling call.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402
from bench_repeated_work import _params  # noqa: E402


def _policy(size: dict, tok, seed: int):
    from ru_rlhf.models.policy import load_policy

    return load_policy(None, size=size, tokenizer=tok, seed=seed)


def _batches(n_rows: int, widths: list[int], vocab: int, seed: int) -> list[dict]:
    """Seeded batches: random tokens, right padding (rows 0-20 tokens shorter than the width), the second half of
    each row's real tokens its response."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    out = []
    for w in widths:
        ids = torch.randint(5, vocab, (n_rows, w), generator=g)
        mask = torch.zeros(n_rows, w, dtype=torch.long)
        resp = torch.zeros(n_rows, w, dtype=torch.long)
        for i in range(n_rows):
            n = rng.randint(max(8, w - 20), w)
            mask[i, :n] = 1
            resp[i, n // 2:n] = 1
        match = (torch.rand(n_rows, w, generator=g) < 0.2).long() * resp
        out.append({"input_ids": ids, "attention_mask": mask, "response_mask": resp, "match": match})
    return out


def _optimiser_step(loss_of, model, opt):
    """One training step of ``loss_of(batch)``: backward, clipping at 1.0, the optimiser's step."""
    import torch

    def step(b: dict) -> float:
        loss = loss_of(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())
    return step


def _rm_step_factory(params: dict, tok, seed: int):
    import torch

    from ru_rlhf.models.reward import RewardModel, bradley_terry_loss
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams
    from ru_rlhf.vocabulary import CRITERIA

    p = RewardParams.of(params["reward_modeling"])
    size = params["sft"]["policy"]["size"]

    def build(compiled: bool):
        rm = RewardModel(_policy(size, tok, seed), CRITERIA, "multi_head", p.n_bins, p.weights, pooling=p.pooling,
                         max_length=p.train.max_length, match_feature=p.match_feature)
        rm.encoder.config.use_cache = False
        opt = torch.optim.AdamW(rm.parameters(), lr=p.train.learning_rate, weight_decay=0.01)
        model = torch.compile(rm) if compiled else rm
        half = torch.arange(32)
        head = torch.arange(32) % len(CRITERIA)

        def loss_of(b: dict):
            out = model(**b)["scores"]
            return bradley_terry_loss(out[half], out[half + 32], head, p.train.balance_criteria)
        return _optimiser_step(loss_of, rm, opt)

    return build, 64, (64, 192)


def _policy_step_factory(params: dict, tok, seed: int):
    import torch

    size = params["sft"]["policy"]["size"]

    def build(compiled: bool):
        policy = _policy(size, tok, seed)
        policy.config.use_cache = False
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)

        def loss_of(input_ids, attention_mask, response_mask):
            logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            m = response_mask[:, 1:].to(logp.dtype)
            return -(logp * m).sum() / m.sum()

        fn = torch.compile(loss_of) if compiled else loss_of

        return _optimiser_step(lambda b: fn(b["input_ids"], b["attention_mask"], b["response_mask"]), policy, opt)

    return build, 32, (96, 160)


def _side(build, compiled: bool, batches: list[dict], warmup: int) -> tuple[float, float]:
    """(warm-up seconds, timed seconds) of one side."""
    import torch

    if compiled:  # a cold start, as a first run on a machine: dynamo's caches reset, inductor's on-disk cache new
        torch._dynamo.reset()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    step = build(compiled)
    t0 = time.perf_counter()
    for b in batches[:warmup]:
        step(b)
    t1 = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    return t1 - t0, time.perf_counter() - t1


def bench(name: str, factory, params: dict, tok, steps: int, warmup: int, seed: int = 2024):
    build, rows, (lo, hi) = factory(params, tok, seed)
    rng = random.Random(seed)
    widths = [rng.randrange(lo, hi + 1, 8) for _ in range(warmup + steps)]
    batches = _batches(rows, widths, len(tok), seed)
    runs: dict[bool, list] = {False: [], True: []}
    for _ in range(2):
        for compiled in (False, True):
            runs[compiled].append(_side(build, compiled, batches, warmup))
            print(name, "compiled" if compiled else "eager", runs[compiled][-1], flush=True)
    before, after = (min(t for _, t in runs[k]) for k in (False, True))
    extra = min(w for w, _ in runs[True]) - min(w for w, _ in runs[False])
    saving = (before - after) / steps
    pays = f"pays for it after {extra / saving:.0f} steps" if saving > 0 else "never pays for it"
    what = (f"{name}: {steps} steps (after {warmup} warm-up steps) eager (before) against torch.compile "
            f"(after, inductor, default dynamic shapes)")
    check = (f"each side twice, alternating, the fastest given: eager {', '.join(f'{t:.2f}' for _, t in runs[False])}"
             f" s; compiled {', '.join(f'{t:.2f}' for _, t in runs[True])} s; the compiled side's warm-up "
             f"{extra:.1f} s longer (compilation), so it {pays}")
    return what, before, after, check


def bench_token_stats(params: dict, tok, repeats: int = 5, seed: int = 2024):
    """``ru_rlhf.rl.rollout.token_stats`` (log-probabilities, entropy, KL to the reference over the whole vocabulary) on
    one REINFORCE rollout batch's logits, without and with a gradient, eager against compiled (dynamic shapes)."""
    import torch

    from ru_rlhf.rl.rollout import token_stats

    a = params["alignment"]["reinforce"]["train"]
    rows, cols, vocab = a["batch_size"], a["max_new_tokens"], len(tok)
    g = torch.Generator().manual_seed(seed)
    logits, ref = torch.randn(rows, cols, vocab, generator=g), torch.randn(rows, cols, vocab, generator=g)
    targets = torch.randint(0, vocab, (rows, cols), generator=g)

    def timed(fn, grad: bool, n: int) -> float:
        best = float("inf")
        for _ in range(n):
            x = logits.clone().requires_grad_(grad)
            start = time.perf_counter()
            logp, entropy, kl, _ = fn(x, targets, ref, 1.0)
            if grad:
                (logp.sum() + 0.01 * entropy.sum()).backward()
            best = min(best, time.perf_counter() - start)
        return best

    torch._dynamo.reset()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    compiled = torch.compile(token_stats, dynamic=True)
    out = []
    for grad in (False, True):
        start = time.perf_counter()
        timed(compiled, grad, 1)
        first = time.perf_counter() - start
        before, after = timed(token_stats, grad, repeats), timed(compiled, grad, repeats)
        diff = max(float((x - y).abs().max()) for x, y in zip(token_stats(logits, targets, ref, 1.0),
                                                               compiled(logits, targets, ref, 1.0)))
        what = (f"token_stats of one rollout batch ({rows} x {cols} positions x {vocab} tokens, with the reference's), "
                f"{'with a gradient (the update)' if grad else 'no gradient (the rollout)'}: eager (before) against "
                f"torch.compile (after, dynamic shapes)")
        out.append((what, before, after, f"the fastest of {repeats} each; the compiled side's first call {first:.1f} s "
                                         f"(compilation, from an empty cache); largest difference of the outputs "
                                         f"{diff:.1e}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="base")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--data-root", default=None, help="an earlier run's data root, for its trained tokenizer "
                                                      "(default: RU_RLHF_DATA_ROOT, else data/)")
    ap.add_argument("--only", default=None, help="comma-separated rows: rm,policy,token_stats (default: all)")
    args = ap.parse_args()
    os.environ["RU_RLHF_MLFLOW"] = "off"
    params = _params(args.env)
    from ru_rlhf.models.policy import load_tokenizer

    data = Path(args.data_root or os.environ.get("RU_RLHF_DATA_ROOT", str(ROOT / "data")))
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    benches = {"rm": lambda: [bench("reward model's training step (64 sequences of 64-192 tokens)",
                                    _rm_step_factory, params, tok, args.steps, args.warmup)],
               "policy": lambda: [bench("policy's training step (32 sequences of 96-160 tokens, logits over the "
                                        "vocabulary)", _policy_step_factory, params, tok, args.steps,
                                        args.warmup)],
               "token_stats": lambda: bench_token_stats(params, tok)}
    only = args.only.split(",") if args.only else list(benches)
    if set(only) - set(benches):
        raise SystemExit(f"--only: unknown rows {sorted(set(only) - set(benches))}; known: {sorted(benches)}")
    rows = [row for k in only for row in benches[k]()]
    md = ["| change | before, s | after, s | after / before | check |", "|---|---:|---:|---:|---|"]
    md += [f"| {w} | {b:.2f} | {a:.2f} | {a / b:.3f} | {c} |" for w, b, a, c in rows]
    for w, b, a, c in rows:
        print(f"{w}: before {b:.2f} s, after {a:.2f} s, ratio {a / b:.3f}; {c}", flush=True)
    notes = (f"One process, nothing else running; the models are the env's size with random weights (the arithmetic "
             f"does not depend on the weights) and the vocabulary of the tokenizer under `{data}` ({len(tok)} tokens). Kept only where the ratio pays for the compilation within a node's "
             f"steps (#28); see the text below the table for the decision.")
    title = f"torch.compile on CPU, env {args.env}" + (f", rows {args.only}" if args.only else "")
    append_result(title, [], notes, markdown="\n".join(md))


if __name__ == "__main__":
    main()
