"""Batched generation and log-prob scoring, shared by sft, alignment and evaluation.

Why our own sampling loop rather than ``model.generate``: the candidate grid needs a different
temperature and top-p on every row of one batch, and every row must be seeded on its own so that
a prompt's samples do not depend on which other prompts share its batch. ``generate`` has one
temperature per call and one global random stream. The loop below is the plain one: left
padding, the model's KV cache, per-row temperature / top-p, and inverse-CDF sampling from a
per-row random stream (``torch.Generator`` seeded per row).
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field

import torch
from transformers import StaticCache

log = logging.getLogger(__name__)


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (crc32 of their text): the same on every machine and in every
    process, unlike ``hash()``. Every per-row sampling seed in the project comes from here."""
    return zlib.crc32("|".join(map(str, parts)).encode("utf-8")) & 0x7FFFFFFF


@dataclass
class GenerationStats:
    """What a generation call did: counts and throughput."""

    sequences: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    truncated_prompts: int = 0
    empty_outputs: int = 0
    compactions: int = 0  # times ended rows were dropped from a running batch
    extra: dict = field(default_factory=dict)

    def merge(self, other: GenerationStats) -> None:
        """Add another call's counts to these."""
        self.sequences += other.sequences
        self.new_tokens += other.new_tokens
        self.seconds += other.seconds
        self.truncated_prompts += other.truncated_prompts
        self.empty_outputs += other.empty_outputs
        self.compactions += other.compactions

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def _encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> tuple[list[list[int]], int]:
    """Token ids of each prompt, cut from the left to ``max_prompt_tokens``; also the number cut."""
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    cut = 0
    out = []
    for seq in ids:
        if len(seq) > max_prompt_tokens:
            seq = seq[-max_prompt_tokens:]
            cut += 1
        out.append(seq)
    return out, cut


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
            u: torch.Tensor, top_k_first: int = 128) -> torch.Tensor:
    """One token per row: greedy where temperature is 0, else top-p sampling by inverse CDF at ``u``.

    The nucleus is found among the ``top_k_first`` most likely tokens (a partial sort, much cheaper
    than sorting the whole vocabulary every step); rows whose nucleus is not inside them (their
    top tokens hold less than ``top_p``) are sorted in full, so the result is exact either way.
    """
    greedy = logits.argmax(-1)
    t = temperature.clamp_min(1e-5).unsqueeze(-1)
    probs = torch.softmax(logits.float() / t, dim=-1)
    k = min(top_k_first, probs.shape[-1])
    sorted_p, order = probs.topk(k, dim=-1)
    short = sorted_p.sum(-1) < top_p
    if bool(short.any()):
        full_p, full_order = probs[short].sort(dim=-1, descending=True)
        sorted_p = torch.cat([sorted_p, sorted_p.new_zeros(len(probs), probs.shape[-1] - k)], dim=-1)
        order = torch.cat([order, order.new_zeros(len(probs), probs.shape[-1] - k)], dim=-1)
        sorted_p[short], order[short] = full_p, full_order
    cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < top_p.unsqueeze(-1)  # the smallest prefix whose mass reaches top_p
    sorted_p = sorted_p * keep
    cum = sorted_p.cumsum(-1)
    target = (u * cum[:, -1]).unsqueeze(-1)
    pos = torch.searchsorted(cum, target).clamp_max(cum.shape[-1] - 1).squeeze(-1)
    sampled = order.gather(-1, pos.unsqueeze(-1)).squeeze(-1)
    return torch.where(temperature > 0, sampled, greedy)


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], *, temperatures: list[float], top_ps: list[float],
                   seeds: list[int], max_new_tokens: int = 64, max_prompt_tokens: int | None = None,
                   stats: GenerationStats | None = None, return_ids: bool = False, compact: bool = True):
    """Generate one continuation per row in a single batch (left padding, KV cache).

    Rows with the same prompt share one prefill (the prompt is encoded once and its KV cache
    repeated); ``stats.truncated_prompts`` counts distinct prompts cut to fit the context.

    Args:
        prompts: the model-formatted prompts (see ``ru_rlhf.models.policy.format_prompt``).
        temperatures: per-row temperature; 0 means greedy.
        top_ps: per-row nucleus mass.
        seeds: per-row seed of the row's own random stream.
        max_new_tokens: the longest continuation.
        max_prompt_tokens: prompts are cut from the left to this many tokens (default: the
            model's context minus ``max_new_tokens``); the number cut is counted in ``stats``.
        compact: drop ended rows from the running batch (and their KV cache) once a quarter of
            it has ended, so that later steps compute live rows only; outputs do not change.

    Returns:
        The decoded continuations, without special tokens, stripped; with ``return_ids`` also
        each row's sampled token ids (ending with EOS where the row stopped on it), which RL
        needs to score exactly the tokens it sampled.
    """
    model.eval()
    device = next(model.parameters()).device
    ctx = getattr(model.config, "max_position_embeddings", 1024)
    limit = max_prompt_tokens or max(8, ctx - max_new_tokens)
    # rows that share a prompt share its prefill: encode each distinct prompt once, then repeat
    # its KV cache for every row that samples from it (the candidate grid has 6 rows per prompt)
    unique = list(dict.fromkeys(prompts))
    where = {p: i for i, p in enumerate(unique)}
    expand = torch.tensor([where[p] for p in prompts], dtype=torch.long, device=device)
    enc, cut = _encode_prompts(tokenizer, unique, limit)
    ids, mask = _left_pad(enc, tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    n = len(prompts)
    temperature = torch.tensor(temperatures, dtype=torch.float32, device=device)
    top_p = torch.tensor(top_ps, dtype=torch.float32, device=device)
    # one uniform number per row and step, each row from its own seeded stream
    u = torch.stack([torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(int(s)))
                     for s in seeds]).to(device)
    eos = tokenizer.eos_token_id
    position = (mask.cumsum(-1) - 1).clamp_min(0)
    # the prefill needs the next-token logits of the last position only (not the whole prompt × vocabulary)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
    prompt_len = ids.shape[1]
    # decode into a preallocated (static) cache: a growing cache copies all of itself every step,
    # which costs more than the model itself at a few hundred rows
    cache = StaticCache(config=model.config, max_cache_len=prompt_len + max_new_tokens)
    prefill = torch.arange(prompt_len, device=device)
    for layer, dyn in zip(cache.layers, out.past_key_values.layers):
        layer.update(dyn.keys[expand], dyn.values[expand], cache_kwargs={"cache_position": prefill})
    logits, mask, position = out.logits[expand, -1, :], mask[expand], position[expand]
    next_pos = position[:, -1:] + 1
    generated = torch.full((n, max_new_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)
    compactions = 0
    rows = torch.arange(n, device=device)  # the batch holds only unfinished rows: rows[i] is batch row i's output row
    done = torch.zeros(n, dtype=torch.bool, device=device)
    steps = 0
    for step in range(max_new_tokens):
        tok = _sample(logits, temperature, top_p, u[:, step])
        tok = torch.where(done, torch.full_like(tok, tokenizer.pad_token_id), tok)
        generated[rows, step] = tok
        steps = step + 1
        done |= tok == eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        if compact and int(done.sum()) * 4 >= len(rows):
            # a quarter of the batch has ended: drop those rows (and their cache) so the remaining
            # steps compute only live rows. Not every step: each drop copies the whole cache.
            keep = ~done
            rows, tok, mask, next_pos, done = rows[keep], tok[keep], mask[keep], next_pos[keep], done[keep]
            temperature, top_p, u = temperature[keep], top_p[keep], u[keep]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[keep], layer.values[keep]
                layer.batch_size = len(rows)
            compactions += 1
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=-1)
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=next_pos,
                    past_key_values=cache, use_cache=True,
                    cache_position=torch.tensor([prompt_len + step], device=device))
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    texts, token_ids = [], []
    new_tokens = 0
    for row in generated[:, :steps].tolist():
        ended = eos in row
        if ended:
            row = row[: row.index(eos)]
        row = [t for t in row if t != tokenizer.pad_token_id]
        new_tokens += len(row)
        token_ids.append(row + [eos] if ended else row)
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    if stats is not None:
        stats.sequences += n
        stats.new_tokens += new_tokens
        stats.truncated_prompts += cut
        stats.empty_outputs += sum(1 for t in texts if not t)
        stats.compactions += compactions
    return (texts, token_ids) if return_ids else texts


def generate(model, tokenizer, prompts: list[str], *, temperatures: list[float], top_ps: list[float],
             seeds: list[int], max_new_tokens: int = 64, batch_size: int = 64,
             max_prompt_tokens: int | None = None, progress: bool = True,
             desc: str = "generate") -> tuple[list[str], GenerationStats]:
    """Generate for many prompts in batches of similar length, with a progress bar.

    Rows are sorted by prompt length so that each batch pads little; outputs come back in the
    input order. Per-row seeds make each row's sample independent of its batch-mates.
    """
    from tqdm.auto import tqdm

    stats = GenerationStats()
    lengths = [len(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    results: list[str] = [""] * len(prompts)
    start = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=desc, unit="seq", disable=not progress, mininterval=2.0)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        texts = generate_batch(
            model, tokenizer, [prompts[i] for i in idx], temperatures=[temperatures[i] for i in idx],
            top_ps=[top_ps[i] for i in idx], seeds=[seeds[i] for i in idx], max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens, stats=stats,
        )
        for i, t in zip(idx, texts):
            results[i] = t
        stats.seconds = time.perf_counter() - start
        bar.update(len(idx))
        bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
    bar.close()
    stats.seconds = time.perf_counter() - start
    if stats.truncated_prompts:
        log.warning("%s: %d prompts longer than the context were cut from the left", desc,
                    stats.truncated_prompts)
    return results, stats


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 32,
                      add_eos: bool = True, max_length: int | None = None) -> list[dict]:
    """Sum and count of the log-probabilities of each response's tokens given its prompt.

    Returns:
        One ``{"logprob": float, "tokens": int, "token_logprobs": list[float]}`` per pair; the
        prompt's own tokens are not scored. Used for perplexity, and later for KL and DPO.
    """
    model.eval()
    device = next(model.parameters()).device
    limit = max_length or getattr(model.config, "max_position_embeddings", 1024)
    out: list[dict] = []
    for b in range(0, len(prompts), batch_size):
        seqs, starts = [], []
        for p, r in zip(prompts[b:b + batch_size], responses[b:b + batch_size]):
            p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(r, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
            seq = (p_ids + r_ids)[-limit:]
            seqs.append(seq)
            starts.append(max(1, len(seq) - len(r_ids)))
        ids, mask = _left_pad(seqs, tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        position = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        width = ids.shape[1]
        for i, seq in enumerate(seqs):
            offset = width - len(seq)
            token_lp = logp[i, offset + starts[i] - 1: width - 1].tolist()
            out.append({"logprob": float(sum(token_lp)), "tokens": len(token_lp), "token_logprobs": token_lp})
    return out


@torch.no_grad()
def response_kl(model, ref_model, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 32,
                add_eos: bool = True) -> list[dict]:
    """Per-token KL(π ‖ π_ref) along each response: the exact KL of the two next-token distributions
    at every response position, given the prompt and the response so far.

    Returns:
        One ``{"kl": mean over the response's tokens, "kl_sum": their sum, "tokens": count}`` per pair.
        Prompts are model-formatted; a response is scored with its EOS (``add_eos``).
    """
    model.eval()
    ref_model.eval()
    out: list[dict] = []
    for b in range(0, len(prompts), batch_size):
        seqs, r_lens = [], []
        for p, r in zip(prompts[b:b + batch_size], responses[b:b + batch_size]):
            p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(r, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
            seqs.append(p_ids + r_ids)
            r_lens.append(len(r_ids))
        ids, mask = _left_pad(seqs, tokenizer.pad_token_id)
        position = (mask.cumsum(-1) - 1).clamp_min(0)
        keep = max(r_lens) + 1
        kw = {"input_ids": ids, "attention_mask": mask, "position_ids": position, "logits_to_keep": keep}
        logp = torch.log_softmax(model(**kw).logits[:, -keep:-1].float(), dim=-1)
        ref = torch.log_softmax(ref_model(**kw).logits[:, -keep:-1].float(), dim=-1)
        kl = (logp.exp() * (logp - ref)).sum(-1)  # [batch, keep-1]; position j predicts response token j
        for i, n in enumerate(r_lens):
            vals = kl[i, keep - 1 - n:]
            out.append({"kl": float(vals.mean()) if n else 0.0, "kl_sum": float(vals.sum()), "tokens": n})
    return out
