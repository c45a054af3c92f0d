"""The evaluation pipeline as a slice on an in-memory catalog: made-up generations of known quality
for SFT and every method (one of them with empty answers), a tiny encoder and reward model."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.judges import CRITERIA, context_table, contexts_from_table, gold_reward, score_all
from ru_rlhf.pipelines.evaluation import create_pipeline
from ru_rlhf.vocabulary import METHODS
from tests.conftest import bars, keep_catalog, tick_labels
from tests.params_helpers import base_params

ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "max_position_embeddings": 256}


def _generations(cands: pd.DataFrame, prompts: pd.DataFrame, facts, docs, variant_of: dict) -> dict:
    """Per model, two samples per test prompt: the candidate variant ``variant_of[model]``."""
    test = cands[cands["split"] == "test"]
    ctx = contexts_from_table(context_table(prompts[prompts["split"] == "test"], facts, docs))
    out = {}
    for model, k in variant_of.items():
        rows = []
        for c in test.itertuples(index=False):
            for s in range(2):
                resp = "" if k is None else c.responses[k] + ("" if s == 0 else " Спасибо.")
                sc = score_all(ctx[c.prompt_id], resp)
                rows.append({"method": model, "prompt_id": c.prompt_id, "sample": s, "task_type": c.task_type,
                             "lang": c.lang, "prompt": c.prompt, "response": resp,
                             **{f"gold_{x}": sc[x] for x in CRITERIA}, "gold": gold_reward(sc),
                             "rm_scalar": float(k or 0), "kl": 0.0 if model == "sft" else 0.01 * (k or 1),
                             "tokens": len(resp.split())})
        out[model] = pd.DataFrame(rows)
    return out


@pytest.fixture(scope="module")
def evaluation_run(world_tables, variant_candidates, tmp_path_factory):
    from ru_rlhf.models.encoder import load_encoder, train_wordpiece_tokenizer
    from ru_rlhf.models.reward import RewardModel
    from ru_rlhf.pipelines.alignment.nodes import select_alignment_prompts

    docs, facts, prompts = world_tables
    enc_tok = train_wordpiece_tokenizer(docs["text"].tolist(), vocab_size=600, model_max_length=256)
    encoder = load_encoder(size=ENCODER, tokenizer=enc_tok, seed=0)
    enc_dir = tmp_path_factory.mktemp("encoder")
    encoder.save_pretrained(enc_dir)
    enc_tok.save_pretrained(enc_dir)
    rm = RewardModel(load_encoder(size=ENCODER, tokenizer=enc_tok, seed=1))
    # sft states a wrong fact, dpo gives the reference, ipo is rude, ppo answers nothing, reinforce
    # refuses, cem flatters, coh hedges, grpo gives the reference, rloo hedges
    variant_of = {"sft": 4, "dpo": 0, "ipo": 5, "coh": 1, "ppo": None, "reinforce": 3, "grpo": 0, "rloo": 1, "cem": 2}
    gens = _generations(variant_candidates, prompts, facts, docs, variant_of)
    pairs = pd.DataFrame([{"pair_id": f"{c.prompt_id}|{h}", "prompt": c.prompt, "chosen": c.responses[0],
                           "rejected": c.responses[5], "criterion": h, "split": c.split}
                          for c in variant_candidates.itertuples(index=False) for h in CRITERIA])
    ap = select_alignment_prompts(prompts, facts, docs, base_params("alignment.common",
                                                                    {"train_prompts": 5, "probe_prompts": 3}))
    params = base_params("evaluation", {"seed": 1, "bertscore_model": str(enc_dir), "expert_pairs": 12,
                                        "bootstrap": 300, "attribution_pairs": 1, "attribution_steps": 4, "cases": 2})
    keep = ["automatic_metrics", "expert_summary", "expert_ab", "expert_likert", "behavioural_metrics",
            "evaluation_comparison", "evaluation_comparison_md", "reward_attributions", "reward_attributions_md",
            "evaluation_cases_md", "evaluation_criteria_plot", "evaluation_reward_kl_plot", "evaluation_shifts_plot",
            "evaluation_summary", "ngram_shifts"]
    inputs = {"sft_generations": gens["sft"], **{f"alignment.{m}.generations": gens[m] for m in METHODS},
              "prompts": prompts, "alignment_prompts": ap, "encoder": (encoder, enc_tok),
              "reward_model": (rm, enc_tok), "preference_pairs": pairs, "params:evaluation": params,
              "training_emissions": pd.DataFrame([
                  {"node": f"alignment.{m}.train", "method": m, "status": "ok", "seconds": 10.0 + i,
                   "energy_kwh": 0.001 * (i + 1), "co2_kg": 0.0004 * (i + 1), "country": "RUS"}
                  for i, m in enumerate(METHODS)])}
    catalog = keep_catalog(inputs, keep=keep)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_comparison_table_has_every_model_and_metric(evaluation_run):
    t = evaluation_run.load("evaluation_comparison")
    assert set(t["model"]) == {"sft", *METHODS}
    metrics = ["gold", "bertscore_f1", "mauve", "self_bleu", "mtld", "length_words", "distinct_2",
               "factual_consistency", "likert_helpfulness", "likert_truthfulness", "likert_harmlessness",
               "win_rate_vs_sft", "trigger_rate", "refusal_rate", "length_shift", "mtld_shift", "bigram_jsd_vs_sft"]
    full = t[t["model"] != "ppo"]  # the model that answers nothing has no text metrics (NaN, reported)
    missing = full[metrics].isna().stack()
    assert not missing.any(), list(missing[missing].index)
    md = evaluation_run.load("evaluation_comparison_md")
    assert all(m in md for m in METHODS) and "SIMULATED" in md
    # one table per channel, each with its legend (direction and unit of every metric it shows)
    assert md.count("| metric | better | unit | what it measures |") == 4
    assert "| kl | lower | nats / token |" in md and "| gold | higher | [0, 1] |" in md
    # a metric missing on this run says why (the model that answers nothing has no text metrics)
    for col in [c for c in metrics if t.loc[t["model"] == "ppo", c].isna().any()]:
        assert f"n/a in `{col}` (ppo): " in md, col
    assert "| n/a |" in md or " n/a |" in md
    # the cost section: one row per method with its energy (Wh) and CO₂ (g)
    assert "## Cost of training" in md and "| ppo | alignment.ppo.train |" in md
    i = METHODS.index("dpo") if isinstance(METHODS, list) else list(METHODS).index("dpo")
    assert f"| {1000 * 0.001 * (i + 1):.3f} | {1000 * 0.0004 * (i + 1):.3f} | ok |" in md


def test_comparison_cells_keep_tiny_kls_and_explain_missing_values():
    from ru_rlhf.pipelines.evaluation.nodes import comparison_markdown

    table = pd.DataFrame({"model": ["sft", "dpo"], "gold": [0.5, 0.55], "rm": [0.1, 0.2], "kl": [0.0, 1.234e-5],
                          "self_bleu": [float("nan")] * 2, "win_rate_vs_sft": [0.5, 0.61], "win_rate_lo": [0.5, 0.52],
                          "win_rate_hi": [0.5, 0.70]})
    md = "\n".join(comparison_markdown(table))
    assert "| dpo | 0.550 | 0.200 | 1.23e-05 |" in md and "| sft | 0.500 | 0.100 | 0.0000 |" in md
    assert "0.610 [0.520, 0.700]" in md
    assert "n/a in `self_bleu` (sft, dpo): needs two or more samples per prompt" in md


def test_empty_generations_are_scored_and_counted(evaluation_run):
    t = evaluation_run.load("evaluation_comparison").set_index("model")
    assert t.at["ppo", "empty"] == t.at["ppo", "responses"] > 0
    assert t.at["ppo", "gold"] < t.at["sft", "gold"]
    assert t.at["ppo", "length_words"] == 0.0
    b = evaluation_run.load("behavioural_metrics").set_index("model")
    assert b.at["ppo", "empty_rate"] == 1.0


def test_channels_see_the_known_differences(evaluation_run):
    t = evaluation_run.load("evaluation_comparison").set_index("model")
    assert t.at["cem", "trigger_rate"] > 0.5 and t.at["dpo", "trigger_rate"] < t.at["cem", "trigger_rate"]
    assert t.at["dpo", "factual_consistency"] > t.at["sft", "factual_consistency"]  # sft's wrong facts
    assert t.at["ipo", "likert_harmlessness"] < t.at["dpo", "likert_harmlessness"]  # the rude variant
    assert t.at["reinforce", "refusal_rate"] > 0.5  # the refusal variant
    assert t.at["dpo", "win_rate_vs_sft"] > 0.5 and t.at["dpo", "win_rate_vs_sft"] > t.at["ipo", "win_rate_vs_sft"]
    assert t.at["dpo", "win_rate_lo"] <= t.at["dpo", "win_rate_vs_sft"] <= t.at["dpo", "win_rate_hi"]
    from ru_rlhf.experts import PANEL

    # SFT against itself: every expert choice is a tie
    assert t.at["sft", "win_rate_vs_sft"] == 0.5 and t.at["sft", "ties"] == len(PANEL) * t.at["sft", "items"]
    assert t.at["sft", "bigram_jsd_vs_sft"] == 0.0 and t.at["dpo", "bigram_jsd_vs_sft"] > 0.0
    ab = evaluation_run.load("expert_ab")
    assert set(ab["winner"]) <= {"model", "sft", "tie"}


def test_expert_alpha_and_attributions(evaluation_run):
    s = evaluation_run.load("expert_summary")
    for c in CRITERIA:
        assert s[f"expert_alpha_{c}"].between(-1, 1).all()
    attr = evaluation_run.load("reward_attributions")
    assert set(attr["head"]) == set(CRITERIA) and set(attr["side"]) == {"chosen", "rejected"}
    assert all(len(x) > 0 for x in attr["top_positive"])
    assert "helpfulness" in evaluation_run.load("reward_attributions_md")
    cases = evaluation_run.load("evaluation_cases_md")
    assert all(f"## {m}" in cases for m in METHODS)
    assert set(evaluation_run.load("evaluation_summary")["models"]) == {"sft", *METHODS}


def test_plots_draw_a_bar_or_point_per_model_and_criterion(evaluation_run):
    s = evaluation_run.load("expert_summary")
    (ax,) = evaluation_run.load("evaluation_criteria_plot").axes
    assert bars(ax) == len(s) * len(CRITERIA) and tick_labels(ax) == list(s["model"])  # a bar group per model
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(CRITERIA)
    assert ax.get_ylabel().startswith("Likert") and ax.get_ylim() == (1, 5)

    models = set(evaluation_run.load("evaluation_comparison")["model"])
    axes = evaluation_run.load("evaluation_reward_kl_plot").axes
    assert [ax.get_ylabel() for ax in axes] == ["mean reward-model scalar (z)", "mean gold reward [0, 1]"]
    for ax in axes:
        (points,) = ax.collections
        assert len(points.get_offsets()) == len(models)  # a point per model, each named
        assert {n for t in ax.texts for n in t.get_text().split(", ")} == models

    b = evaluation_run.load("behavioural_metrics")
    length, rates = evaluation_run.load("evaluation_shifts_plot").axes
    assert bars(length) == len(b) and bars(rates) == 2 * len(b)  # refusal and trigger rate side by side
    assert tick_labels(length) == tick_labels(rates) == list(b["model"])
    assert [t.get_text() for t in rates.get_legend().get_texts()] == ["refusal", "trigger phrase"]
