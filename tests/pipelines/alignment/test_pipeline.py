"""The alignment pipeline as a slice on an in-memory catalog: tiny policy, tiny reward model,
every method for a few steps (DPO, IPO, PPO, REINFORCE and CEM smoke runs)."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.alignment import create_pipeline
from ru_rlhf.pipelines.alignment.pipeline import METHODS
from tests.conftest import TINY_SIZE, keep_catalog

ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "max_position_embeddings": 256}


def _pairs(candidates: pd.DataFrame) -> pd.DataFrame:
    """Overall pairs: the reference answer over its rude and refusing variants (see the fixture)."""
    rows = []
    for c in candidates.itertuples(index=False):
        for worse in (2, 3, 5):  # flattery, refusal, rude
            rows.append({"prompt_id": c.prompt_id, "prompt": c.prompt, "chosen": c.responses[0],
                         "rejected": c.responses[worse], "criterion": "overall", "split": c.split})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def alignment_run(world_tables, variant_candidates, small_world, tmp_path_factory):
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
    params = {
        "params:alignment.common": common,
        "params:alignment.dpo.train": {"method": "dpo", "loss_type": "sigmoid", **dpo},
        "params:alignment.ipo.train": {"method": "ipo", "loss_type": "ipo", **dpo},
        "params:alignment.ppo.train": {"method": "ppo", "algorithm": "ppo", **rl},
        "params:alignment.reinforce.train": {"method": "reinforce", "algorithm": "reinforce", **rl},
        "params:alignment.cem.train": {"method": "cem", "iterations": 1, "prompts": 6, "samples": 3, "elite": 1,
                                       "max_new_tokens": 6, "batch_size": 4, "max_length": 256},
    }
    keep = ["alignment_prompts", "sft_generations", "alignment_summary",
            *[f"alignment.{m}.{d}" for m in METHODS for d in ("policy", "step_log", "info", "curve", "generations")],
            "alignment.dpo.grid", "alignment.ipo.grid"]
    catalog = keep_catalog({"prompts": prompts, "facts": facts, "documents": docs, "sft_policy": policy,
                            "reference_policy": policy, "policy_tokenizer": tok, "reward_model": (rm, enc_tok),
                            "preference_pairs": _pairs(variant_candidates), **params}, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_prompt_roles_do_not_overlap(alignment_run):
    ap = alignment_run.load("alignment_prompts")
    assert set(ap["role"]) == {"train", "probe", "test"}
    assert ap.groupby("prompt_id")["role"].nunique().max() == 1
    assert set(ap.loc[ap["role"] == "probe", "split"]) == {"validation"}
    assert set(ap.loc[ap["role"] == "test", "split"]) == {"test"}
    assert (ap.loc[ap["role"] == "train", "split"] == "train").all()


def test_summary_has_gold_gain_and_kl_per_method(alignment_run):
    s = alignment_run.load("alignment_summary")
    for m in METHODS:
        assert {"gold_gain", "kl", "gold", "rm", "beats_sft"} <= set(s[m])
        assert s[m]["kl"] >= 0.0
        gen = alignment_run.load(f"alignment.{m}.generations")
        assert s[m]["gold_gain"] == pytest.approx(gen["gold"].mean() - s["sft"]["gold"], abs=1e-4)
    assert s["sft"]["rows"] == 16


def test_every_method_generates_on_the_same_prompts_and_samples(alignment_run):
    sft = alignment_run.load("sft_generations")
    assert sft["kl"].abs().max() < 1e-5  # the SFT policy is its own reference
    keys = set(zip(sft["prompt_id"], sft["sample"]))
    for m in METHODS:
        gen = alignment_run.load(f"alignment.{m}.generations")
        assert set(zip(gen["prompt_id"], gen["sample"])) == keys
        assert {"gold", "gold_helpfulness", "rm_scalar", "kl", "tokens"} <= set(gen.columns)


def test_dpo_and_ipo_keep_every_grid_point_and_log_the_choice(alignment_run):
    for m, loss in (("dpo", "sigmoid"), ("ipo", "ipo")):
        grid = alignment_run.load(f"alignment.{m}.grid")
        assert list(grid["grid_value"]) == [0.1, 0.5]
        assert grid["chosen"].sum() == 1
        info = alignment_run.load(f"alignment.{m}.info")
        assert info["loss_type"] == loss
        assert info["chosen_value"] == grid.loc[grid["chosen"], "grid_value"].item()
        assert info["chosen_value"] == grid.loc[grid["probe_gold"].idxmax(), "grid_value"]
        log = alignment_run.load(f"alignment.{m}.step_log")
        assert set(log["grid_value"]) == {0.1, 0.5} and log["loss"].notna().all()


def test_rl_logs_every_step_with_the_monitored_quantities(alignment_run):
    for m in ("ppo", "reinforce"):
        log = alignment_run.load(f"alignment.{m}.step_log")
        steps = log[log["step"] > 0]
        assert list(steps["step"]) == [1, 2, 3, 4]
        for col in ("reward", "kl", "entropy", "advantage_var", "clipfrac", "approx_kl", "kl_coef"):
            assert steps[col].notna().all(), col
        assert log["expert_score"].notna().sum() == 3  # before training and at steps 2 and 4
        info = alignment_run.load(f"alignment.{m}.info")
        assert info["best_step"] in (0, 2, 4)
    assert alignment_run.load("alignment.ppo.step_log")["value_loss"].iloc[1:].notna().all()


def test_cem_log_and_curves(alignment_run):
    log = alignment_run.load("alignment.cem.step_log")
    it = log[log["step"] == 1].iloc[0]
    assert it["samples"] == 18 and it["elite"] == 6
    assert it["elite_reward"] >= it["reward"]
    for m in METHODS:
        assert alignment_run.load(f"alignment.{m}.curve") is not None
        assert alignment_run.load(f"alignment.{m}.policy") is not None


def test_one_method_can_run_alone():
    p = create_pipeline().only_nodes_with_namespaces(["alignment.dpo"])
    assert {n.name for n in p.nodes} == {"alignment.dpo.train", "alignment.dpo.generate_test_outputs",
                                         "alignment.dpo.plot_curve"}
