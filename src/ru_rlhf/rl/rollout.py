"""Rollouts for PPO and REINFORCE: the policy with a value head, sampling a batch of responses and scoring
them (the sampled tokens' log-probabilities under the policy and the frozen reference, the exact per-token KL,
entropy, values and the reward model's score), and the per-token rewards with the KL penalty.

Rollouts are sampled at a temperature with no nucleus cut, and every log-probability (the policy's, the
reference's, the update's) is of the logits divided by that temperature, so the ratios and the KL are those of the
distribution the tokens were drawn from (Huang et al. 2024). KL is measured per token: the exact KL between the policy's and the reference's next-token
distributions at each response position; the per-token reward penalty uses the sampled token's log-ratio, whose
expectation is that KL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ru_rlhf.models.generation import generate_batch, left_pad
from ru_rlhf.models.policy import format_prompt


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout layer's probability to 0 (Huang et al. 2024: with dropout on, the log-probabilities of
    the rollout and of the update differ by noise, and PPO's ratio is no longer 1 at its first minibatch)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if isinstance(getattr(getattr(model, "config", None), name, None), float):
            setattr(model.config, name, 0.0)
    return model


class Critic(nn.Module):
    """A value model of its own: a backbone (``last_hidden_state`` per position) and a scalar head.

    :meth:`from_reward_model` builds it from a reward model that reads the policy's tokens (Huang et al. 2024,
    Ouyang et al. 2022: the value model starts as a copy of the reward model): its backbone copied, its head
    the reward model's scalar (the heads' weighted z-scores) as one linear map, so the first values are the
    reward model's judgement of each prefix.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    @classmethod
    def from_reward_model(cls, reward_model, weights: dict[str, float] | None = None) -> Critic:
        import copy

        rm = reward_model
        if rm.kind != "multi_head":
            raise ValueError(f"a value model is initialised from a multi_head reward model, not {rm.kind!r}")
        w = weights or rm.weights
        k = len(rm.heads)
        scale = torch.tensor([w.get(h, 0.0) / rm.norm_std[h] for h in rm.heads], dtype=rm.head.weight.dtype)
        shift = torch.tensor([rm.norm_mean[h] for h in rm.heads], dtype=rm.head.weight.dtype)
        head = nn.Linear(rm.head.in_features, 1).to(device=rm.head.weight.device, dtype=rm.head.weight.dtype)
        with torch.no_grad():
            head.weight.copy_((scale.to(rm.head.weight.device) @ rm.head.weight[:k]).unsqueeze(0))
            head.bias.copy_((scale.to(rm.head.bias.device) * (rm.head.bias[:k] - shift.to(rm.head.bias.device)))
                            .sum().reshape(1))
        backbone = disable_dropout(copy.deepcopy(rm.encoder))
        for p in backbone.parameters():
            p.requires_grad_(True)
        return cls(backbone, head)

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state
        return self.head(hidden).squeeze(-1)


class PolicyWithValue(nn.Module):
    """A causal LM and its values: a scalar head on the policy's last hidden state (the trunk shared), or a
    :class:`Critic` of its own (``critic``, e.g. initialised from the reward model). Dropout is switched off."""

    def __init__(self, policy, critic: Critic | None = None):
        super().__init__()
        self.policy = disable_dropout(policy)
        self.critic = critic
        first = next(policy.parameters())  # the head lives where the trunk does (CUDA, bf16 on a GPU)
        if critic is None:
            self.value_head = nn.Linear(policy.config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(device=first.device, dtype=first.dtype)
        else:
            self.value_head = None
            critic.to(device=first.device, dtype=first.dtype)

    def forward(self, input_ids, attention_mask, keep: int):
        """Logits and values of the last ``keep`` positions."""
        position = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                          output_hidden_states=self.critic is None, logits_to_keep=keep)
        if self.critic is None:
            values = self.value_head(out.hidden_states[-1][:, -keep:, :]).squeeze(-1)
        else:
            values = self.critic(input_ids, attention_mask, position)[:, -keep:]
        return out.logits[:, -keep:, :], values


def response_logits(model, input_ids, attention_mask, keep: int) -> torch.Tensor:
    position = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                 logits_to_keep=keep).logits[:, -keep:, :]


def token_stats(logits: torch.Tensor, targets: torch.Tensor, ref_logits: torch.Tensor | None = None,
                temperature: float = 1.0):
    """Log-probabilities of ``targets``, the entropy, and (with ``ref_logits``) the exact KL per position and the
    reference's log-probabilities of ``targets``, all of the distributions the tokens were sampled from: the logits
    (the reference's too) divided by ``temperature``. Without ``ref_logits`` the last two are None."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    p = logp_all.exp()
    entropy = -(p * logp_all).sum(-1)
    kl = ref_logp = None
    if ref_logits is not None:
        ref_all = torch.log_softmax(ref_logits.float() / temperature, dim=-1)
        kl = (p * (logp_all - ref_all)).sum(-1)
        ref_logp = ref_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, entropy, kl, ref_logp


@dataclass
class Rollout:
    """One batch of sampled responses and everything PPO and REINFORCE need about them.

    Tensors over the response block are ``[batch, T]``: position t scores response token t of
    the row's right-aligned response (``mask`` marks real tokens).
    """

    prompts: list[str]
    prompt_ids: list[str]
    responses: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    kl: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    extra: dict = field(default_factory=dict)


def build_sequences(tokenizer, prompts: list[str], response_ids: list[list[int]]):
    """Left-padded prompt+response ids; the response block ``[B, T]`` (targets and mask) at the end."""
    p_ids = tokenizer([format_prompt(p) for p in prompts], add_special_tokens=False)["input_ids"]
    seqs = [a + b for a, b in zip(p_ids, response_ids)]
    ids, attn = left_pad(seqs, tokenizer.pad_token_id)
    T = max(1, max(len(r) for r in response_ids))
    targets = ids[:, -T:]
    mask = torch.zeros_like(targets, dtype=torch.float32)
    for i, r in enumerate(response_ids):
        if r:
            mask[i, T - len(r):] = 1.0
    return ids, attn, targets, mask, T


@torch.no_grad()
def make_rollout(model: PolicyWithValue, ref_model, tokenizer, prompts: list[str], prompt_ids: list[str],
                 reward_fn: Callable[[list[str], list[str]], torch.Tensor], *, seeds: list[int],
                 max_new_tokens: int, temperature: float = 1.0, keep_graph: bool = False) -> Rollout:
    """Sample one response per prompt from the policy at ``temperature`` (no nucleus cut) and score it (RM,
    log-probabilities and KL of the tempered distributions, values). ``extra["ended"]`` marks the responses that
    emitted the end-of-sequence token within ``max_new_tokens``.

    ``keep_graph``: the policy's forward pass keeps its autograd graph, and ``extra["logprobs_graph"]`` holds the
    sampled tokens' log-probabilities with it (masked), for an update that takes one gradient step on exactly
    these parameters (REINFORCE): it back-propagates through them instead of running the same forward pass again
    (:func:`rescore`). Every other field is detached and the same as without it.
    """
    texts, resp_ids = generate_batch(model.policy, tokenizer, [format_prompt(p) for p in prompts],
                                     temperatures=[temperature] * len(prompts), top_ps=[1.0] * len(prompts),
                                     seeds=seeds, max_new_tokens=max_new_tokens, return_ids=True)
    ended = torch.tensor([bool(r) and r[-1] == tokenizer.eos_token_id for r in resp_ids])
    resp_ids = [r if r else [tokenizer.eos_token_id] for r in resp_ids]  # an empty response still ends
    ids, attn, targets, mask, T = build_sequences(tokenizer, prompts, resp_ids)
    device = next(model.parameters()).device  # CPU here; CUDA in the hub env on a GPU
    ids, attn, targets, mask = ids.to(device), attn.to(device), targets.to(device), mask.to(device)
    model.eval()
    # logits at position j predict token j+1: the response block's logits start one earlier
    ref_logits = response_logits(ref_model, ids, attn, keep=T + 1)
    with torch.set_grad_enabled(keep_graph):
        logits, values = model(ids, attn, keep=T + 1)
        # the reference's log-softmax once, for the KL and its own log-probabilities
        logp, entropy, kl, ref_logp = token_stats(logits[:, :-1], targets, ref_logits[:, :-1], temperature)
        extra = {"logprobs_graph": logp * mask} if keep_graph else {}
    # the graph stays with logprobs_graph alone: the entropy's and KL's parts of it are released here
    logp, entropy, kl, values = logp.detach(), entropy.detach(), kl.detach(), values.detach()
    scores = reward_fn(prompts, texts).float().to(device)
    return Rollout(prompts, prompt_ids, texts, ids, attn, targets, mask, logp * mask, ref_logp * mask, kl * mask,
                   entropy * mask, values[:, :-1] * mask, scores, extra={**extra, "ended": ended.to(device),
                                                                          "temperature": temperature})


def token_rewards(r: Rollout, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: −β·(log π − log π_ref) everywhere, plus the RM score at the last token."""
    rewards = -kl_coef * (r.logprobs - r.ref_logprobs) * r.mask
    rewards[:, -1] += r.scores  # responses are right-aligned: the last position is every row's last token
    return rewards


def rescore(model: PolicyWithValue, r: Rollout, idx: torch.Tensor):
    """The current model's log-probabilities, entropy and values of the rollout's rows ``idx`` (for an update)."""
    T = r.targets.shape[1]
    logits, values = model(r.input_ids[idx], r.attention_mask[idx], keep=T + 1)
    logp, entropy, _, _ = token_stats(logits[:, :-1], r.targets[idx], temperature=r.extra.get("temperature", 1.0))
    return logp, entropy, values[:, :-1]
