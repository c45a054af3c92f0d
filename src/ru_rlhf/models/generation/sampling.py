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


def _whole_pick(sorted_p: torch.Tensor, order: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw over the whole distribution (no nucleus cut) at ``target`` (u times the row's total mass),
    from its most likely tokens ``sorted_p`` (descending): the token, and whether the draw fell inside them
    (else the row needs more of its tokens)."""
    cum = sorted_p.cumsum(-1)
    inside = target <= cum[:, -1]
    pos = torch.searchsorted(cum, target.unsqueeze(-1)).clamp_max(cum.shape[-1] - 1)
    return order.gather(-1, pos).squeeze(-1), inside


def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
            u: torch.Tensor, top_k_first: int = 32) -> torch.Tensor:
    """One token per row: greedy where temperature is 0, else top-p sampling by inverse CDF at ``u``
    over the tokens in descending order of probability.

    The nucleus is looked for among the ``top_k_first`` most likely tokens (a partial sort, much
    cheaper than sorting the whole vocabulary every step), then among 16 and 64 times as many
    for the rows whose nucleus is not inside them (their top tokens hold less than ``top_p``),
    and only the rows still short are sorted in full, so the result is exact either way.

    Rows with ``top_p >= 1`` (no nucleus cut: the RL rollouts, best-of-n) draw at ``u`` times their
    total mass, so the draw is found among the top tokens whenever it falls inside their mass (the
    nucleus test above can never pass for them: it made every such row sort the whole vocabulary on
    every step: 67 to 73 ms a step for 128 rows of 8 000 tokens, against 4 ms now); the
    rows whose draw falls further out take the same wider steps.
    """
    greedy = temperature <= 0
    if bool(greedy.all()):  # the probes' greedy answers: nothing to draw
        return logits.argmax(-1)
    t = temperature.clamp_min(1e-5).unsqueeze(-1)
    probs = torch.softmax(logits.float() / t, dim=-1)
    vocab = probs.shape[-1]
    whole = top_p >= 1.0
    n_whole = int(whole.sum())
    mixed = 0 < n_whole < len(whole)
    target = u * probs.sum(-1) if n_whole else None  # the draw's place in a whole row's mass

    def pick(sorted_p: torch.Tensor, order: torch.Tensor, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """The draw of ``rows`` from their top tokens, and which of them need more tokens. Only the kinds of row
        present are computed: computing both for every row made a nucleus step 10 to 20 % slower."""
        if n_whole:
            picked, inside = _whole_pick(sorted_p, order, target[rows])
            if not mixed:
                return picked, ~inside
        nucleus = _nucleus_pick(sorted_p, order, top_p[rows], u[rows])
        short = sorted_p.sum(-1) < top_p[rows]
        if not mixed:
            return nucleus, short
        w = whole[rows]
        return torch.where(w, picked, nucleus), torch.where(w, ~inside, short)

    sorted_p, order = probs.topk(min(top_k_first, vocab), dim=-1)
    sampled, more = pick(sorted_p, order, slice(None))
    short = more.nonzero().squeeze(-1)
    for k in (top_k_first * 16, top_k_first * 64, vocab):
        if not len(short) or k <= sorted_p.shape[-1]:
            continue
        sorted_p, order = probs[short].topk(k, dim=-1) if k < vocab else probs[short].sort(dim=-1, descending=True)
        sampled[short], more = pick(sorted_p, order, short)
        if k == vocab:  # sorted in full: whatever rounding left, the draw is this row's
            break
        short = short[more]
    if bool(greedy.any()):
        sampled = torch.where(greedy, logits.argmax(-1), sampled)
    return sampled
