"""Reward model losses against hand-computed values, head masking, save/load, calibration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ru_rlhf.metrics import expected_calibration_error, pairwise_metrics
from ru_rlhf.models.encoder import load_encoder, train_wordpiece_tokenizer
from ru_rlhf.models.reward import (
    RewardModel,
    bradley_terry_loss,
    criterion_weights,
    distinct_sequences,
    distributional_loss,
    epoch_batches,
    load_reward_model,
    pair_accuracy,
    preference_probability,
    prompt_batches,
    score,
    train_reward_model,
)


def test_bradley_terry_by_hand():
    chosen = torch.tensor([[2.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    rejected = torch.tensor([[1.0, 9.0, -5.0], [0.0, 3.0, 0.0]])
    head = torch.tensor([0, 1])  # pair 1 on helpfulness (2 vs 1), pair 2 on truthfulness (1 vs 3)
    expected = -(math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(2)))) / 2
    assert bradley_terry_loss(chosen, rejected, head).item() == pytest.approx(expected, rel=1e-6)


def test_criterion_weights_give_each_criterion_the_same_share_of_the_epoch_by_hand():
    crit = pd.Series(["helpfulness"] * 6 + ["truthfulness"] * 3 + ["harmlessness"])
    w = criterion_weights(crit)
    # 1 / (3 criteria x share): 1 / (3 x 0.6), 1 / (3 x 0.3), 1 / (3 x 0.1)
    assert list(w.round(6)) == [round(1 / 1.8, 6)] * 6 + [round(1 / 0.9, 6)] * 3 + [round(1 / 0.3, 6)]
    assert w.mean() == pytest.approx(1.0) and all(w[crit == c].sum() == pytest.approx(10 / 3) for c in set(crit))
    # the weighted loss of two pairs, by hand: weights 0.5 and 1.5 on losses -log s(1) and -log s(-2)
    chosen, rejected = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    expected = (0.5 * math.log(1 + math.exp(-1)) + 1.5 * math.log(1 + math.exp(2))) / 2
    got = bradley_terry_loss(chosen, rejected, torch.tensor([0, 1]), weights=torch.tensor([0.5, 1.5]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_other_heads_are_masked():
    chosen = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    rejected = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    bradley_terry_loss(chosen, rejected, torch.tensor([0])).backward()
    assert chosen.grad[0, 1:].abs().sum() == 0 and chosen.grad[0, 0] != 0


def test_distributional_preference_probability_by_hand():
    pc = torch.tensor([[0.1, 0.2, 0.7]])
    pr = torch.tensor([[0.5, 0.3, 0.2]])
    # Σ_{i>j} pc[i] pr[j] = pc1·pr0 + pc2·(pr0 + pr1) = 0.2·0.5 + 0.7·0.8 = 0.66
    assert preference_probability(pc, pr).item() == pytest.approx(0.66)
    probs_c = torch.stack([pc, pr, pr], dim=1)  # [batch, heads, bins]
    probs_r = torch.stack([pr, pc, pc], dim=1)
    assert distributional_loss(probs_c, probs_r, torch.tensor([0])).item() == pytest.approx(-math.log(0.66))
    # on head 1 the roles are swapped: P = Σ_{i>j} pr[i] pc[j] = 0.3·0.1 + 0.2·0.3 = 0.09
    assert distributional_loss(probs_c, probs_r, torch.tensor([1])).item() == pytest.approx(-math.log(0.09))


@pytest.fixture(scope="module")
def tiny_rm_parts(small_world):
    texts = small_world[0]["text"].tolist()
    tok = train_wordpiece_tokenizer(texts, vocab_size=500, model_max_length=128)
    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 128}
    return tok, size


@pytest.mark.parametrize("kind", ["multi_head", "distributional"])
def test_save_load_round_trip_gives_identical_scores(tmp_path, tiny_rm_parts, kind):
    tok, size = tiny_rm_parts
    rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=1), kind=kind,
                     weights={"helpfulness": 0.5, "truthfulness": 0.25, "harmlessness": 0.25})
    rm.save_pretrained(tmp_path / "rm", tok)
    loaded, tok2 = load_reward_model(tmp_path / "rm")
    prompts, responses = ["Где открыли мост?"] * 2, ["В Казани.", "Не знаю."]
    a, b = score(rm, tok, prompts, responses), score(loaded, tok2, prompts, responses)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["helpfulness", "truthfulness", "harmlessness", "scalar"]
    assert np.allclose(a["scalar"], 0.5 * a["helpfulness"] + 0.25 * a["truthfulness"] + 0.25 * a["harmlessness"])
    assert loaded.weights == rm.weights and loaded.kind == kind


def test_training_learns_a_simple_preference(tiny_rm_parts):
    """Chosen responses say «спасибо», rejected ones are rude: a few steps separate them on that head."""
    tok, size = tiny_rm_parts
    rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=2))
    pairs = pd.DataFrame({"prompt": ["Вопрос"] * 64, "chosen": ["Спасибо за вопрос!"] * 64,
                          "rejected": ["Вопрос глупый."] * 64, "criterion": ["harmlessness"] * 64})
    rm, log = train_reward_model(rm, tok, pairs, epochs=4, batch_size=16, learning_rate=3e-3, max_length=32)
    s = score(rm, tok, ["Вопрос", "Вопрос"], ["Спасибо за вопрос!", "Вопрос глупый."])
    assert s.loc[0, "harmlessness"] > s.loc[1, "harmlessness"]
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]


def test_length_grouped_batches_cover_every_row_once_and_pad_less():
    """Without lengths the batches are the shuffled order cut in turn (the old loop); with them every row still comes
    once an epoch, each batch's rows come from one sorted mega-batch, and the padding falls."""
    import random

    lengths = np.array([(7 * i) % 97 + 1 for i in range(200)])
    plain = epoch_batches(list(range(200)), 8, random.Random(3))
    order = list(range(200))
    random.Random(3).shuffle(order)
    assert plain == [order[b:b + 8] for b in range(0, 200, 8)]
    grouped = epoch_batches(list(range(200)), 8, random.Random(3), lengths, mega_batches=5)
    assert sorted(i for b in grouped for i in b) == list(range(200))
    assert all(list(lengths[b]) == sorted(lengths[b], reverse=True) for b in grouped)

    def padded(batches):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    assert padded(grouped) < 0.5 * padded(plain)
    # a different draw gives a different order of batches (the epoch is still shuffled)
    assert epoch_batches(list(range(200)), 8, random.Random(4), lengths, mega_batches=5) != grouped


def test_prompt_batches_keep_each_prompts_pairs_together_and_cover_every_row_once():
    """With ``batching="prompts"`` a batch holds the pairs of consecutive prompts: every row comes once an epoch, and
    no prompt is split over more batches than its rows force."""
    import random

    groups = [list(range(g * 15, g * 15 + 15)) for g in range(10)]  # 10 prompts of 15 pairs (6 answers: C(6,2))
    batches = prompt_batches(groups, 32, random.Random(3))
    assert sorted(i for b in batches for i in b) == list(range(150))
    assert [len(b) for b in sorted(batches, key=len, reverse=True)][:4] == [32, 32, 32, 32]
    prompt_of = {i: g for g, rows in enumerate(groups) for i in rows}
    # 32 consecutive rows of 15-row prompts touch at most 4 prompts; a random draw of 32 of the 150 touches nearly all 10
    assert max(len({prompt_of[i] for i in b}) for b in batches) <= 4
    lengths = np.array([(7 * i) % 97 + 1 for i in range(150)])
    grouped = prompt_batches(groups, 32, random.Random(3), lengths, mega_batches=2)
    assert sorted(i for b in grouped for i in b) == list(range(150))
    assert prompt_batches(groups, 32, random.Random(4)) != batches


def test_distinct_sequences_score_each_answer_once():
    prompts, chosen, rejected = ["p", "p", "p", "q"], ["a", "a", "b", "a"], ["b", "c", "c", "b"]
    seq_p, seq_a, c_at, r_at = distinct_sequences(prompts, chosen, rejected)
    assert list(zip(seq_p, seq_a)) == [("p", "a"), ("p", "b"), ("q", "a"), ("p", "c"), ("q", "b")]
    assert [seq_a[i] for i in c_at] == chosen and [seq_a[i] for i in r_at] == rejected
    assert [seq_p[i] for i in c_at] == prompts and [seq_p[i] for i in r_at] == prompts


@pytest.mark.parametrize("kind", ["multi_head", "distributional"])
def test_scoring_scores_each_distinct_answer_once_and_repeats_its_row(tiny_rm_parts, kind):
    tok, size = tiny_rm_parts
    rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=3), kind=kind)
    # a pair set's two sides: 3 pairs of one prompt over 3 answers, a pair of another prompt sharing an answer text
    prompts = ["Где открыли мост?"] * 3 + ["Что открыли?"]
    chosen, rejected = ["В Казани.", "В Казани.", "Не знаю.", "В Казани."], ["Не знаю.", "Мост.", "Мост.", "Мост."]
    seen = []
    real_pooled = rm.pooled  # every path through the backbone (forward, and pooled=True) goes through it

    def counting(*args, **kwargs):
        seen.append(len(args[0] if args else kwargs["input_ids"]))
        return real_pooled(*args, **kwargs)

    rm.pooled = counting
    every = score(rm, tok, prompts * 2, chosen + rejected, distinct=False, pooled=True)
    assert sum(seen) == 8
    seen.clear()
    once = score(rm, tok, prompts * 2, chosen + rejected, pooled=True)
    assert sum(seen) == 5  # (Где, Казани), (Где, Не знаю), (Где, Мост), (Что, Казани), (Что, Мост)
    pd.testing.assert_frame_equal(once, every, atol=1e-5, check_exact=False)
    assert np.allclose(once.attrs["pooled"], every.attrs["pooled"], atol=1e-5)
    assert once.iloc[0].equals(once.iloc[1])  # the same answer to the same prompt: the same row
    assert not once.iloc[0].equals(once.iloc[3])  # the same text to another prompt: scored on its own


def test_prompt_batching_learns_the_same_preference_from_fewer_sequences(tiny_rm_parts, monkeypatch):
    """Six answers per prompt, every pair of them ordered by a cue («спасибо» > neutral > rude): batching by prompt
    scores 6 sequences per prompt instead of 2 per pair, and still ranks the answers on held-out pairs."""
    from ru_rlhf.models import reward as reward_module

    tok, size = tiny_rm_parts
    answers = ["Спасибо за вопрос!", "Спасибо, отвечу.", "Ответ такой.", "Скажу так.", "Вопрос глупый.",
               "Глупый вопрос, уходи."]
    rows = [{"prompt": f"Вопрос {k}", "chosen": answers[i], "rejected": answers[j], "criterion": "harmlessness"}
            for k in range(8) for i in range(6) for j in range(i + 1, 6) if i // 2 != j // 2]
    pairs = pd.DataFrame(rows)  # 8 prompts x 12 pairs
    encoded = []
    real_encode = reward_module.encode
    monkeypatch.setattr(reward_module, "encode", lambda tok_, p, r, m, plan=None: (
        encoded.append(len(p)), real_encode(tok_, p, r, m, plan))[1])
    rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=2))
    rm, log = train_reward_model(rm, tok, pairs, epochs=6, batch_size=24, learning_rate=3e-3, max_length=32,
                                 batching="prompts")
    steps = int((log["kind"] == "step").sum())
    assert steps == 6 * 4 and sum(encoded) <= steps * 18 < steps * 48  # 24 pairs of 2-3 prompts: at most 18 answers
    s = score(rm, tok, ["Вопрос 9"] * 3, [answers[1], answers[3], answers[5]])
    assert s.loc[0, "harmlessness"] > s.loc[1, "harmlessness"] > s.loc[2, "harmlessness"]
    with pytest.raises(ValueError, match="batching"):
        train_reward_model(rm, tok, pairs, epochs=1, batching="prompt")
    with pytest.raises(ValueError, match="balance_criteria"):
        train_reward_model(rm, tok, pairs, epochs=1, balance_criteria="epochs")


def test_epoch_balance_weighs_a_rare_criterion_as_much_as_a_common_one(tiny_rm_parts):
    """A rare criterion (harmlessness: 1 pair in 8) whose cue only its own pairs teach: with ``balance_criteria=
    "epoch"`` its pairs weigh 3.5x more, so its head learns the cue further than with the plain mean, same draws."""
    tok, size = tiny_rm_parts
    rows = []
    for k in range(16):
        rows += [{"prompt": f"Вопрос {k}", "chosen": f"Ответ {k} подробный.", "rejected": f"Ответ {k}.",
                  "criterion": "helpfulness"}] * 7
        rows.append({"prompt": f"Вопрос {k}", "chosen": "Спокойный ответ.", "rejected": "Грубый ответ, уходи.",
                     "criterion": "harmlessness"})
    pairs = pd.DataFrame(rows)
    margins = {}
    for balance in (False, "epoch"):
        rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=2))
        rm, _ = train_reward_model(rm, tok, pairs, epochs=2, batch_size=16, learning_rate=1e-3, max_length=32,
                                   batching="prompts", balance_criteria=balance, seed=5)
        s = score(rm, tok, ["Вопрос 99"] * 2, ["Спокойный ответ.", "Грубый ответ, уходи."])
        margins[balance] = s.loc[0, "harmlessness"] - s.loc[1, "harmlessness"]
    assert margins["epoch"] > margins[False] > 0


def test_pairwise_metrics_and_ece_on_synthetic_data():
    m = pairwise_metrics([1.0, 2.0, -0.5, 0.3], [0.5, 1.0, 0.2, 0.0])
    assert m["accuracy"] == pytest.approx(2 / 3, abs=1e-4) and m["accuracy_annotators"] == 0.75 and m["gold_untied_pairs"] == 3
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = rng.uniform(size=20000) < p  # perfectly calibrated
    ece, bins = expected_calibration_error(p, y)
    assert ece < 0.02 and len(bins) == 10
    ece_bad, _ = expected_calibration_error(np.clip(p * 0.5 + 0.5, 0, 1), y)  # overconfident
    assert ece_bad > 0.2


def test_platt_scaling_fixes_a_miscalibrated_score():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    z = rng.normal(size=20000)
    y = (rng.uniform(size=20000) < 1 / (1 + np.exp(-z))).astype(int)
    raw = 4 * z  # the same ordering, four times too confident
    before, _ = expected_calibration_error(1 / (1 + np.exp(-raw)), y)
    platt = LogisticRegression().fit(raw[:10000].reshape(-1, 1), y[:10000])
    after, _ = expected_calibration_error(platt.predict_proba(raw[10000:].reshape(-1, 1))[:, 1], y[10000:])
    assert before > 0.1 and after < 0.02


def test_the_scalar_weights_z_scored_heads_and_survives_save_load(tmp_path, tiny_rm_parts):
    """Heads on different scales: after fit_normalisation each head has mean 0 and spread 1 on the
    fitting responses, the scalar is the weighted sum of those z-scores, and the fit is saved."""
    from ru_rlhf.models.reward import fit_normalisation, load_reward_model, score

    tok, size = tiny_rm_parts
    rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=1), kind="multi_head", weights={"helpfulness": 0.5, "truthfulness": 0.5,
                                                            "harmlessness": 0.0})
    with torch.no_grad():  # make one head loud
        rm.head.weight[2].mul_(50.0)
    prompts = ["Вопрос?"] * 6
    responses = ["Да.", "Нет, это было в мае.", "Мост открыли в Казани.", "Не знаю.", "Спасибо!", "Глупый вопрос."]
    norm = fit_normalisation(rm, tok, prompts, responses)
    s = score(rm, tok, prompts, responses)
    heads = list(rm.heads)
    z = (s[heads] - pd.Series(norm["mean"])) / pd.Series(norm["std"])
    assert np.allclose(z.mean(), 0, atol=1e-4) and np.allclose(z.std(ddof=0), 1, atol=1e-3)
    assert np.allclose(s["scalar"], 0.5 * z["helpfulness"] + 0.5 * z["truthfulness"], atol=1e-4)
    rm.save_pretrained(tmp_path / "rm", tok)
    rm2, tok2 = load_reward_model(tmp_path / "rm")
    assert rm2.norm_mean == rm.norm_mean and rm2.norm_std == rm.norm_std
    assert np.allclose(score(rm2, tok2, prompts, responses)["scalar"], s["scalar"], atol=1e-5)


# --------------------------------------------------------------------------- the window, the policy backbone
@pytest.fixture(scope="module")
def tiny_policy_parts(small_world):
    from ru_rlhf.models.policy import load_policy, train_tokenizer
    from tests.conftest import TINY_SIZE

    tok = train_tokenizer(small_world[0]["text"].tolist(), vocab_size=500, model_max_length=256)
    return load_policy(size=TINY_SIZE, tokenizer=tok, seed=0), tok


def test_truncation_cuts_the_prompt_from_the_left_and_the_response_from_the_right(tiny_policy_parts):
    from ru_rlhf.models.reward import encode, truncation_plan

    _, tok = tiny_policy_parts
    prompt = " ".join(f"слово{i}" for i in range(300)) + " Где открыли мост?"
    answer = " ".join(f"ответ{i}" for i in range(2000))  # about 2 000 tokens
    assert len(tok(answer, add_special_tokens=False)["input_ids"]) >= 1900
    (row,) = truncation_plan(tok, [prompt], [answer], 64)
    assert len(row["prompt_ids"]) + len(row["response_ids"]) == 63  # and the end-of-sequence token
    ids = encode(tok, [prompt], [answer], 64)["input_ids"][0].tolist()
    assert len(ids) == 64 and ids[-1] == tok.eos_token_id  # a causal backbone's sequence ends as answers do
    assert tok.decode(row["response_ids"]).split()[0] == "ответ0"  # the answer's start is kept
    assert tok.decode(row["prompt_ids"]).rstrip().endswith("мост?")  # the question at the end is kept
    assert row["prompt_cut"] > 0 and row["response_cut"] > 0
    # a short pair is not touched; a short prompt leaves the long response the rest of the window
    (short,) = truncation_plan(tok, ["Вопрос?"], ["Ответ."], 64)
    assert short["prompt_cut"] == short["response_cut"] == 0
    (long_answer,) = truncation_plan(tok, ["Вопрос?"], [answer], 64)
    assert long_answer["prompt_cut"] == 0 and len(long_answer["prompt_ids"]) + len(long_answer["response_ids"]) == 63


def test_bert_pairs_keep_their_special_tokens_within_the_window(tiny_rm_parts):
    from ru_rlhf.models.reward import encode

    tok, _ = tiny_rm_parts
    enc = encode(tok, ["Где открыли мост? " * 40, "Вопрос"], ["В Казани. " * 300, "Да."], 48)
    assert enc["input_ids"].shape == (2, 48)
    ids = enc["input_ids"][0].tolist()
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and ids.count(tok.sep_token_id) == 2
    start = int(enc["response_start"][0])
    assert ids[start - 1] == tok.sep_token_id and tok.decode(ids[start:start + 6]).lower().startswith("в ка")


def test_a_2000_token_answer_trains_and_scores_on_both_backbones(tiny_policy_parts, tiny_rm_parts):
    """The old encoder cut only the prompt and crashed on any answer longer than the window."""
    policy, ptok = tiny_policy_parts
    btok, size = tiny_rm_parts
    long = " ".join(f"слово{i}" for i in range(2000))
    pairs = pd.DataFrame({"prompt": ["Вопрос"] * 4, "chosen": ["Спасибо!", long] * 2, "rejected": [long, "Нет."] * 2,
                          "criterion": ["helpfulness"] * 4})
    for model, tok, pooling in ((policy, ptok, "last"), (load_encoder(size=size, tokenizer=btok, seed=0), btok, "mean")):
        rm = RewardModel(model, pooling=pooling, max_length=96)
        rm, log = train_reward_model(rm, tok, pairs, epochs=1, batch_size=2, learning_rate=1e-3, max_length=96)
        assert log["loss"].notna().all()
        assert np.isfinite(score(rm, tok, ["Вопрос"], [long])["scalar"]).all()


def test_last_token_pooling_ignores_padding_on_either_side(tiny_policy_parts):
    policy, tok = tiny_policy_parts
    rm = RewardModel(policy, pooling="last").eval()
    assert rm.encoder.config.model_type == "llama" and not hasattr(rm.encoder, "lm_head")
    prompts, responses = ["Где?", "Где открыли новый мост через реку?"], ["В Казани.", "В Казани, вчера."]
    both = score(rm, tok, prompts, responses, batch_size=2)  # padded to the longer row
    alone = pd.concat([score(rm, tok, [p], [r], batch_size=1) for p, r in zip(prompts, responses)], ignore_index=True)
    np.testing.assert_allclose(both.to_numpy(), alone.to_numpy(), atol=1e-5)
    tok.padding_side = "right"
    try:
        right = score(rm, tok, prompts, responses, batch_size=2)
    finally:
        tok.padding_side = "left"
    np.testing.assert_allclose(right.to_numpy(), alone.to_numpy(), atol=1e-5)


def test_policy_backbone_round_trip(tmp_path, tiny_policy_parts):
    policy, tok = tiny_policy_parts
    rm = RewardModel(policy, pooling="last", max_length=77)
    rm.save_pretrained(tmp_path / "rm", tok)
    loaded, tok2 = load_reward_model(tmp_path / "rm")
    assert loaded.pooling == "last" and loaded.max_length == 77 and loaded.encoder.config.model_type == "llama"
    a = score(rm, tok, ["Где?"] * 2, ["В Казани.", "Не знаю."])
    pd.testing.assert_frame_equal(a, score(loaded, tok2, ["Где?"] * 2, ["В Казани.", "Не знаю."]))


def test_early_stopping_keeps_the_best_validation_state(tiny_rm_parts):
    """Validation pairs whose gold ordering contradicts the training labels: the more the model learns, the
    worse it validates, so the state kept is the first evaluated and training stops early."""
    tok, size = tiny_rm_parts
    rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=2))
    pairs = pd.DataFrame({"prompt": ["Вопрос"] * 64, "chosen": ["Спасибо за вопрос!"] * 64,
                          "rejected": ["Вопрос глупый."] * 64, "criterion": ["harmlessness"] * 64})
    val = pairs.head(8).assign(gold_margin=-1.0)
    rm, log = train_reward_model(rm, tok, pairs, epochs=10, batch_size=16, learning_rate=3e-3, max_length=32,
                                 validation=val, evals_per_epoch=2, patience=2)
    evals = log[log["kind"] == "eval"]
    assert log.loc[log["kind"] == "step", "step"].max() < 40  # stopped well before 10 epochs
    assert evals["best"].sum() == 1 and evals.loc[evals["best"], "step"].item() == evals["step"].iloc[0]
    assert {"train_accuracy_harmlessness", "validation_accuracy_harmlessness"} <= set(evals.columns)
    kept = score(rm, tok, ["Вопрос"] * 2, ["Спасибо за вопрос!", "Вопрос глупый."])
    assert pair_accuracy(rm, tok, val, 32)["harmlessness"] == evals.loc[evals["best"],
                                                                         "validation_accuracy_harmlessness"].item()
    assert len(kept) == 2


def test_best_of_n_by_hand():
    from ru_rlhf.pipelines.reward_modeling.nodes import best_of_n_table

    # one prompt, 3 samples: proxy ranks c > b > a; gold a=0, b=1, c=0.5
    t = pd.DataFrame({"prompt_id": ["p"] * 3, "rm": [0.1, 0.2, 0.3], "gold": [0.0, 1.0, 0.5]})
    bon = best_of_n_table(t, [1, 2, 3]).set_index("n")
    assert bon.loc[1, "gold"] == pytest.approx(0.5)  # the mean
    # n = 2: subsets {a,b} -> b (1.0), {a,c} -> c (0.5), {b,c} -> c (0.5): mean 2/3
    assert bon.loc[2, "gold"] == pytest.approx(2 / 3, abs=1e-4)
    assert bon.loc[3, "gold"] == pytest.approx(0.5) and bon.loc[3, "proxy"] == pytest.approx(0.3)
    assert bon.loc[2, "gain_vs_1"] == pytest.approx(2 / 3 - 0.5, abs=1e-4)


def test_tfidf_baseline_learns_a_lexical_cue_and_nothing_else():
    from ru_rlhf.models.baseline import TfidfPairModel

    rng = np.random.default_rng(0)
    words = [f"слово{i}" for i in range(40)]
    rows = []
    for _ in range(200):
        body = " ".join(rng.choice(words, 6))
        rows.append({"criterion": "harmlessness", "chosen": f"{body} спасибо", "rejected": f"{body} дурак"})
        a, b = " ".join(rng.choice(words, 6)), " ".join(rng.choice(words, 6))
        rows.append({"criterion": "helpfulness", "chosen": a, "rejected": b})  # no signal at all
    model = TfidfPairModel(seed=0).fit(pd.DataFrame(rows))
    assert (model.score(["да спасибо"], "harmlessness") > model.score(["да дурак"], "harmlessness")).all()
    fresh = [(" ".join(rng.choice(words, 6)), " ".join(rng.choice(words, 6))) for _ in range(300)]
    held = np.mean([model.score([a], "helpfulness")[0] > model.score([b], "helpfulness")[0] for a, b in fresh])
    assert 0.4 < held < 0.6  # random pairs: at chance
    assert np.isnan(model.score(["x"], "truthfulness")).all()  # a head with no pairs scores nothing


def test_a_switched_off_model_saves_and_loads_as_none(tmp_path):
    from ru_rlhf.io.datasets import HFModelDataset, NotTrained

    ds = HFModelDataset(str(tmp_path / "rm"), kind="reward_model")
    ds.save(NotTrained("reward_modeling.cross_lingual is false"))
    assert ds.exists() and ds.load() is None
    assert "cross_lingual" in (tmp_path / "rm" / "not_trained.json").read_text()


def test_decorrelation_penalty_by_hand():
    from ru_rlhf.models.reward import decorrelation_penalty

    scores = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
    length = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    # head 0 is the length itself (corr 1); head 1 alternates: corr with 1..4 is 0.4472 (= 1/sqrt(5))
    assert decorrelation_penalty(scores, length).item() == pytest.approx((1.0 + 0.2) / 2, abs=1e-5)
    assert decorrelation_penalty(scores, torch.ones(4, 1)).item() == 0.0  # a constant feature adds nothing


def test_a_bias_head_absorbs_length_and_stays_out_of_the_scalar(tiny_rm_parts, tmp_path):
    """Labels that prefer the longer answer whatever it says: with the bias head the quality head's
    preference for length is smaller than without it."""
    tok, size = tiny_rm_parts
    rows = []
    for i in range(48):
        short, long = "Спасибо.", "Спасибо за вопрос, " + "очень " * (3 + i % 5) + "интересно."
        rows.append({"prompt": "Вопрос", "chosen": long, "rejected": short, "criterion": "helpfulness"})
    pairs = pd.DataFrame(rows)
    gaps = {}
    for bias in (False, True):
        rm = RewardModel(load_encoder(size=size, tokenizer=tok, seed=4), bias_head=bias)
        rm, _ = train_reward_model(rm, tok, pairs, epochs=3, batch_size=16, learning_rate=3e-3, max_length=48,
                                   debias_weight=5.0)
        s = score(rm, tok, ["Вопрос"] * 2, [pairs["chosen"][0], "Спасибо."])
        gaps[bias] = float(s.loc[0, "helpfulness"] - s.loc[1, "helpfulness"])
        assert list(s.columns) == ["helpfulness", "truthfulness", "harmlessness", "scalar"]
    assert gaps[True] < gaps[False]
    rm.save_pretrained(tmp_path / "rm", tok)
    loaded, _ = load_reward_model(tmp_path / "rm")
    assert loaded.bias_head
    pd.testing.assert_frame_equal(score(rm, tok, ["Вопрос"], ["Спасибо."]), score(loaded, tok, ["Вопрос"], ["Спасибо."]))


def test_the_match_feature_marks_response_tokens_read_in_the_prompt(tiny_policy_parts, tmp_path):
    from ru_rlhf.models.reward import encode

    policy, tok = tiny_policy_parts
    enc = encode(tok, ["В Казани открыли мост."], ["В Самаре мост."], 64)
    ids, match, resp = enc["input_ids"][0].tolist(), enc["match"][0].tolist(), enc["response_mask"][0].tolist()
    start = int(enc["response_start"][0])
    prompt_ids = set(tok("В Казани открыли мост.", add_special_tokens=False)["input_ids"])
    for i, (t, m) in enumerate(zip(ids, match)):
        if i < start or t == tok.eos_token_id or not resp[i]:
            assert m == 0  # prompt, padding and special tokens are never marked
        else:
            assert m == int(t in prompt_ids)
    assert 0 < sum(match) < sum(resp)  # «мост» is read in the prompt, «Самаре» is not
    rm = RewardModel(policy, pooling="response", match_feature=True)
    # the feature starts at zero: the scores are the backbone's own until it is trained
    plain = RewardModel(policy, pooling="response")
    plain.head.load_state_dict(rm.head.state_dict())
    a = score(rm, tok, ["В Казани открыли мост."], ["В Самаре мост."])
    pd.testing.assert_frame_equal(a, score(plain, tok, ["В Казани открыли мост."], ["В Самаре мост."]))
    with torch.no_grad():
        rm.match.weight[1] += 0.5
    assert not np.allclose(score(rm, tok, ["В Казани открыли мост."], ["В Самаре мост."]).to_numpy(), a.to_numpy())
    rm.save_pretrained(tmp_path / "rm", tok)
    loaded, _ = load_reward_model(tmp_path / "rm")
    assert loaded.match_feature and torch.equal(loaded.match.weight, rm.match.weight)


def test_padding_does_not_move_a_gpt2_backbone(small_world):
    """GPT-2 has absolute positions: a left-padded row must read with the positions it has alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from ru_rlhf.models.policy import train_tokenizer

    tok = train_tokenizer(small_world[0]["text"].tolist(), vocab_size=400, model_max_length=128)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128))
    rm = RewardModel(gpt2, pooling="last").eval()
    assert rm.encoder.config.model_type == "gpt2"
    prompts, responses = ["Где?", "Где открыли новый мост через реку?"], ["В Казани.", "В Казани, вчера."]
    both = score(rm, tok, prompts, responses, batch_size=2)
    alone = pd.concat([score(rm, tok, [p], [r], batch_size=1) for p, r in zip(prompts, responses)], ignore_index=True)
    np.testing.assert_allclose(both.to_numpy(), alone.to_numpy(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["response", "last"])
def test_shared_prefix_gives_the_whole_sequences_states_and_gradients(tiny_policy_parts, pooling):
    """Each distinct prompt through the causal backbone once, its answers over its keys and values: the pooled states
    and every parameter's gradient are those of the whole sequences (prompts of different lengths, answers of
    different lengths, one prompt with three answers), with the match feature on."""
    from ru_rlhf.models.reward import encode, encode_shared, model_inputs

    policy, tok = tiny_policy_parts
    rm = RewardModel(policy, pooling=pooling, match_feature=True)
    torch.manual_seed(0)
    with torch.no_grad():
        rm.match.weight.normal_()  # zero at the start; any learned value must act alike on both paths
    assert rm.shares_prefix
    prompts = ["Где открыли мост?"] * 3 + ["Прочитай текст: в Казани открыли новый мост через реку. Что открыли?"] * 2
    answers = ["В Казани.", "Мост открыли в Казани, через реку.", "Не знаю.", "Мост.", "Новый мост через реку."]
    shared = encode_shared(tok, prompts, answers, 256)
    assert shared["prefix_ids"].shape[0] == 2 and shared["prefix_of"].tolist() == [0, 0, 0, 1, 1]
    grads = []
    for path in ("whole", "shared"):
        rm.zero_grad()
        out = (rm(**model_inputs(encode(tok, prompts, answers, 256), "cpu")) if path == "whole"
               else rm(shared=shared))["scores"]
        (out * torch.arange(1.0, 1 + out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}))
    (whole, g_whole), (part, g_shared) = grads
    assert torch.allclose(whole, part, atol=1e-5)
    assert g_whole.keys() == g_shared.keys() and len(g_whole) > 5
    assert all(torch.allclose(g_whole[n], g_shared[n], atol=1e-5) for n in g_whole)
    rm.zero_grad(set_to_none=True)  # the policy is the module's fixture
    # scoring batches a prompt's answers together and gives the whole sequences' scores (and pooled states)
    rm.eval()
    many_p, many_a = prompts * 3, [a + " " * k for k in range(3) for a in answers]  # 15 rows, 2 prompts
    on = score(rm, tok, many_p, many_a, batch_size=4, pooled=True, distinct=False)
    rm.prefix_sharing = False
    assert not rm.shares_prefix
    off = score(rm, tok, many_p, many_a, batch_size=4, pooled=True, distinct=False)
    pd.testing.assert_frame_equal(on, off, atol=1e-5, check_exact=False)
    assert np.allclose(on.attrs["pooled"], off.attrs["pooled"], atol=1e-5)
    # a bidirectional encoder (BERT) or pooling over the prompt too cannot share
    assert not RewardModel(policy, pooling="mean").shares_prefix
