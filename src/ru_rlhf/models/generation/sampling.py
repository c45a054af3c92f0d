"""Sampling one token per row: greedy where the temperature is 0, else top-p by inverse CDF at a uniform number
drawn from the row's own seeded stream (:func:`stable_seed` gives every per-row seed in the project)."""

from __future__ import annotations

import zlib

import torch


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (crc32 of their text): the same on every machine and in every
    process, unlike ``hash()``. Every per-row sampling seed in the project comes from here."""
    return zlib.crc32("|".join(map(str, parts)).encode("utf-8")) & 0x7FFFFFFF


def _nucleus_pick(sorted_p: torch.Tensor, order: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw at ``u`` from the smallest prefix of ``sorted_p`` (descending) whose mass reaches top_p."""
    cum = sorted_p.cumsum(-1)
    sorted_p = sorted_p * ((cum - sorted_p) < top_p.unsqueeze(-1))
    cum = sorted_p.cumsum(-1)
    target = (u * cum[:, -1]).unsqueeze(-1)
    pos = torch.searchsorted(cum, target).clamp_max(cum.shape[-1] - 1)
    return order.gather(-1, pos).squeeze(-1)


def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
            u: torch.Tensor, top_k_first: int = 32) -> torch.Tensor:
    """One token per row: greedy where temperature is 0, else top-p sampling by inverse CDF at ``u``.

    The nucleus is looked for among the ``top_k_first`` most likely tokens (a partial sort, much
    cheaper than sorting the whole vocabulary every step), then among 16 and 64 times as many
    for the rows whose nucleus is not inside them (their top tokens hold less than ``top_p``),
    and only the rows still short are sorted in full, so the result is exact either way.
    """
    t = temperature.clamp_min(1e-5).unsqueeze(-1)
    probs = torch.softmax(logits.float() / t, dim=-1)
    vocab = probs.shape[-1]
    sorted_p, order = probs.topk(min(top_k_first, vocab), dim=-1)
    sampled = _nucleus_pick(sorted_p, order, top_p, u)
    short = (sorted_p.sum(-1) < top_p).nonzero().squeeze(-1)
    for k in (top_k_first * 16, top_k_first * 64, vocab):
        if not len(short) or k <= sorted_p.shape[-1]:
            continue
        sorted_p, order = probs[short].topk(k, dim=-1) if k < vocab else probs[short].sort(dim=-1, descending=True)
        sampled[short] = _nucleus_pick(sorted_p, order, top_p[short], u[short])
        short = short[sorted_p.sum(-1) < top_p[short]]
    greedy = temperature <= 0
    if bool(greedy.any()):
        sampled = torch.where(greedy, logits.argmax(-1), sampled)
    return sampled
