"""The batched generation loop: :func:`generate_batch` runs one batch of rows (left padding, one prefill per
distinct prompt, per-row temperature / top-p / seed, ended rows dropped and new ones admitted), and
:func:`generate` runs many prompts through it with a progress bar and throughput counts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from ru_rlhf.models.generation.decoders import _LlamaDecoder, _ModelDecoder
from ru_rlhf.models.generation.sampling import _sample

log = logging.getLogger(__name__)


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


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows padded on the left to one width with ``pad_id``, and their attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], *, temperatures: list[float], top_ps: list[float],
                   seeds: list[int], max_new_tokens: int | list[int] = 64, max_prompt_tokens: int | None = None,
                   stats: GenerationStats | None = None, return_ids: bool = False, compact: bool = True,
                   prefill_chunk: int = 16, fast_decode: bool = True, max_rows: int | None = None,
                   on_rows_done=None):
    """Generate one continuation per row (left padding, KV cache), all rows in one running batch.

    Rows with the same prompt share one prefill (the prompt is encoded once);
    ``stats.truncated_prompts`` counts distinct prompts cut to fit the context.

    Args:
        prompts: the model-formatted prompts (see ``ru_rlhf.models.policy.format_prompt``).
        temperatures: per-row temperature; 0 means greedy.
        top_ps: per-row nucleus mass.
        seeds: per-row seed of the row's own random stream.
        max_new_tokens: the longest continuation, one for all rows or one per row (rows of
            different budgets share the running batch).
        max_prompt_tokens: prompts are cut from the left to this many tokens (default: the
            model's context minus the largest ``max_new_tokens``); the number cut is counted in ``stats``.
        compact: drop ended rows from the running batch (and their KV cache) once a quarter of
            it has ended, so that later steps compute live rows only; outputs do not change.
        prefill_chunk: distinct prompts encoded per prefill call, shortest prompts first, so that
            a batch of mixed lengths is not all padded to its longest prompt.
        fast_decode: decode Llama models with ``_LlamaDecoder`` (shared prompt cache, less
            per-step overhead); False, or any other model, decodes through ``forward``.
        max_rows: with the Llama decoder, the most rows decoded at once (continuous batching):
            the next prefill group's rows join the running batch as soon as they fit, after ended
            rows were dropped. None (or any other decoder): every row runs from the first step.
        on_rows_done: called as rows leave the batch with the number that ended and the new
            tokens generated so far (for a progress bar).

    Returns:
        The decoded continuations, without special tokens, stripped; with ``return_ids`` also
        each row's sampled token ids (ending with EOS where the row stopped on it), which RL
        needs to score exactly the tokens it sampled.
    """
    if not prompts:
        return ([], []) if return_ids else []
    model.eval()
    device = next(model.parameters()).device
    ctx = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 1024)
    n = len(prompts)
    budget_all = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    max_new_tokens = max(budget_all)
    limit = max_prompt_tokens or max(8, ctx - max_new_tokens)
    # rows that share a prompt share its prefill: encode each distinct prompt once
    unique = list(dict.fromkeys(prompts))
    enc, cut = _encode_prompts(tokenizer, unique, limit)
    width = max(len(s) for s in enc)
    where = {p: i for i, p in enumerate(unique)}
    rows_of: dict[int, list[int]] = {}
    for r, p in enumerate(prompts):
        rows_of.setdefault(where[p], []).append(r)
    # distinct prompts by length, prefilled in groups of `prefill_chunk`, shortest first; a group's
    # rows join the running batch together
    by_length = sorted(range(len(unique)), key=lambda i: len(enc[i]))
    groups = [by_length[c:c + prefill_chunk] for c in range(0, len(by_length), prefill_chunk)]
    slots = max(map(len, rows_of.values()))
    fast = fast_decode and _LlamaDecoder.supports(model)
    limit_rows = n if max_rows is None or not fast else min(n, max(max_rows, max(sum(len(rows_of[m]) for m in g)
                                                                                 for g in groups)))
    decoder = (_LlamaDecoder if fast else _ModelDecoder)(
        # room for the prompts of a full batch and two groups more (it grows if ended prompts linger)
        model, limit_rows, min(len(unique), 2 * prefill_chunk + -(-limit_rows // slots)), width, max_new_tokens, slots)
    # one uniform number per row and step, each row from its own seeded stream (as many as its budget)
    stream = torch.Generator()
    u_all = torch.zeros((n, max_new_tokens))
    for i, (s, b) in enumerate(zip(seeds, budget_all)):
        u_all[i, :b] = torch.rand(b, generator=stream.manual_seed(int(s)))
    u_all = u_all.to(device)
    budget_all = torch.tensor(budget_all, dtype=torch.long, device=device)
    temp_all = torch.tensor(temperatures, dtype=torch.float32, device=device)
    top_p_all = torch.tensor(top_ps, dtype=torch.float32, device=device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    # the running batch, in the decoder's row order: output row, sampling settings, uniforms,
    # budget, next position, tokens generated so far, ended; column `max_new_tokens` of `generated` takes
    # what ended rows still produce until they are dropped
    rows = torch.zeros(0, dtype=torch.long, device=device)
    temperature, top_p = temp_all[:0], top_p_all[:0]
    u, budget = u_all[:0], budget_all[:0]
    next_pos = torch.zeros((0, 1), dtype=torch.long, device=device)
    count = torch.zeros(0, dtype=torch.long, device=device)
    done = torch.zeros(0, dtype=torch.bool, device=device)
    logits = None
    # -1: a column the row never sampled (a row that ended, or a shorter budget). Not the pad id: many hub
    # tokenizers pad with their EOS, and an unsampled column would then read as an EOS the row never made
    generated = torch.full((n, max_new_tokens + 1), -1, dtype=torch.long, device=device)
    compactions, made, pending = 0, 0, list(reversed(groups))

    def admit(members: list[int]) -> None:
        nonlocal rows, temperature, top_p, u, budget, next_pos, count, done, logits
        ids, attn = left_pad([enc[i] for i in members], pad)
        ids, attn = ids.to(device), attn.to(device)
        position = (attn.cumsum(-1) - 1).clamp_min(0)
        # next-token logits of the last position only (not the whole prompt × vocabulary)
        out = model(input_ids=ids, attention_mask=attn, position_ids=position, use_cache=True, logits_to_keep=1)
        new = torch.tensor([r for m in members for r in rows_of[m]], dtype=torch.long, device=device)
        src = torch.tensor([j for j, m in enumerate(members) for _ in rows_of[m]], dtype=torch.long, device=device)
        slot = torch.tensor([j for m in members for j in range(len(rows_of[m]))], dtype=torch.long, device=device)
        decoder.add_group(src, slot, out.past_key_values.layers, attn)
        first = out.logits[src, -1, :]
        logits = first if logits is None else torch.cat([logits, first])
        rows = torch.cat([rows, new])
        temperature, top_p, u = torch.cat([temperature, temp_all[new]]), torch.cat([top_p, top_p_all[new]]), \
            torch.cat([u, u_all[new]])
        budget = torch.cat([budget, budget_all[new]])
        next_pos = torch.cat([next_pos, torch.tensor([[len(enc[members[j]])] for j in src.tolist()],
                                                     dtype=torch.long, device=device)])
        count = torch.cat([count, torch.zeros(len(new), dtype=torch.long, device=device)])
        done = torch.cat([done, torch.zeros(len(new), dtype=torch.bool, device=device)])

    def fits(group: list[int]) -> bool:
        return not len(rows) or len(rows) + sum(len(rows_of[m]) for m in group) <= limit_rows

    while True:
        if not decoder.streams and not len(rows):  # every row from the first step
            while pending:
                admit(pending.pop())
        while decoder.streams and pending and fits(pending[-1]):
            admit(pending.pop())
        column = count.clamp_max(max_new_tokens - 1)
        tok = _sample(logits, temperature, top_p, u.gather(1, column.unsqueeze(-1)).squeeze(-1))
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        generated[rows, torch.where(done, max_new_tokens, count)] = tok
        if on_rows_done is not None:
            made += int(((tok != eos) & ~done).sum())
        count = count + 1
        done = done | (tok == eos) | (count >= budget)
        ended = int(done.sum())
        if ended == len(rows) or (compact and ended * 4 >= len(rows)):
            # a quarter of the batch has ended (or all of it): drop those rows (and their cache),
            # so the next steps compute live rows only and the next group's rows fit in. Not every
            # step: each drop copies the cache.
            keep = (~done).nonzero().squeeze(-1)
            rows, tok, next_pos, count, done = rows[keep], tok[keep], next_pos[keep], count[keep], done[keep]
            temperature, top_p, u, budget, column = temperature[keep], top_p[keep], u[keep], budget[keep], column[keep]
            if on_rows_done is not None:
                on_rows_done(ended, made)
            if not len(keep):
                if not pending:
                    break
                logits = None
                decoder.keep_rows([], 0)
                continue
            decoder.keep_rows(keep.tolist(), int(count.max()))
            compactions += 1
        logits = decoder.step(tok, next_pos, column)
        next_pos = next_pos + 1
    token_ids, kept = [], []
    for row in generated[:, :max_new_tokens].tolist():
        ended = eos in row
        if ended:
            row = row[: row.index(eos)]
        row = [t for t in row if t != pad and t >= 0]
        kept.append(row)
        token_ids.append(row + [eos] if ended else row)
    new_tokens = sum(map(len, kept))
    texts = [t.strip() for t in tokenizer.batch_decode(kept, skip_special_tokens=True)]
    if stats is not None:
        stats.sequences += n
        stats.new_tokens += new_tokens
        stats.truncated_prompts += cut
        stats.empty_outputs += sum(1 for t in texts if not t)
        stats.compactions += compactions
    return (texts, token_ids) if return_ids else texts


def generate(model, tokenizer, prompts: list[str], *, temperatures: list[float], top_ps: list[float],
             seeds: list[int], max_new_tokens: int | list[int] = 64, batch_size: int = 64,
             max_prompt_tokens: int | None = None, progress: bool = True,
             desc: str = "generate") -> tuple[list[str], GenerationStats]:
    """Generate for many prompts, at most ``batch_size`` rows at once, with a progress bar.

    With the Llama decoder all rows go through one continuously batched call (shortest prompts
    first; ended rows make room for new ones); any other model runs batches of ``batch_size``
    rows of similar prompt length. Outputs come back in the input order. Per-row seeds make each
    row's sample independent of its batch-mates.
    """
    from tqdm.auto import tqdm

    stats = GenerationStats()
    start = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=desc, unit="seq", disable=not progress, mininterval=2.0)

    def advance(k: int, tokens: int) -> None:
        bar.update(k)
        bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.0f}", refresh=False)

    kw = dict(max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens, stats=stats)
    if _LlamaDecoder.supports(model):
        results = generate_batch(model, tokenizer, prompts, temperatures=temperatures, top_ps=top_ps, seeds=seeds,
                                 max_rows=batch_size, on_rows_done=advance, **kw)
    else:
        lengths = [len(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        results: list[str] = [""] * len(prompts)
        budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else max_new_tokens
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            texts = generate_batch(
                model, tokenizer, [prompts[i] for i in idx], temperatures=[temperatures[i] for i in idx],
                top_ps=[top_ps[i] for i in idx], seeds=[seeds[i] for i in idx],
                **{**kw, "max_new_tokens": [budgets[i] for i in idx]})
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
