"""The decoders behind :func:`ru_rlhf.models.generation.generate_batch`: one step of the running batch each,
with its KV cache. ``_ModelDecoder`` steps any causal LM through its own ``forward`` (a preallocated per-row
cache); ``_LlamaDecoder`` steps a ``LlamaForCausalLM`` with its weights directly (each prompt's cache kept once,
continuous batching)."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


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
