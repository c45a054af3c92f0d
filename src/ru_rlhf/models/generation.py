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
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

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


def _keep_rows_(bufs: tuple[torch.Tensor, ...], index: list[int]) -> None:
    """Keep the rows at ``index`` (ascending) of each buffer, moved down in place to rows
    ``0 .. len(index) - 1`` (buffers may be views, e.g. the filled columns of a cache).

    In place because a fresh buffer per drop costs more in page faults than the copy itself.
    Row ``j`` comes from row ``index[j] >= j``; a block of destination rows is copied at once when
    all its source rows lie past it (``index_select`` must not read what it writes).
    """
    m, j = len(index), 0
    while j < m and index[j] == j:
        j += 1  # rows before the first dropped one stay where they are
    while j < m:
        stop = min(m, index[j])  # rows [j, stop) read from index[j] >= stop onwards: no overlap
        src = torch.tensor(index[j:stop], dtype=torch.long, device=bufs[0].device) - stop
        for b in bufs:
            torch.index_select(b[stop:], 0, src, out=b[j:stop])
        j = stop


class _BufferLayer(DynamicLayer):
    """A KV-cache layer over a preallocated buffer ``[rows, heads, width, head_dim]``.

    Each step writes its keys and values in place and hands attention a view of the filled part
    only. Why not a library cache: ``DynamicLayer`` copies all of itself on every step (``cat``),
    and ``StaticLayer`` zero-fills its whole length up front and attends over all of it, unfilled
    positions included; both cost more than this small model's step in the long tail of a batch.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._bufs, self.length = (keys, values), length
        self._view()

    def _view(self) -> None:
        self.keys = self._bufs[0][:, :, :self.length]
        self.values = self._bufs[1][:, :, :self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        self._bufs[0][:, :, self.length:self.length + n] = key_states
        self._bufs[1][:, :, self.length:self.length + n] = value_states
        self.length += n
        self._view()
        return self.keys, self.values


class _ModelDecoder:
    """Decodes through the model's own ``forward`` (any causal LM): every row has its own copy of
    its prompt's KV cache in ``_BufferLayer`` buffers, and a 4-D additive mask hides the pads.

    All rows step together (one cache position per step), so every row of a call is admitted
    before the first step: ``generate_batch`` gives this decoder no continuous batching."""

    streams = False

    def __init__(self, model, n: int, n_prompts: int, width: int, max_new_tokens: int, slots: int):
        self.model, self.width = model, width
        self.dtype = next(model.parameters()).dtype
        self.min = torch.finfo(self.dtype).min
        self.layers: list[_BufferLayer] = []
        self.cache = DynamicCache(config=model.config)
        device = next(model.parameters()).device
        # prompts' pads are masked; every generated position is attended to (an ended row makes
        # pad tokens that nothing reads)
        self.mask = torch.zeros((n, 1, 1, width + max_new_tokens), dtype=self.dtype, device=device)
        self.n, self.rows, self.max_new_tokens = n, 0, max_new_tokens

    def add_group(self, src: torch.Tensor, slot: torch.Tensor, kv_layers, attn: torch.Tensor) -> None:
        """Lay out one prefill group's KV cache (left-padded to ``width``) for the next
        ``len(src)`` rows; row ``i`` of them samples from the group's prompt ``src[i]``."""
        rows, w = slice(self.rows, self.rows + len(src)), attn.shape[1]
        self.mask[rows, 0, 0, :self.width - w] = self.min
        self.mask[rows, 0, 0, self.width - w:self.width] = torch.where(attn[src] > 0, 0.0, self.min).to(self.dtype)
        for i, layer in enumerate(kv_layers):
            if len(self.layers) <= i:
                k = layer.keys
                shape = (self.n, k.shape[1], self.width + self.max_new_tokens, k.shape[-1])
                self.layers.append(_BufferLayer(k.new_empty(shape), k.new_empty(shape), self.width))
            for buf, new in zip(self.layers[i]._bufs, (layer.keys, layer.values)):
                buf[rows, :, :self.width - w] = 0  # masked, but must be finite
                buf[rows, :, self.width - w:self.width] = new[src]
        self.cache.layers = self.layers
        self.rows += len(src)

    def keep_rows(self, index: list[int], generated: int) -> None:
        """Keep the running rows at ``index`` (the cache as filled so far; ``generated`` is unused here)."""
        for layer in self.layers:
            k, v = layer._bufs
            _keep_rows_((k[:, :, :layer.length], v[:, :, :layer.length]), index)
            layer._bufs = (k[:len(index)], v[:len(index)])
            layer._view()
        self.mask = self.mask[index]
        self.rows = len(index)

    def step(self, tok: torch.Tensor, position: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        cur = self.width + int(column[0])  # the buffer position this step's token is written to
        out = self.model(input_ids=tok.unsqueeze(-1), attention_mask=self.mask[:, :, :, :cur + 1],
                         position_ids=position, past_key_values=self.cache, use_cache=True,
                         cache_position=torch.tensor([cur], device=tok.device))
        return out.logits[:, -1, :]


class _LlamaDecoder:
    """Decodes a ``LlamaForCausalLM`` one token per row with the model's own weights, keeping each
    distinct prompt's KV cache once (shared-prefix attention), with continuous batching.

    Why our own: in the candidate grid 6 rows sample from every prompt, so a per-row cache reads
    each prompt's keys and values 6 times per layer and step, and that reading, not arithmetic,
    bounds attention at a few hundred rows; here the prompt part is read once per prompt (the
    rows of a prompt are its queries) and only the generated part is per row, in one softmax
    over both. At a few rows per step (the tail of every batch) the library's module tree costs
    more in per-call overhead than this small model's arithmetic; this is about 25 tensor
    operations per layer with the query/key/value and gate/up projections fused into one matrix
    product each. Every row keeps its own count of generated tokens, so new prompts' rows join
    the running batch when ended rows leave it (``generate_batch``'s ``max_rows``) and no batch
    ends in a long tail of a few rows. Used only where ``supports`` holds (the default models);
    any other model (GPT-2 from the hub, adapters) decodes with ``_ModelDecoder``. A test checks
    its logits against the model's ``forward``. Weights are read per call, so a policy that
    trains between calls (PPO) is always decoded as it is now.
    """

    streams = True

    @staticmethod
    def supports(model) -> bool:
        cfg = model.config
        return (type(model).__name__ == "LlamaForCausalLM" and cfg.hidden_act == "silu"
                and not getattr(cfg, "attention_bias", False) and not getattr(cfg, "mlp_bias", False)
                and getattr(cfg, "pretraining_tp", 1) == 1 and cfg._attn_implementation in ("sdpa", "eager"))

    def __init__(self, model, n: int, n_prompts: int, width: int, max_new_tokens: int, slots: int):
        from transformers.models.llama.modeling_llama import rotate_half

        cfg, inner = model.config, model.model
        self.rotate_half = rotate_half
        self.embed, self.rotary, self.lm_head = inner.embed_tokens.weight, inner.rotary_emb, model.lm_head.weight
        self.norm, self.eps = inner.norm.weight, cfg.rms_norm_eps
        attn = inner.layers[0].self_attn
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
        # the attention scale is folded into the query projection (rotary embedding is linear)
        self.weights = [(layer.input_layernorm.weight,
                         torch.cat([layer.self_attn.q_proj.weight * attn.scaling, layer.self_attn.k_proj.weight,
                                    layer.self_attn.v_proj.weight]),
                         layer.self_attn.o_proj.weight, layer.post_attention_layernorm.weight,
                         torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
                         layer.mlp.down_proj.weight)
                        for layer in inner.layers]
        w = self.embed
        self.dtype, self.min = w.dtype, torch.finfo(w.dtype).min
        # per layer: prompt keys, prompt values (one row per stored prompt, right-aligned in
        # `width` columns), generated keys and values (one row per running row). Not zero-filled
        # up front (that costs more than many steps): columns are zeroed as attention first
        # reaches them (`_expose`), so that every column read is finite; the masks hide them.
        shape_p = (n_prompts, self.kv_heads, width, self.head_dim)
        shape_g = (n, self.kv_heads, max_new_tokens, self.head_dim)
        self.kv = [(w.new_empty(shape_p), w.new_empty(shape_p), w.new_empty(shape_g), w.new_empty(shape_g))
                   for _ in self.weights]
        self.bias = w.new_full((n_prompts, width), self.min)  # additive: 0 on prompt tokens, dtype-min elsewhere
        # `window`: the last prompt columns read (prompts come shortest first); `span`: the first
        # generated columns that are finite in every row
        self.width, self.window, self.span, self.max_new_tokens = width, 0, 0, max_new_tokens
        self.prompts, self.rows = 0, 0  # stored prompts, running rows
        self.prompt_of = torch.zeros(0, dtype=torch.long, device=w.device)  # each row's prompt
        self.slot = torch.zeros(0, dtype=torch.long, device=w.device)  # each row's place among its prompt's rows
        self.slots = slots

    def _expose(self, window: int, span: int) -> None:
        """Zero the prompt columns that a wider ``window`` reads for the first time (and mask them),
        and the generated columns up to ``span``, in the stored prompts and running rows (rows
        and prompts that join are zeroed over what is read when they join, in ``add_group``)."""
        if window > self.window:
            new = slice(self.width - window, self.width - self.window)
            for kp, vp, _, _ in self.kv:
                kp[:self.prompts, :, new] = 0
                vp[:self.prompts, :, new] = 0
            self.bias[:self.prompts, new] = self.min
            self.window = window
        if span > self.span:
            for _, _, gk, gv in self.kv:
                gk[:self.rows, :, self.span:span] = 0
                gv[:self.rows, :, self.span:span] = 0
            self.span = span

    def _grow(self, prompts: int) -> None:
        """Make room for ``prompts`` stored prompts (rare: only when few ended prompts could be dropped)."""
        have = len(self.bias)
        if prompts <= have:
            return
        more = max(prompts, 2 * have) - have
        pad = lambda t: torch.cat([t, t.new_zeros((more, *t.shape[1:]))])  # noqa: E731
        self.kv = [(pad(kp), pad(vp), gk, gv) for kp, vp, gk, gv in self.kv]
        self.bias = torch.cat([self.bias, self.bias.new_full((more, self.width), self.min)])

    def add_group(self, src: torch.Tensor, slot: torch.Tensor, kv_layers, attn: torch.Tensor) -> None:
        """Store one prefill group's prompt KV cache (``attn.shape[0]`` prompts, left-padded) and
        start its rows: row ``i`` of them samples from the group's prompt ``src[i]``, as its
        prompt's row number ``slot[i]``."""
        k, w = attn.shape
        at, cols = slice(self.prompts, self.prompts + k), slice(self.width - w, self.width)
        self._grow(self.prompts + k)
        self._expose(w, self.span)
        rows = slice(self.rows, self.rows + len(src))
        self.bias[at] = self.min
        self.bias[at, cols] = torch.where(attn > 0, 0.0, self.min).to(self.dtype)
        for (kp, vp, gk, gv), layer in zip(self.kv, kv_layers):
            kp[at, :, self.width - self.window:self.width - w] = 0  # read (masked) while wider prompts run
            vp[at, :, self.width - self.window:self.width - w] = 0
            kp[at, :, cols] = layer.keys
            vp[at, :, cols] = layer.values
            gk[rows, :, :self.span] = 0  # read (masked) while older rows run
            gv[rows, :, :self.span] = 0
        self.prompt_of = torch.cat([self.prompt_of, src + self.prompts])
        self.slot = torch.cat([self.slot, slot])
        self.prompts += k
        self.rows += len(src)

    def keep_rows(self, index: list[int], generated: int) -> None:
        """Keep the running rows at ``index`` (their first ``generated`` generated positions);
        drop stored prompts too once a quarter of them have no row left."""
        for _, _, gk, gv in self.kv:
            _keep_rows_((gk[:self.rows, :, :generated], gv[:self.rows, :, :generated]), index)
        self.prompt_of, self.slot, self.rows = self.prompt_of[index], self.slot[index], len(index)
        live = torch.unique(self.prompt_of)
        if len(live) * 4 <= 3 * self.prompts:
            keep, cols = live.tolist(), slice(self.width - self.window, self.width)
            for kp, vp, _, _ in self.kv:
                _keep_rows_((kp[:self.prompts, :, cols], vp[:self.prompts, :, cols]), keep)
            _keep_rows_((self.bias[:self.prompts, cols],), keep)
            self.prompt_of, self.prompts = torch.searchsorted(live, self.prompt_of), len(keep)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # LlamaRMSNorm: normalised in float32, scaled in the input's dtype
        h = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return weight * h.to(x.dtype)

    def _attend(self, q: torch.Tensor, kp, vp, gk, gv, bias: torch.Tensor) -> torch.Tensor:
        """Attention of ``q`` ``[rows, heads, head_dim]`` (already scaled) over each row's prompt (shared) and its own
        generated tokens, in one softmax with the additive ``bias`` ``[rows, 1, prompt + generated]``;
        returns ``[rows, heads, head_dim]``."""
        rep = self.heads // self.kv_heads
        if rep > 1:  # grouped-query attention: each key/value head serves `rep` query heads
            kp, vp, gk, gv = (t.repeat_interleave(rep, dim=1) for t in (kp, vp, gk, gv))
        p, s, n_p, width = self.prompt_of, self.slot, len(kp), kp.shape[2]
        grouped = q.new_zeros((n_p, self.slots, self.heads, self.head_dim))
        grouped[p, s] = q  # each prompt's rows are its queries
        scores_p = torch.matmul(grouped.transpose(1, 2), kp.transpose(-1, -2))  # [prompts, heads, slots, width]
        scores_p = scores_p.permute(0, 2, 1, 3)[p, s]  # [rows, heads, width]
        scores_g = torch.matmul(q.unsqueeze(2), gk.transpose(-1, -2)).squeeze(2)  # [rows, heads, generated]
        weights = torch.softmax(torch.cat([scores_p, scores_g], dim=-1) + bias, dim=-1)
        w_p, w_g = weights.split([width, gk.shape[2]], dim=-1)
        spread = w_p.new_zeros((n_p, self.slots, self.heads, width))
        spread[p, s] = w_p
        out_p = torch.matmul(spread.transpose(1, 2), vp).permute(0, 2, 1, 3)[p, s]  # [rows, heads, head_dim]
        return out_p + torch.matmul(w_g.unsqueeze(2), gv).squeeze(2)

    def step(self, tok: torch.Tensor, position: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[rows, vocab]`` for tokens ``tok`` ``[rows]`` at ``position`` ``[rows, 1]``,
        each written to its row's generated position ``column`` ``[rows]``."""
        rows, hd = len(tok), self.head_dim
        span = int(column.max()) + 1  # generated positions any row attends to
        self._expose(self.window, span)
        cols = slice(self.width - self.window, self.width)
        # one additive mask for all layers: the row's prompt's pads, and generated positions past the row's own
        later = torch.arange(span, device=tok.device) > column.unsqueeze(-1)
        bias = torch.cat([self.bias[:self.prompts, cols][self.prompt_of],
                          torch.where(later, self.min, 0.0).to(self.dtype)], dim=-1).unsqueeze(1)
        where = torch.arange(rows, device=tok.device)
        x = torch.nn.functional.embedding(tok.unsqueeze(-1), self.embed)
        cos, sin = self.rotary(x, position)
        split = [(self.heads + self.kv_heads) * hd, self.kv_heads * hd]
        cos, sin = cos.view(rows, 1, hd), sin.view(rows, 1, hd)
        for (ln1, qkv, o, ln2, gate_up, down), (kp, vp, gk, gv) in zip(self.weights, self.kv):
            qk, v = torch.nn.functional.linear(self._rms(x, ln1), qkv).split(split, dim=-1)
            # rotary position embedding of the queries and keys together (as apply_rotary_pos_emb)
            qk = qk.view(rows, self.heads + self.kv_heads, hd)
            qk = qk * cos + self.rotate_half(qk) * sin
            gk[where, :, column] = qk[:, self.heads:]
            gv[where, :, column] = v.view(rows, self.kv_heads, hd)
            a = self._attend(qk[:, :self.heads], kp[:self.prompts, :, cols], vp[:self.prompts, :, cols],
                             gk[:rows, :, :span], gv[:rows, :, :span], bias)
            x = x + torch.nn.functional.linear(a.reshape(rows, 1, -1), o)
            g, u = torch.nn.functional.linear(self._rms(x, ln2), gate_up).chunk(2, dim=-1)
            x = x + torch.nn.functional.linear(torch.nn.functional.silu(g) * u, down)
        return torch.nn.functional.linear(self._rms(x, self.norm), self.lm_head)[:, -1]


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
        ids, attn = _left_pad([enc[i] for i in members], pad)
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
                add_eos: bool = True, ref_prompts: list[str] | None = None) -> list[dict]:
    """Per-token KL(π ‖ π_ref) along each response: the exact KL of the two next-token distributions
    at every response position, given the prompt and the response so far.

    ``ref_prompts``: what the reference is given instead of ``prompts`` (a Chain of Hindsight policy is
    conditioned on its prompt and a feedback phrase, the reference on the prompt alone); the response
    tokens are the same for both, so the two are compared position by position from the end.

    Returns:
        One ``{"kl": mean over the response's tokens, "kl_sum": their sum, "tokens": count}`` per pair.
        Prompts are model-formatted; a response is scored with its EOS (``add_eos``).
    """
    model.eval()
    ref_model.eval()
    ref_prompts = prompts if ref_prompts is None else ref_prompts
    device, ref_device = next(model.parameters()).device, next(ref_model.parameters()).device
    out: list[dict] = []

    def batch(texts: list[str], r_ids_list: list[list[int]], to: torch.device) -> dict:
        seqs = [tokenizer(t, add_special_tokens=False)["input_ids"] + r for t, r in zip(texts, r_ids_list)]
        ids, mask = _left_pad(seqs, tokenizer.pad_token_id)
        return {"input_ids": ids.to(to), "attention_mask": mask.to(to),
                "position_ids": (mask.cumsum(-1) - 1).clamp_min(0).to(to)}

    for b in range(0, len(prompts), batch_size):
        r_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
                 for r in responses[b:b + batch_size]]
        r_lens = [len(r) for r in r_ids]
        keep = max(r_lens) + 1
        kw = batch(prompts[b:b + batch_size], r_ids, device)
        ref_kw = kw if ref_prompts is prompts and ref_device == device else \
            batch(ref_prompts[b:b + batch_size], r_ids, ref_device)
        logp = torch.log_softmax(model(**kw, logits_to_keep=keep).logits[:, -keep:-1].float(), dim=-1)
        ref = torch.log_softmax(ref_model(**ref_kw, logits_to_keep=keep).logits[:, -keep:-1].float(), dim=-1)
        ref = ref.to(logp.device)
        kl = (logp.exp() * (logp - ref)).sum(-1)  # [batch, keep-1]; position j predicts response token j
        for i, n in enumerate(r_lens):
            vals = kl[i, keep - 1 - n:]
            out.append({"kl": float(vals.mean()) if n else 0.0, "kl_sum": float(vals.sum()), "tokens": n})
    return out
