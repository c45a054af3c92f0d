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
    distributional_loss,
    load_reward_model,
    preference_probability,
    score,
    train_reward_model,
)


def test_bradley_terry_by_hand():
    chosen = torch.tensor([[2.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    rejected = torch.tensor([[1.0, 9.0, -5.0], [0.0, 3.0, 0.0]])
    head = torch.tensor([0, 1])  # pair 1 on helpfulness (2 vs 1), pair 2 on truthfulness (1 vs 3)
    expected = -(math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(2)))) / 2
    assert bradley_terry_loss(chosen, rejected, head).item() == pytest.approx(expected, rel=1e-6)


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
