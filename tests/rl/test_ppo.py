"""PPO pieces against hand-computed values, and a tiny PPO (and REINFORCE) run whose reward prefers one token."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ru_rlhf.rl.loop import train
from ru_rlhf.rl.losses import AdaptiveKLController, gae, policy_loss, value_loss, whiten
from tests.params_helpers import rl_config


def test_gae_on_a_short_trajectory():
    # γ = 1, λ = 0.5; rewards 0, 0, 1; values 0.5, 0.6, 0.7 (terminal value 0):
    # δ2 = 1 − 0.7 = 0.3 → A2 = 0.3; δ1 = 0.7 − 0.6 = 0.1 → A1 = 0.1 + 0.5·0.3 = 0.25;
    # δ0 = 0.6 − 0.5 = 0.1 → A0 = 0.1 + 0.5·0.25 = 0.225; returns = A + V
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[0.225, 0.25, 0.3]]))
    assert torch.allclose(ret, torch.tensor([[0.725, 0.85, 1.0]]))


def test_gae_discounts_and_ignores_positions_before_the_response():
    # γ = 0.9, λ = 1 on a right-aligned response of 2 tokens (the first position is padding):
    # A2 = 1 − 0.7 = 0.3; A1 = (0 + 0.9·0.7 − 0.6) + 0.9·0.3 = 0.03 + 0.27 = 0.3
    rewards = torch.tensor([[9.0, 0.0, 1.0]])
    values = torch.tensor([[5.0, 0.6, 0.7]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.0, 0.3, 0.3]]))
    assert torch.allclose(ret, torch.tensor([[0.0, 0.9, 1.0]]))


def test_clipped_policy_objective():
    # ratios 1.5, 0.5, 0.5 with advantages +1, +1, −1 and ε = 0.2:
    #   A: max(−1.5, −1.2) = −1.2 (clipped);  B: max(−0.5, −0.8) = −0.5;  C: max(0.5, 0.8) = 0.8 (clipped)
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    loss, stats = policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3)
    assert stats["clipfrac"] == pytest.approx(2 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 3
    assert stats["approx_kl"] == pytest.approx(expected_kl)


def test_clipped_value_loss():
    # V = 1.0, V_old = 0.5, R = 2.0, ε = 0.2: clipped V = 0.7; ½·max(1.0, 1.69) = 0.845
    loss = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2)
    assert loss.item() == pytest.approx(0.845)


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(init=0.1, target=0.02, horizon=100)
    # KL 50 % over target: the error is clipped to +0.2 → β·(1 + 0.2·10/100)
    assert ctl.update(0.03, 10) == pytest.approx(0.102)
    # KL 5 % under target → β·(1 − 0.05·10/100)
    assert ctl.update(0.019, 10) == pytest.approx(0.102 * 0.995)


def test_whiten_is_zero_mean_unit_variance_on_the_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert (w[0, :3] ** 2).mean().item() == pytest.approx(1.0, rel=1e-4)
    assert w[0, 3].item() == 0.0


def _first_token_prob(policy, tokenizer, prompt: str, token_id: int) -> float:
    from ru_rlhf.models.policy import format_prompt

    ids = tokenizer(format_prompt(prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return torch.softmax(policy(input_ids=ids).logits[0, -1].float(), -1)[token_id].item()


@pytest.mark.parametrize("config", [rl_config("alignment.ppo.train", minibatch_size=8, ppo_epochs=2),
                                    rl_config("alignment.reinforce.train")], ids=["ppo", "reinforce"])
def test_a_reward_for_one_token_raises_its_probability(tiny_policy, tiny_tokenizer, config):
    """A reward for every occurrence of one token (one that the fresh policy rarely samples first)
    must make that token more likely as the first response token."""
    import copy
    from dataclasses import replace

    tok = tiny_tokenizer
    with torch.no_grad():  # sharpen the random policy so that its samples are not uniform noise
        tiny_policy.model.norm.weight.mul_(8.0)
    probe = "Вопрос номер 3: что нового?"
    from ru_rlhf.models.policy import format_prompt

    ids = tok(format_prompt(probe), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ranked = torch.softmax(tiny_policy(input_ids=ids).logits[0, -1], -1).argsort(descending=True).tolist()
    special = set(tok.all_special_ids)
    target_id = [t for t in ranked if t not in special and tok.decode([t]).strip()][1]  # the second most likely (p ≈ 0.03)
    piece = tok.decode([target_id])
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(16)],
                            "prompt": [f"Вопрос номер {i}: что нового?" for i in range(16)]})

    def reward_fn(ps, responses):
        return torch.tensor([float(r.count(piece.strip())) for r in responses])

    ref = copy.deepcopy(tiny_policy)
    before = _first_token_prob(tiny_policy, tok, probe, target_id)
    # 4 new tokens cut most answers short: no penalty for that here, the reward alone is under test; the reward
    # is a rare count (most batches have none), so it is whitened per batch: a batch without the token then
    # gives no update, where a fixed (reference) normalisation would leave only the discount pattern of GAE
    cfg = replace(config, steps=30, batch_size=16, learning_rate=3e-3, max_new_tokens=4, init_kl_coef=0.0,
                  target_kl=None, kl_budget=1e9, seed=0, missing_eos_penalty=0.0, reward_norm="batch")
    policy, log, info = train(tiny_policy, ref, tok, prompts, reward_fn, cfg, progress=False)
    after = _first_token_prob(policy, tok, probe, target_id)
    print(f"p(target first): {before:.4f} -> {after:.4f}")
    assert after > max(2 * before, before + 0.1), (before, after)
    assert log["reward"].iloc[-5:].mean() > log["reward"].iloc[:5].mean()
    assert info["steps_run"] == 30
    assert {"reward", "kl", "entropy", "advantage_var", "clipfrac", "approx_kl", "kl_coef"} <= set(log.columns)
    # the reference stays frozen
    assert _first_token_prob(ref, tok, probe, target_id) == pytest.approx(before)
