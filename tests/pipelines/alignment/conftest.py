"""The alignment tests reuse the curation fixtures (the small world and its variant candidates) and share one
run of the whole alignment slice."""

import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.alignment import create_pipeline
from ru_rlhf.vocabulary import METHODS
from tests.conftest import TINY_SIZE, keep_catalog
from tests.params_helpers import base_params
from tests.pipelines.preference_curation.conftest import variant_candidates, world_tables  # noqa: F401, F811

ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "max_position_embeddings": 256}


def tiny_stack(docs: pd.DataFrame, checkpoint_dir) -> tuple:
    """The tiny models and the alignment settings a slice downstream of the methods starts from: ``(tokenizer,
    sft policy, reward model (a one-layer encoder and its tokenizer), alignment.common)``."""
    from ru_rlhf.models.encoder import load_encoder, train_wordpiece_tokenizer
    from ru_rlhf.models.policy import load_policy, train_tokenizer
    from ru_rlhf.models.reward import RewardModel

    tok = train_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    sft = load_policy(size=TINY_SIZE, tokenizer=tok, seed=0)
    enc_tok = train_wordpiece_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    rm = (RewardModel(load_encoder(size=ENCODER, tokenizer=enc_tok, seed=0)), enc_tok)
    common = base_params("alignment.common", {
        "seed": 1, "checkpoint_dir": str(checkpoint_dir), "train_prompts": 5, "probe_prompts": 3, "test_prompts": 10,
        "test_samples": 1, "max_new_tokens_by_task": {"qa": 6, "dialogue": 6, "summarization": 6}})
    return tok, sft, rm, common


def _pairs(candidates: pd.DataFrame) -> pd.DataFrame:
    """Overall pairs: the reference answer over its rude and refusing variants (see the fixture)."""
    rows = []
    for c in candidates.itertuples(index=False):
        for worse in (2, 3, 5):  # flattery, refusal, rude
            rows.append({"prompt_id": c.prompt_id, "prompt": c.prompt, "chosen": c.responses[0],
                         "rejected": c.responses[worse], "criterion": "overall", "split": c.split,
                         "lang": c.lang})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def alignment_run(world_tables, variant_candidates, small_world, tmp_path_factory):  # noqa: F811
    from ru_rlhf.models.encoder import load_encoder, train_wordpiece_tokenizer
    from ru_rlhf.models.policy import load_policy, train_tokenizer
    from ru_rlhf.models.reward import RewardModel

    docs, facts, prompts = world_tables
    tok = train_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    policy = load_policy(size=TINY_SIZE, tokenizer=tok, seed=0)
    enc_tok = train_wordpiece_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    rm = RewardModel(load_encoder(size=ENCODER, tokenizer=enc_tok, seed=0))
    common = {"seed": 3, "checkpoint_dir": str(tmp_path_factory.mktemp("align")), "train_prompts": 24,
              "probe_prompts": 6, "test_prompts": 8, "test_samples": 2,
              "max_new_tokens_by_task": {"qa": 6, "dialogue": 8, "summarization": 8}, "batch_size": 16}
    dpo = {"grid": [0.1, 0.5], "max_pairs": 24, "batch_size": 8, "max_length": 256}
    rl = {"steps": 4, "batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6, "eval_every": 2,
          "patience": 10}
    trl = {"steps": 4, "batch_size": 4, "num_generations": 2, "max_new_tokens": 6, "eval_every": 2, "patience": 10}
    overrides = {
        "common": common, "dpo.train": dpo, "ipo.train": dpo,
        "coh.train": {"max_pairs": 24, "epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_length": 256,
                      "grid": [{"mask_share": 0.0, "plain_share": 0.0}, {"mask_share": 0.05, "plain_share": 0.5}]},
        # this reward model reads BERT's tokens, not the policy's: PPO's value model cannot start from it
        "ppo.train": {**rl, "value_init": "zero"}, "reinforce.train": rl, "grpo.train": trl, "rloo.train": trl,
        # the audit's runs: the oracles (reward: gold) and PPO past its budget
        "ppo_gold.train": {**rl, "value_init": "zero"}, "reinforce_gold.train": rl,
        "ppo_long.train": {**rl, "value_init": "zero", "steps": 6},
        "grpo_gold.train": trl, "rloo_gold.train": trl,
        "cem.train": {"iterations": 1, "prompts": 6, "samples": 3, "elite": 1, "max_new_tokens": 6, "batch_size": 4,
                      "max_length": 256},
        # the over-optimisation curves and the reward–KL frontier (shared nodes after the methods)
        "frontier": {"overopt_methods": ["ppo", "grpo"], "overopt_prompts": 4, "bon_prompts": 3, "bon_ns": [1, 2, 4],
                     "max_new_tokens": 6, "batch_size": 16},
    }
    params = {f"params:alignment.{name}": base_params(f"alignment.{name}", over) for name, over in overrides.items()}
    keep = ["alignment_prompts", "sft_generations", "alignment_summary",
            *[f"alignment.{m}.{d}" for m in METHODS for d in ("policy", "step_log", "info", "curve", "generations")],
            "alignment.dpo.grid", "alignment.ipo.grid", "alignment.coh.grid", "alignment.grpo.checkpoints",
            "alignment.ppo.checkpoints", "alignment.ppo_long.checkpoints", "alignment.ppo_gold.info",
            "alignment.ppo_gold.generations",
            "alignment.rloo.checkpoints", "overoptimisation_curves", "reward_kl_frontier", "reward_kl_frontier_fits",
            "reward_kl_frontier_plot"]
    catalog = keep_catalog({"prompts": prompts, "facts": facts, "documents": docs, "sft_policy": policy,
                            "reference_policy": policy, "policy_tokenizer": tok, "reward_model": (rm, enc_tok),
                            "preference_pairs": _pairs(variant_candidates), **params}, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog
