"""PPO's implementation details (Huang et al. 2024), each against a hand-computed value: the reward normalised
against the reference's samples, the penalty for answers that never end, log-probabilities of the tempered logits,
advantages whitened per minibatch, dropout off, the value model initialised from the reward model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from ru_rlhf.rl.loop import _Run, train
from ru_rlhf.rl.rollout import Critic, disable_dropout, token_stats
from tests.params_helpers import rl_config


def _run(**overrides) -> _Run:
    cfg = rl_config("alignment.ppo.train", **overrides)
    return _Run(cfg, model=None, opt=None, acc=None, evaluate=None, checkpoint_dir=None)


def test_reference_normalisation_and_missing_eos_penalty():
    run = _run(reward_norm="reference", reward_scale=2.0, missing_eos_penalty=0.5)
    run.norm = (1.0, 4.0)  # the reference answers' mean and spread
    shaped = run.shape(torch.tensor([1.0, 5.0, -3.0]), torch.tensor([True, True, False]))
    # (s − 1) / 4 · 2, less 0.5 where the answer never ended
    assert shaped.tolist() == pytest.approx([0.0, 2.0, -2.0 - 0.5])


def test_batch_and_no_normalisation():
    scores, ended = torch.tensor([1.0, 3.0]), torch.tensor([True, True])
    assert _run(reward_norm="none", reward_scale=1.0).shape(scores, ended).tolist() == [1.0, 3.0]
    batch = _run(reward_norm="batch", reward_scale=1.0).shape(scores, ended)
    assert batch.tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-5)  # std with n − 1


def test_reference_normalisation_is_fitted_on_the_reference_policys_answers(tiny_policy, tiny_tokenizer):
    run = _run(reward_norm="reference", norm_samples=12, max_new_tokens=5)
    records = list(pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["Первый вопрос?", "Второй вопрос?"]})
                   .itertuples(index=False))
    seen = []

    def reward_fn(prompts, responses):
        seen.extend(responses)
        return torch.tensor([float(len(r)) for r in responses])

    run.fit_reward_norm(tiny_policy, tiny_tokenizer, records, reward_fn)
    lengths = torch.tensor([float(len(r)) for r in seen])
    assert len(seen) == 12
    assert run.norm == pytest.approx((lengths.mean().item(), lengths.std().item()))
    with pytest.raises(ValueError, match="does not vary"):
        run.fit_reward_norm(tiny_policy, tiny_tokenizer, records, lambda p, r: torch.ones(len(r)))


def test_reference_answers_are_sampled_once_and_scored_by_each_run(tiny_policy, tiny_tokenizer, monkeypatch):
    """Runs on the same reference, prompts and sampling settings (PPO, REINFORCE, their gold oracles) share the
    reference's answers; each scores them with its own reward. Another temperature or other reference weights
    sample again."""
    import copy

    from ru_rlhf.models import generation
    from ru_rlhf.rl import loop

    loop._REFERENCE_ANSWERS.clear()
    calls, real = [], generation.generate_batch
    monkeypatch.setattr(generation, "generate_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    records = list(pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["Первый вопрос?", "Второй вопрос?"]})
                   .itertuples(index=False))
    seen = {}

    def scorer(name, factor):
        def reward_fn(prompts, responses):
            seen[name] = list(responses)
            return torch.tensor([factor * len(r) for r in responses], dtype=torch.float)
        return reward_fn

    first, second = _run(reward_norm="reference", norm_samples=8, max_new_tokens=5), \
        _run(reward_norm="reference", norm_samples=8, max_new_tokens=5)
    first.fit_reward_norm(tiny_policy, tiny_tokenizer, records, scorer("rm", 1.0))
    second.fit_reward_norm(tiny_policy, tiny_tokenizer, records, scorer("gold", 3.0))
    assert len(calls) == 1 and seen["gold"] == seen["rm"]  # sampled once, scored twice
    assert second.norm == pytest.approx((3 * first.norm[0], 3 * first.norm[1]))
    _run(reward_norm="reference", norm_samples=8, max_new_tokens=5, temperature=0.7).fit_reward_norm(
        tiny_policy, tiny_tokenizer, records, scorer("t", 1.0))
    assert len(calls) == 2  # another temperature: other answers
    other = copy.deepcopy(tiny_policy)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    _run(reward_norm="reference", norm_samples=8, max_new_tokens=5).fit_reward_norm(
        other, tiny_tokenizer, records, scorer("w", 1.0))
    assert len(calls) == 3  # another reference: other answers


def test_log_probabilities_are_of_the_tempered_logits():
    logits = torch.tensor([[[2.0, 0.0, 0.0]]])
    ref = torch.tensor([[[0.0, 0.0, 0.0]]])
    logp, _, kl, ref_logp = token_stats(logits, torch.tensor([[0]]), ref, temperature=2.0)
    z = math.exp(1.0) + 2  # softmax of the logits halved: e¹, e⁰, e⁰
    assert logp.item() == pytest.approx(1.0 - math.log(z))
    assert ref_logp.item() == pytest.approx(math.log(1 / 3))  # the reference's, uniform
    assert token_stats(logits, torch.tensor([[0]]))[2:] == (None, None)
    p = torch.tensor([math.e, 1.0, 1.0]) / z
    assert kl.item() == pytest.approx(float((p * (p.log() - math.log(1 / 3))).sum()), rel=1e-5)


def test_dropout_is_switched_off():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3))
    net.config = SimpleNamespace(attention_dropout=0.1)
    disable_dropout(net)
    assert net[1].p == 0.0 and net.config.attention_dropout == 0.0


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.config = SimpleNamespace(hidden_size=4)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None):
        return SimpleNamespace(last_hidden_state=self.emb(input_ids))


def test_the_value_model_starts_as_the_reward_models_scalar():
    from ru_rlhf.models.reward import RewardModel

    torch.manual_seed(0)
    rm = RewardModel(_Backbone(), pooling="last")
    rm.norm_mean = {"helpfulness": 0.5, "truthfulness": -1.0, "harmlessness": 2.0}
    rm.norm_std = {"helpfulness": 2.0, "truthfulness": 0.5, "harmlessness": 1.0}
    rm.weights = {"helpfulness": 0.4, "truthfulness": 0.3, "harmlessness": 0.3}
    critic = Critic.from_reward_model(rm)
    ids, attn = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    values = critic(ids, attn, torch.arange(3).unsqueeze(0))
    with torch.no_grad():
        for t in range(3):  # the reward model's scalar of the sequence that ends at t ("last" pooling)
            expected = rm.scalar(rm(ids[:, : t + 1], attn[:, : t + 1])["scores"])
            assert values[0, t].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    # a copy: training the critic leaves the reward model alone
    assert critic.backbone is not rm.encoder
    assert critic.backbone.emb.weight.data_ptr() != rm.encoder.emb.weight.data_ptr()


def test_a_reward_model_with_other_tokens_cannot_start_the_value_model(tiny_tokenizer):
    from ru_rlhf.rl.runner import make_critic

    class Other:  # a tokenizer with other tokens (a BERT encoder's, say)
        def get_vocab(self):
            return {"a": 0}

        def __len__(self):
            return 1

    other = Other()
    cfg = rl_config("alignment.ppo.train", value_init="reward_model")
    with pytest.raises(ValueError, match="value_init: reward_model"):
        make_critic(cfg, (object(), other), tiny_tokenizer)
    assert make_critic(rl_config("alignment.ppo.train", value_init="zero"), (object(), other), tiny_tokenizer) is None


def test_advantages_are_whitened_per_minibatch(monkeypatch, tiny_policy, tiny_tokenizer):
    """Every minibatch's advantages reach the policy loss with zero mean and unit variance over its tokens."""
    import ru_rlhf.rl.ppo as ppo

    seen = []
    real = ppo.policy_loss

    def spy(logp, old, adv, mask, clip):
        seen.append((float((adv * mask).sum() / mask.sum()), float(((adv * mask) ** 2).sum() / mask.sum())))
        return real(logp, old, adv, mask, clip)

    monkeypatch.setattr(ppo, "policy_loss", spy)
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(8)], "prompt": [f"Вопрос {i}?" for i in range(8)]})
    cfg = rl_config("alignment.ppo.train", steps=1, batch_size=8, minibatch_size=4, ppo_epochs=1, max_new_tokens=4,
                    norm_samples=4, reward_norm="none")
    import copy

    train(tiny_policy, copy.deepcopy(tiny_policy), tiny_tokenizer, prompts,
          lambda p, r: torch.arange(len(r), dtype=torch.float32), cfg, progress=False)
    assert len(seen) == 2
    for mean, second_moment in seen:
        assert mean == pytest.approx(0.0, abs=1e-5) and second_moment == pytest.approx(1.0, rel=1e-3)


def test_per_prompt_normalisation_removes_what_the_prompt_explains(tiny_policy, tiny_tokenizer):
    """reward_norm reference_per_prompt: each score less its prompt's mean over the reference's answers, over the
    spread of the reference's scores around their prompts' means (hand-computed from the same answers)."""
    run = _run(reward_norm="reference_per_prompt", norm_samples=3, max_new_tokens=5, reward_scale=1.0,
               missing_eos_penalty=0.0)
    records = list(pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["Первый?", "Второй вопрос?"]})
                   .itertuples(index=False))
    seen = []

    def reward_fn(prompts, responses):  # the prompt's length dominates, the answer adds a little
        out = [10.0 * len(p) + len(r) for p, r in zip(prompts, responses)]
        seen.extend(zip(prompts, out))
        return torch.tensor(out)

    run.fit_reward_norm(tiny_policy, tiny_tokenizer, records, reward_fn)
    by_prompt = {p: [s for q, s in seen if q == p] for p in ("Первый?", "Второй вопрос?")}
    means = {p: sum(v) / len(v) for p, v in by_prompt.items()}
    resid = [s - means[p] for p, v in by_prompt.items() for s in v]
    spread = math.sqrt(sum(x * x for x in resid) / (len(resid) - 2))  # 2 prompts: 2 means estimated
    assert len(seen) == 6 and run.prompt_mean == pytest.approx({"a": means["Первый?"], "b": means["Второй вопрос?"]})
    shaped = run.shape(torch.tensor([means["Первый?"] + 1.0, means["Второй вопрос?"]]), torch.tensor([True, True]),
                       ["a", "b"])
    assert shaped.tolist() == pytest.approx([1.0 / spread, 0.0], rel=1e-5)


def test_a_reference_normalisation_needs_two_answers():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="norm_samples is 1"):
        rl_config("alignment.ppo.train", reward_norm="reference_per_prompt", norm_samples=1)


def test_the_value_model_is_put_on_the_normalised_rewards_scale():
    """After the reward normalisation is fitted, the value model's first values are the reward model's scalar
    normalised the same way (per prompt: less the mean of the prompts' reference means, over the spread)."""
    from ru_rlhf.models.reward import RewardModel

    torch.manual_seed(1)
    rm = RewardModel(_Backbone(), pooling="last")
    critic = Critic.from_reward_model(rm)
    ids, attn, pos = torch.tensor([[4, 5]]), torch.ones(1, 2, dtype=torch.long), torch.arange(2).unsqueeze(0)
    raw = critic(ids, attn, pos).detach().clone()
    run = _run(reward_norm="reference_per_prompt", reward_scale=2.0)
    run.prompt_mean, run.norm = {"a": 1.0, "b": 3.0}, (0.0, 0.5)
    run.fold_norm_into_critic(critic)
    assert critic(ids, attn, pos)[0].tolist() == pytest.approx(((raw - 2.0) / 0.5 * 2.0)[0].tolist(), rel=1e-5)


def test_the_resume_fingerprint_includes_the_reward():
    """A resume state trained on one reward is not resumed by a run on another: the gold judges, another reward
    model's weights or other head weights all change the fingerprint; the same reward keeps it."""
    from ru_rlhf.models.reward import RewardModel
    from ru_rlhf.rl.loop import _fingerprint
    from ru_rlhf.rl.runner import reward_identity

    torch.manual_seed(0)
    rm = RewardModel(_Backbone(), pooling="last")
    rm.weights = {"helpfulness": 0.4, "truthfulness": 0.3, "harmlessness": 0.3}
    other = RewardModel(_Backbone(), pooling="last")  # other random weights
    other.weights = dict(rm.weights)
    ids = {
        "rm": reward_identity("rm", (rm, None), None),
        "rm again": reward_identity("rm", (rm, None), None),
        "other rm": reward_identity("rm", (other, None), None),
        "other heads": reward_identity("rm", (rm, None), {"helpfulness": 1.0}),
        "gold": reward_identity("gold", (rm, None), None),
    }
    assert ids["rm"] == ids["rm again"]
    assert len({ids[k] for k in ("rm", "other rm", "other heads", "gold")}) == 4
    cfg = rl_config("alignment.ppo.train")
    records = [SimpleNamespace(prompt_id="p1", prompt="x")]
    prints = {k: _fingerprint(cfg, records, "d", rm, None, v) for k, v in ids.items()}
    assert prints["rm"] == prints["rm again"]
    assert len({prints[k] for k in ("rm", "other rm", "other heads", "gold")}) == 4


def test_reinforce_back_propagates_through_the_rollouts_forward_pass(tiny_policy, tiny_tokenizer, monkeypatch):
    """REINFORCE's one gradient step per rollout uses the rollout's own forward pass (its graph kept) instead of
    running it again: one forward pass fewer per step, and the same training: the same log, the same weights."""
    import copy

    from ru_rlhf.rl import reinforce, rollout

    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(8)],
                            "prompt": [f"Вопрос номер {i}: что нового?" for i in range(8)]})

    def reward_fn(ps, responses):
        return torch.tensor([float(len(r)) for r in responses])

    cfg = rl_config("alignment.reinforce.train", steps=4, batch_size=8, learning_rate=1e-3, max_new_tokens=5,
                    seed=0, reward_norm="batch", missing_eos_penalty=0.0)
    forwards = []
    real = rollout.rescore
    monkeypatch.setattr(reinforce, "rescore", lambda *a, **k: forwards.append(1) or real(*a, **k))
    kept, kept_log, _ = train(copy.deepcopy(tiny_policy), copy.deepcopy(tiny_policy), tiny_tokenizer, prompts,
                              reward_fn, cfg, progress=False)
    assert not forwards  # every step used the rollout's pass
    monkeypatch.setattr(reinforce.ReinforceUpdate, "uses_rollout_graph", False)
    again, again_log, _ = train(copy.deepcopy(tiny_policy), copy.deepcopy(tiny_policy), tiny_tokenizer, prompts,
                                reward_fn, cfg, progress=False)
    assert len(forwards) == 4  # one more forward pass per step
    columns = ["reward", "kl", "entropy", "loss", "baseline", "approx_kl"]
    pd.testing.assert_frame_equal(kept_log[columns], again_log[columns], rtol=1e-5, atol=1e-7)
    assert any(float((a - b).abs().max()) > 0 for a, b in zip(kept.parameters(), tiny_policy.parameters()))
    for a, b in zip(kept.parameters(), again.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
