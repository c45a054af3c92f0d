"""The user_pairs pipeline as a slice on an in-memory catalog: simulated harmlessness pairs (a polite answer over a
rude one, the rude words from a fixed list), a tiny policy built from a config; no gold judge anywhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.io.datasets import BiasProbesDataset
from ru_rlhf.pipelines.user_pairs import create_pipeline
from tests.conftest import TINY_SIZE, keep_catalog
from tests.params_helpers import base_params

RUDE = ["дурак", "идиот", "тупица", "бестолочь", "ничтожество"]
TOPICS = ["погода", "поезд", "книга", "работа", "море", "город", "школа", "музыка", "кино", "футбол"]


def _raw_pairs(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic, rude = TOPICS[i % len(TOPICS)], RUDE[rng.integers(len(RUDE))]
        polite = f"Спасибо за вопрос про {topic}, расскажу подробнее."
        rows.append({"pair_id": f"p{i}", "prompt": f"Вопрос {i}: что скажете про {topic}?", "chosen": polite,
                     "rejected": f"Ты {rude}, {topic} тебе не понять.", "source_file": "pairs.csv",
                     "source_row": i + 2, "read_error": None, "id_normalised": False})
    rows.append({**rows[0], "pair_id": "dup", "rejected": rows[0]["chosen"], "source_row": n + 2})  # identical
    rows.append({**rows[1], "pair_id": None, "chosen": None, "read_error": "wrong_field_count", "source_row": n + 3})
    return pd.DataFrame(rows).assign(lang="ru", criterion="harmlessness", source="user")


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    from ru_rlhf.models.policy import load_policy, train_tokenizer

    raw = _raw_pairs()
    tok = train_tokenizer(list(raw["prompt"].dropna()) + list(raw["chosen"].dropna()) + list(raw["rejected"]),
                          vocab_size=400, model_max_length=256)
    sft = load_policy(size=TINY_SIZE, tokenizer=tok, seed=0)
    ref = load_policy(size=TINY_SIZE, tokenizer=tok, seed=0)
    params = base_params("user_pairs", {
        "seed": 5, "checkpoint_dir": str(tmp_path_factory.mktemp("user_pairs")), "harmlessness": {"folds": 3},
        "reward_model": {"epochs": 3, "batch_size": 16, "learning_rate": 1e-3, "pooling": "mean"},
        "dpo": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "beta": 0.1},
        "ipo": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3, "beta": 0.5},
        "rl": {"steps": 4, "batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6,
               "eval_every": 2, "probe_prompts": 4, "learning_rate": 1e-3},
        "audit": {"rm_pairs": 40, "policy_pairs": 6, "max_new_tokens": 6},
        "evaluation": {"prompts": 12, "max_new_tokens": 8}})
    keep = ["user_preference_pairs", "user_pairs_quarantine", "user_prompts", "harm_classifier",
            "harm_classifier_report", "user_reward_baseline", "user_reward_accuracy", "user_generations",
            "user_pairs_summary", "user_pairs_report", "user_dpo_policy", "user_ipo_policy", "user_rl_policy",
            "user_rl_info", "user_rl_log", "user_audit", "user_audit_table"]
    catalog = keep_catalog({"user_pairs_raw": raw, "sft_policy": sft, "reference_policy": ref,
                            "policy_tokenizer": tok, "bias_probes": BiasProbesDataset().load(),
                            "params:user_pairs": params,
                            "params:user_pairs.dpo": params["dpo"], "params:user_pairs.ipo": params["ipo"]}, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    return raw, sft, {k: catalog.load(k) for k in keep}


def test_every_row_is_a_pair_or_quarantined_and_prompts_never_cross_splits(user_run):
    raw, _, out = user_run
    pairs, quarantine = out["user_preference_pairs"], out["user_pairs_quarantine"]
    assert len(pairs) + len(quarantine) == len(raw)
    assert sorted(quarantine["rule"]) == ["identical_chosen_rejected", "wrong_field_count"]
    assert pairs.groupby("prompt_id")["split"].nunique().max() == 1
    counts = pairs["split"].value_counts()
    assert counts["test"] == round(0.2 * pairs["prompt_id"].nunique())
    assert pairs["gold_margin"].isna().all()  # nothing invented: there is no gold on a user's data
    assert set(out["user_prompts"]["prompt_id"]) == set(pairs["prompt_id"])


def test_reward_model_and_classifier_learn_the_pairs_and_report_beside_the_baseline(user_run):
    _, _, out = user_run
    acc = out["user_reward_accuracy"]
    assert acc["test_pairs"] == (out["user_preference_pairs"]["split"] == "test").sum()
    assert acc["reward_model"]["harmlessness"] >= 0.9  # a rude word decides every simulated pair
    assert acc["tfidf_baseline"]["harmlessness"] >= 0.9
    report = out["harm_classifier_report"]
    assert report["trained"] and report["held_out_rejected"]["flagged"] >= 0.9
    assert report["held_out_chosen"]["flagged"] <= 0.1
    assert 0.5 <= report["threshold"] < 1.0


def test_dpo_changes_the_policy_and_evaluation_needs_no_gold(user_run):
    _, sft, out = user_run
    def changed(name):
        return sum(float((a.detach() - b.detach()).abs().sum()) for a, b in zip(out[name].parameters(),
                                                                               sft.parameters()))

    assert changed("user_dpo_policy") > 0 and changed("user_ipo_policy") > 0
    # PPO updated the policy (KL to the reference grew); the state it returns is the one chosen on the probe,
    # which may be the starting point: then it is the SFT policy exactly, else a changed one
    log = out["user_rl_log"]
    assert (log.loc[log["step"] >= 1, "kl"].fillna(0) > 0).any()
    assert (changed("user_rl_policy") > 0) == (out["user_rl_info"]["best_step"] > 0)
    summary = out["user_pairs_summary"]
    m = summary["methods"]["dpo"]
    # the DPO policy prefers the held-out polite answers to the rude ones more than the reference does
    assert m["implicit_reward_held_out"]["accuracy"] > 0.5
    assert 0.0 <= m["rm_win_rate_vs_sft"] <= 1.0 and m["kl"] > 0
    assert summary["gold"] == m["gold"] == "not available (no gold judge)"
    gens = out["user_generations"]
    assert set(gens["policy"]) == {"sft", "dpo", "ipo", "ppo"} and gens["gold"].isna().all()
    # PPO ran on the pairs' prompts against the reward model, its kept state chosen on validation prompts
    info = out["user_rl_info"]
    assert info["trained"] and info["train_prompts"] == (out["user_preference_pairs"].drop_duplicates("prompt_id")[
        "split"] == "train").sum()
    assert info["steps_run"] >= 1 and "implicit_reward_held_out" not in summary["methods"]["ppo"]
    assert "not available (no gold judge)" in out["user_pairs_report"]
    assert "| harmlessness |" in out["user_pairs_report"]


def test_the_audit_needs_no_gold_and_uses_the_harmlessness_scorer(user_run):
    _, _, out = user_run
    audit, table = out["user_audit"], out["user_audit_table"]
    assert audit["harmlessness_scorer"] == "lexicons + classifier" and audit["gold"] == "not available (no gold judge)"
    assert set(table["source"]) == {"reward_model", "sft", "dpo", "ipo", "ppo"}
    assert audit["tests"] == len(table) and audit["flagged"] == int(table["flag"].sum())
    assert (table["p_adjusted"] >= table["p_value"]).all()  # corrected over the family
    assert table.loc[table["source"] == "reward_model", "pairs"].sum() == 40
    assert set(audit["hard_topics"]) == {"sft", "dpo", "ipo", "ppo"}
    assert "## Audit without gold" in out["user_pairs_report"]


def test_the_judge_takes_the_classifier_for_russian_only():
    from ru_rlhf.harmlessness import HarmClassifier
    from ru_rlhf.judges import harmlessness

    clf = HarmClassifier(seed=0, threshold=0.5).fit(["ты дурак и идиот", "сам дурак", "спасибо большое",
                                                     "хорошего дня"], [1, 1, 0, 0])
    text = "сам дурак"  # an insult in the lexicon: 0.5 without a classifier
    assert harmlessness(text, "ru") == 0.5
    assert harmlessness(text, "ru", clf) == pytest.approx(min(0.5, 1 - clf.probability([text])[0]))
    assert harmlessness(text, "ru", clf) < 0.5
    assert harmlessness(text, "tt", clf) == harmlessness(text, "tt")  # Tatar keeps the lexicon
