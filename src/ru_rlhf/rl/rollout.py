"""Rollouts for PPO and REINFORCE: the policy with a value head, sampling a batch of responses and scoring
them (the sampled tokens' log-probabilities under the policy and the frozen reference, the exact per-token KL,
entropy, values and the reward model's score), and the per-token rewards with the KL penalty.

Rollouts are sampled at temperature 1 with no nucleus cut, so the sampled tokens' log-probabilities are the
policy's own. KL is measured per token: the exact KL between the policy's and the reference's next-token
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


class PolicyWithValue(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state (the trunk is shared)."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        first = next(policy.parameters())  # the head lives where the trunk does (CUDA, bf16 on a GPU)
        self.value_head.to(device=first.device, dtype=first.dtype)

    def forward(self, input_ids, attention_mask, keep: int):
        """Logits and values of the last ``keep`` positions."""
        position = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                          output_hidden_states=True, logits_to_keep=keep)
        hidden = out.hidden_states[-1][:, -keep:, :]
        return out.logits[:, -keep:, :], self.value_head(hidden).squeeze(-1)


def response_logits(model, input_ids, attention_mask, keep: int) -> torch.Tensor:
    position = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                 logits_to_keep=keep).logits[:, -keep:, :]


def token_stats(logits: torch.Tensor, targets: torch.Tensor, ref_logits: torch.Tensor | None = None):
    """Log-probabilities of ``targets``, the entropy, and (with ``ref_logits``) the exact KL per position."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    p = logp_all.exp()
    entropy = -(p * logp_all).sum(-1)
    kl = None
    if ref_logits is not None:
        ref_all = torch.log_softmax(ref_logits.float(), dim=-1)
        kl = (p * (logp_all - ref_all)).sum(-1)
    return logp, entropy, kl


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
                 max_new_tokens: int) -> Rollout:
    """Sample one response per prompt from the policy and score it (RM, log-probs, KL, values)."""
    texts, resp_ids = generate_batch(model.policy, tokenizer, [format_prompt(p) for p in prompts],
                                     temperatures=[1.0] * len(prompts), top_ps=[1.0] * len(prompts), seeds=seeds,
                                     max_new_tokens=max_new_tokens, return_ids=True)
    resp_ids = [r if r else [tokenizer.eos_token_id] for r in resp_ids]  # an empty response still ends
    ids, attn, targets, mask, T = build_sequences(tokenizer, prompts, resp_ids)
    device = next(model.parameters()).device  # CPU here; CUDA in the hub env on a GPU
    ids, attn, targets, mask = ids.to(device), attn.to(device), targets.to(device), mask.to(device)
    model.eval()
    # logits at position j predict token j+1: the response block's logits start one earlier
    logits, values = model(ids, attn, keep=T + 1)
    ref_logits = response_logits(ref_model, ids, attn, keep=T + 1)
    logp, entropy, kl = token_stats(logits[:, :-1], targets, ref_logits[:, :-1])
    ref_logp, _, _ = token_stats(ref_logits[:, :-1], targets)
    scores = reward_fn(prompts, texts).float().to(device)
    return Rollout(prompts, prompt_ids, texts, ids, attn, targets, mask, logp * mask, ref_logp * mask, kl * mask,
                   entropy * mask, values[:, :-1] * mask, scores)


def token_rewards(r: Rollout, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: −β·(log π − log π_ref) everywhere, plus the RM score at the last token."""
    rewards = -kl_coef * (r.logprobs - r.ref_logprobs) * r.mask
    rewards[:, -1] += r.scores  # responses are right-aligned: the last position is every row's last token
    return rewards


def rescore(model: PolicyWithValue, r: Rollout, idx: torch.Tensor):
    """The current model's log-probabilities, entropy and values of the rollout's rows ``idx`` (for an update)."""
    T = r.targets.shape[1]
    logits, values = model(r.input_ids[idx], r.attention_mask[idx], keep=T + 1)
    logp, entropy, _ = token_stats(logits[:, :-1], r.targets[idx])
    return logp, entropy, values[:, :-1]
