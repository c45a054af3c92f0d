"""A training run at smoke size, started as a subprocess by ``test_resume.py`` (not a test itself).

``python resume_worker.py <sft|dpo|ppo> <out_dir> <result.json>`` trains a tiny policy on the small
bundled world with checkpoints under ``out_dir`` (resuming from them when they are this run's) and
writes the final loss and a fingerprint of the final weights to ``result.json``. The test kills one
run with SIGKILL mid-way, starts it again, and compares it with an uninterrupted run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.params_helpers, when run as a script

import pandas as pd
import torch

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 256}


def _world():
    from ru_rlhf.models.policy import load_policy, train_tokenizer
    from ru_rlhf.world import generate_world

    docs, _ = generate_world(seed=11, n_ru=60, n_tt=20)
    texts = [d["text"] for d in docs]
    tok = train_tokenizer(texts, vocab_size=600, model_max_length=256)
    return texts, tok, load_policy(size=TINY, tokenizer=tok, seed=0)


class _Slow:
    """Sleeps a little after each step so that the parent can kill the run between checkpoints."""

    def __init__(self, pause: float):
        from transformers import TrainerCallback

        class CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                time.sleep(pause)

        self.cb = CB()


def main(kind: str, out_dir: str, result: str, pause: float = 0.0) -> None:
    import logging

    from datasets import Dataset

    from ru_rlhf.models.training import run_dpo_trainer, run_sft_trainer, weights_fingerprint

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(1)
    texts, tok, policy = _world()
    out = Path(out_dir)
    if kind == "sft":
        from ru_rlhf.models.training import StageParams

        ds = Dataset.from_pandas(pd.DataFrame({"text": [t[:300] for t in texts]}), preserve_index=False)
        stage = StageParams(max_steps=24, batch_size=8, learning_rate=1e-3, logging_steps=2, save_steps=4,
                            save_total_limit=2, max_length=128, group_by_length=False)
        import transformers

        orig = transformers.Trainer.__init__

        def init(self, *a, **kw):  # the slow-down callback, without touching the project's code
            orig(self, *a, **kw)
            if pause:
                self.add_callback(_Slow(pause).cb)

        transformers.Trainer.__init__ = init
        model, hist = run_sft_trainer(policy, tok, ds, stage, seed=0, output_dir=out, stage="sft")
        loss = float(hist["loss"].iloc[-1])
    elif kind == "dpo":
        from ru_rlhf.models.policy import load_policy

        ref = load_policy(size=TINY, tokenizer=tok, seed=0)
        rows = [{"prompt": t[:60], "chosen": t[60:120], "rejected": t[120:150]} for t in texts]
        ds = Dataset.from_pandas(pd.DataFrame(rows), preserve_index=False)
        import transformers

        orig = transformers.Trainer.__init__

        def init(self, *a, **kw):
            orig(self, *a, **kw)
            if pause:
                self.add_callback(_Slow(pause).cb)

        transformers.Trainer.__init__ = init
        model, hist = run_dpo_trainer(policy, ref, tok, ds, beta=0.1, loss_type="sigmoid", epochs=1, batch_size=4,
                                      learning_rate=1e-3, max_length=128, seed=0, output_dir=out, max_steps=20,
                                      logging_steps=2, save_steps=4)
        loss = float(hist["loss"].iloc[-1])
    elif kind == "ppo":
        from ru_rlhf.models.policy import load_policy
        from ru_rlhf.rl.loop import train
        from tests.params_helpers import rl_config

        ref = load_policy(size=TINY, tokenizer=tok, seed=0)
        prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(40)], "prompt": [t[:50] for t in texts[:40]]})

        def reward(ps, rs):  # a simple deterministic reward: share of the letter «а»
            return torch.tensor([r.count("а") / max(1, len(r)) for r in rs])

        def evaluate(m):
            if pause:
                time.sleep(pause)
            w = next(m.parameters())
            return {"score": -float(w.float().abs().mean())}

        cfg = rl_config("alignment.ppo.train", steps=16, batch_size=4, minibatch_size=2, ppo_epochs=1,
                        learning_rate=1e-3, max_new_tokens=8, eval_every=2, patience=100, kl_budget=100.0,
                        best_max_kl=None)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)  # loading the YAML set Kedro's up
        model, hist, info = train(policy, ref, tok, prompts, reward, cfg, evaluate=evaluate, checkpoint_dir=out,
                                  desc="ppo", progress=False)
        loss = float(hist["loss"].dropna().iloc[-1])
    else:
        raise SystemExit(f"unknown kind {kind}")
    Path(result).write_text(json.dumps({"loss": loss, "weights": weights_fingerprint(model),
                                        "steps": int(hist["step"].max())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
