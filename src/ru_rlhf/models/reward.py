"""Reward models: an encoder with a multi-head (H, T, S) or a distributional head.

* ``multi_head``: a linear head with one output per criterion, trained with a Bradley–Terry
  loss per criterion on that criterion's pairs (the other heads masked).
* ``distributional``: per criterion a softmax over ``n_bins`` rating bins, trained on
  −log P(chosen ≻ rejected) with P = Σ_{i>j} p_chosen[i]·p_rejected[j] (the HelpSteer2
  notebook's loss); the head's reward is the expected bin.

Both expose the per-head scores and the scalar reward, a weighted sum of the heads whose
weights are a parameter (the trade-off knob). The heads are z-scored before they are weighted
(mean and spread fitted on training responses, :func:`fit_normalisation`): trained apart, the
heads end up on different scales (harmlessness spread 3.4 against 0.9 on the base run), and an
unnormalised sum is then the loudest head, whatever the weights say. Saved as the encoder's ``save_pretrained``
(safetensors) plus ``head.safetensors`` and ``reward_config.json`` (head names, weights, kind).
The training loop is our own (TRL's RewardTrainer has one scalar head and no masking per
criterion); it is plain PyTorch with a progress bar, a loss table and checkpoints, and under
``accelerate launch`` (``WORLD_SIZE > 1``) it runs DDP through ``accelerate.Accelerator``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ru_rlhf.parallel import accelerator
from ru_rlhf.vocabulary import HEADS

log = logging.getLogger(__name__)


class RewardModel(nn.Module):
    """A backbone, pooled, with a linear head (``multi_head`` or ``distributional``).

    The backbone is either an encoder (BERT) or the SFT policy's own transformer without its LM head
    (``LlamaModel``, GPT-2's ``transformer``...): anything whose forward returns ``last_hidden_state``.
    ``pooling``: ``mean`` over real tokens; ``last``, the last real token (for a causal backbone the
    only state that has seen the whole prompt and response; :func:`encode` ends a causal backbone's
    sequence with its end-of-sequence token, so that state is always the same token's); or ``response``,
    the mean over the response's own tokens (and the end token): with a causal backbone the prompt's states
    are the same for both answers of a pair, and each response token's state can say whether it was read
    in the source, so the score becomes a per-token sum the way the truthfulness and helpfulness judgements are.
    ``max_length``: the window the model was trained with; :func:`score` uses it by default.
    """

    def __init__(self, encoder, heads: tuple[str, ...] = HEADS, kind: str = "multi_head", n_bins: int = 10,
                 weights: dict[str, float] | None = None, pooling: str = "mean", max_length: int = 256,
                 bias_head: bool = False, match_feature: bool = False):
        super().__init__()
        if kind not in ("multi_head", "distributional"):
            raise ValueError(f"unknown reward model kind {kind!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r} (one of {POOLINGS})")
        encoder = backbone_of(encoder)
        self.encoder, self.heads, self.kind, self.n_bins = encoder, tuple(heads), kind, n_bins
        self.pooling, self.max_length = pooling, int(max_length)
        self.prefix_sharing = True  # a run-time switch, not saved (see shares_prefix)
        self.weights = dict(weights or {h: 1 / len(heads) for h in heads})
        self.norm_mean = {h: 0.0 for h in self.heads}  # per-head centre and spread for the scalar
        self.norm_std = {h: 1.0 for h in self.heads}
        if bias_head and kind != "multi_head":
            raise ValueError("a bias head is built for the multi_head kind only")
        self.bias_head = bool(bias_head)  # one more output, trained jointly, never part of the scalar
        width = len(heads) * (n_bins if kind == "distributional" else 1) + int(self.bias_head)
        self.head = nn.Linear(encoder.config.hidden_size, width)
        # the exact-match feature of reading-comprehension models (DrQA, Chen et al. 2017): a learned vector added
        # to the input embedding of each response token that also occurs in the prompt; zero at the start, so
        # the backbone first sees exactly the inputs it was trained on
        self.match_feature = bool(match_feature)
        self.match = nn.Embedding(2, encoder.config.hidden_size) if self.match_feature else None
        if self.match is not None:
            nn.init.zeros_(self.match.weight)
        # the new layers live where the backbone does (CUDA and bf16 for a hub policy on a GPU)
        first = next(encoder.parameters())
        self.head.to(device=first.device, dtype=first.dtype)
        if self.match is not None:
            self.match.to(device=first.device, dtype=first.dtype)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               response_mask: torch.Tensor | None = None, match: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled last hidden states: mean over real tokens, the last real token, or (``response``) mean
        over the response's tokens (``response_mask``; without it, over every real token). ``match``: 1 on
        response tokens that occur in the prompt (:func:`encode`), used when the model has the feature."""
        # positions count real tokens only, so a left-padded row reads as it would alone (RoPE does not care,
        # a backbone with absolute positions such as GPT-2 does)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        if self.match is not None and match is not None:
            embeds = self.encoder.get_input_embeddings()(input_ids) + self.match(match)
            hidden = self.encoder(inputs_embeds=embeds, attention_mask=attention_mask,
                                  position_ids=positions).last_hidden_state
        else:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=positions).last_hidden_state
        if self.pooling == "response" and response_mask is not None:
            attention_mask = response_mask
        if self.pooling == "last":  # works for left and right padding alike
            pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (attention_mask.to(torch.long) * pos).argmax(-1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    @property
    def shares_prefix(self) -> bool:
        """Whether training and :func:`score` use :meth:`pooled_shared`, which gives what :meth:`pooled` gives for a
        causal backbone (a prompt's states do not depend on the answer after it) pooled over the answer's own tokens
        (``response`` or ``last``); ``prefix_sharing = False`` turns it off (:func:`train_reward_model`'s
        ``shared_prefix``)."""
        return (self.prefix_sharing and self.encoder.config.model_type in CAUSAL_BACKBONES
                and self.pooling in ("response", "last"))

    def pooled_shared(self, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, suffix_ids: torch.Tensor,
                      suffix_mask: torch.Tensor, prefix_of: torch.Tensor,
                      suffix_match: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`pooled` of sequences that share prompts, each prompt run through the backbone once
        (:func:`encode_shared`): the distinct prompts (``prefix_ids``, left-padded), then every answer (``suffix_ids``,
        right-padded, row ``i`` after prompt ``prefix_of[i]``) over its prompt's keys and values. The same states as
        the whole sequences, for :attr:`shares_prefix` models (a test checks the values and the gradients); a pair
        of answers to one prompt then costs its prompt once instead of twice.

        Why our own: transformers shares a prefix's cache only for generation; here the prompt's pass keeps its graph,
        so the answers' gradients reach the prompt's states as they do through whole sequences."""
        emb = self.encoder.get_input_embeddings()
        p_embeds = emb(prefix_ids)
        s_embeds = emb(suffix_ids)
        if self.match is not None:  # :meth:`pooled` adds the feature's 0 vector to every prompt token
            p_embeds = p_embeds + self.match.weight[0]
            s_embeds = s_embeds + self.match(suffix_match if suffix_match is not None else torch.zeros_like(suffix_ids))
        p_positions = (prefix_mask.long().cumsum(-1) - 1).clamp_min(0)
        out = self.encoder(inputs_embeds=p_embeds, attention_mask=prefix_mask, position_ids=p_positions, use_cache=True)
        cache = out.past_key_values
        for layer in cache.layers:  # each answer's rows of its prompt's keys and values (the graph kept)
            layer.keys, layer.values = layer.keys[prefix_of], layer.values[prefix_of]
        lengths = prefix_mask.long().sum(-1)[prefix_of]
        s_positions = lengths.unsqueeze(-1) + torch.arange(suffix_ids.shape[1], device=suffix_ids.device)
        mask = torch.cat([prefix_mask[prefix_of], suffix_mask], dim=-1)
        hidden = self.encoder(inputs_embeds=s_embeds, attention_mask=mask, position_ids=s_positions,
                              past_key_values=cache, use_cache=True).last_hidden_state
        if self.pooling == "last":
            pos = torch.arange(suffix_mask.shape[1], device=suffix_mask.device)
            last = (suffix_mask.to(torch.long) * pos).argmax(-1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        m = suffix_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                response_mask: torch.Tensor | None = None, match: torch.Tensor | None = None,
                shared: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``scores``: [batch, heads]; for the distributional kind also ``probs``: [batch, heads, bins]; with a
        bias head also ``bias``: [batch]. ``shared``: :func:`encode_shared`'s tensors instead of the whole
        sequences (:meth:`pooled_shared`)."""
        pooled = (self.pooled_shared(**shared) if shared is not None
                  else self.pooled(input_ids, attention_mask, response_mask, match))
        out = self.head(pooled)
        if self.kind == "multi_head":
            return {"scores": out[:, :-1], "bias": out[:, -1]} if self.bias_head else {"scores": out}
        probs = out.view(out.shape[0], len(self.heads), self.n_bins).softmax(-1)
        bins = torch.arange(1, self.n_bins + 1, dtype=probs.dtype, device=probs.device)
        return {"scores": (probs * bins).sum(-1), "probs": probs}

    def scalar(self, scores: torch.Tensor, weights: dict[str, float] | None = None) -> torch.Tensor:
        """The weighted sum of the z-scored head scores (weights default to the model's own)."""
        w = weights or self.weights
        vec = torch.tensor([w.get(h, 0.0) for h in self.heads], dtype=scores.dtype, device=scores.device)
        mean = torch.tensor([self.norm_mean[h] for h in self.heads], dtype=scores.dtype, device=scores.device)
        std = torch.tensor([self.norm_std[h] for h in self.heads], dtype=scores.dtype, device=scores.device)
        return ((scores - mean) / std) @ vec

    def save_pretrained(self, path: str | Path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path / "encoder")
        if tokenizer is not None:
            tokenizer.save_pretrained(path / "encoder")
        tensors = {k: v.contiguous() for k, v in self.head.state_dict().items()}
        if self.match is not None:
            tensors["match.weight"] = self.match.weight.detach().contiguous()
        save_file(tensors, str(path / "head.safetensors"))
        (path / "reward_config.json").write_text(json.dumps(
            {"kind": self.kind, "heads": list(self.heads), "weights": self.weights, "n_bins": self.n_bins,
             "norm_mean": self.norm_mean, "norm_std": self.norm_std, "pooling": self.pooling,
             "max_length": self.max_length, "backbone": self.encoder.config.model_type,
             "bias_head": self.bias_head, "match_feature": self.match_feature}, indent=2), encoding="utf-8")


POOLINGS = ("mean", "last", "response")
# causal backbones (a position sees only those before it), whose prompt states :meth:`RewardModel.pooled_shared` may
# compute once for several answers: the default policy's and the local models' (Qwen2, GPT-2), each checked against
# whole sequences; any other backbone scores whole sequences
CAUSAL_BACKBONES = ("llama", "qwen2", "gpt2")


def backbone_of(model):
    """The transformer inside a model with an LM or MLM head (``LlamaForCausalLM.model``,
    ``GPT2LMHeadModel.transformer``, ``BertForMaskedLM.bert``), or the model itself."""
    base = getattr(model, "base_model", None)
    return base if base is not None and base is not model else model


def load_reward_model(path: str | Path, device: str | None = None,
                      dtype: str | None = None) -> tuple[RewardModel, object]:
    """Load a saved reward model and its tokenizer (safetensors only); ``device`` and ``dtype`` as for
    :func:`ru_rlhf.models.encoder.load_encoder` (the heads follow the backbone)."""
    from safetensors.torch import load_file

    from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer
    from ru_rlhf.models.policy import ModelLoadError

    path = Path(path)
    if not (path / "reward_config.json").exists() or not (path / "head.safetensors").exists():
        raise ModelLoadError(f"{path}: not a saved reward model (needs reward_config.json and head.safetensors)")
    cfg = json.loads((path / "reward_config.json").read_text(encoding="utf-8"))
    rm = RewardModel(load_encoder(path / "encoder", device=device, dtype=dtype), tuple(cfg["heads"]), cfg["kind"], cfg["n_bins"], cfg["weights"],
                     pooling=cfg.get("pooling", "mean"), max_length=cfg.get("max_length", 256),
                     bias_head=cfg.get("bias_head", False), match_feature=cfg.get("match_feature", False))
    tensors = load_file(str(path / "head.safetensors"))
    if rm.match is not None:
        rm.match.weight.data.copy_(tensors.pop("match.weight"))
    rm.head.load_state_dict(tensors)
    rm.norm_mean.update(cfg.get("norm_mean", {}))
    rm.norm_std.update(cfg.get("norm_std", {}))
    return rm.eval(), load_encoder_tokenizer(path / "encoder")


# --------------------------------------------------------------------------- losses
def bradley_terry_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor, head_index: torch.Tensor,
                       balanced: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
    """−log σ(r_c(chosen) − r_c(rejected)), each pair on its own criterion's head c (others masked).

    ``balanced``: the mean over the criteria in the batch of each criterion's mean loss (:func:`balanced_mean`);
    ``weights`` (one per pair, e.g. :func:`criterion_weights`): the weighted mean instead."""
    idx = head_index.unsqueeze(-1)
    diff = s_chosen.gather(-1, idx).squeeze(-1) - s_rejected.gather(-1, idx).squeeze(-1)
    return _reduce(-F.logsigmoid(diff), head_index, balanced, weights)


def _reduce(per_pair: torch.Tensor, head_index: torch.Tensor, balanced: bool,
            weights: torch.Tensor | None) -> torch.Tensor:
    if weights is not None:
        return (per_pair * weights).mean()
    return balanced_mean(per_pair, head_index) if balanced else per_pair.mean()


def criterion_weights(criteria: pd.Series) -> pd.Series:
    """One weight per pair, the inverse of its criterion's share of ``criteria`` over the number of criteria: each
    criterion carries the same share of an epoch's loss (the weights' mean is 1). What ``balance_criteria="epoch"``
    trains with: batches of a few prompts' pairs hold harmlessness pairs (5 % of the base run's, from 13 % of its
    prompts) in only about a third of the batches, so :func:`balanced_mean` within each batch would weigh it there
    alone."""
    share = criteria.map(criteria.value_counts(normalize=True))
    return 1.0 / (criteria.nunique() * share)


def balanced_mean(per_pair: torch.Tensor, head_index: torch.Tensor) -> torch.Tensor:
    """The mean over the heads present of each head's mean: a criterion with few pairs (harmlessness is 5 % of
    the base run's) weighs as much as one with many, instead of being drowned by them."""
    heads = head_index.unique()
    return torch.stack([per_pair[head_index == h].mean() for h in heads]).mean()


def preference_probability(p_chosen: torch.Tensor, p_rejected: torch.Tensor) -> torch.Tensor:
    """P(chosen ≻ rejected) = Σ_{i>j} p_chosen[i] · p_rejected[j] over the last (bin) dimension."""
    below = torch.cumsum(p_rejected, dim=-1) - p_rejected  # Σ_{j<i} p_rejected[j]
    return (p_chosen * below).sum(-1)


def distributional_loss(p_chosen: torch.Tensor, p_rejected: torch.Tensor, head_index: torch.Tensor,
                        balanced: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
    """−log P(chosen ≻ rejected) on each pair's own criterion (probs: [batch, heads, bins])."""
    idx = head_index.view(-1, 1, 1).expand(-1, 1, p_chosen.shape[-1])
    pc, pr = p_chosen.gather(1, idx).squeeze(1), p_rejected.gather(1, idx).squeeze(1)
    per_pair = -torch.log(preference_probability(pc, pr).clamp_min(1e-8))
    return _reduce(per_pair, head_index, balanced, weights)


def decorrelation_penalty(scores: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mean over heads and features of the squared Pearson correlation, within the batch, between each head's
    score and each bias feature (``scores``: [n, heads], ``features``: [n, k]); a constant feature adds 0.

    With a bias head this is the ODIN recipe (Chen et al. 2024): the quality heads are pushed to carry none of
    the length and flattery signal, so the bias head, trained on the same preferences, absorbs it, and it is
    left out of the scalar."""
    s = scores - scores.mean(0, keepdim=True)
    f = features - features.mean(0, keepdim=True)
    cov = s.T @ f / max(1, len(s) - 1)
    denom = s.std(0, unbiased=True).unsqueeze(1) * f.std(0, unbiased=True).unsqueeze(0)
    corr = torch.where(denom > 1e-8, cov / denom.clamp_min(1e-8), torch.zeros_like(cov))
    return (corr ** 2).mean()


def bias_features(texts: list[str]) -> torch.Tensor:
    """The panel's known biases as features of each response: log(1 + words) and a flattery flag (the judges'
    markers, Russian and Tatar)."""
    from ru_rlhf.judges import has_flattery
    from ru_rlhf.text import words

    return torch.tensor([[math.log1p(len(words(t))), float(has_flattery(t, "ru") or has_flattery(t, "tt"))]
                         for t in texts], dtype=torch.float32)


# --------------------------------------------------------------------------- scoring
def pair_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens a tokenizer puts before, between and after a (prompt, response) pair, found by
    encoding a probe pair (BERT: ``[CLS]``, ``[SEP]``, ``[SEP]``). A tokenizer that adds none (a causal LM's)
    gets its end-of-sequence token after the response, so the sequence ends as the policy's answers do.
    (Transformers 5 tokenizers no longer build inputs from id lists; this rebuilds that from the probe.)"""
    a = tokenizer("а", add_special_tokens=False)["input_ids"]
    b = tokenizer("б", add_special_tokens=False)["input_ids"]
    full = tokenizer("а", "б")["input_ids"]
    i = next(k for k in range(len(full)) if full[k:k + len(a)] == a)
    j = next(k for k in range(i + len(a), len(full)) if full[k:k + len(b)] == b)
    before, between, after = full[:i], full[i + len(a):j], full[j + len(b):]
    if not (before or between or after) and tokenizer.eos_token_id is not None:
        after = [tokenizer.eos_token_id]
    return before, between, after


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's token ids (no special tokens), each distinct text tokenised once: a pair set repeats its prompt in
    every pair and its answers in several."""
    distinct = list(dict.fromkeys(texts))
    ids = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False, verbose=False)["input_ids"])) if distinct else {}
    return [ids[t] for t in texts]


def truncation_plan(tokenizer, prompts: list[str], responses: list[str], max_length: int) -> list[dict]:
    """How each (prompt, response) fits ``max_length`` tokens, special tokens included.

    When both do not fit, the response keeps its first tokens up to half the window (or all of it when
    the prompt is short), and the prompt keeps its last tokens in what is left (the question, at the end
    of a prompt, survives; the start of a long document goes first). Written here because a tokenizer's
    own pair truncation cuts both sides from the same end, and ``only_first`` fails outright when the
    response alone is longer than the window.

    Returns:
        Per row: ``prompt_ids``, ``response_ids`` (the tokens kept, without special tokens),
        ``prompt_cut``, ``response_cut`` (tokens dropped).
    """
    before, between, after = pair_template(tokenizer)
    budget = max_length - len(before) - len(between) - len(after)
    if budget < 2:
        raise ValueError(f"max_length={max_length} leaves no room for a prompt and a response")
    p_ids, r_ids = _token_ids(tokenizer, prompts), _token_ids(tokenizer, responses)
    plan = []
    for p, r in zip(p_ids, r_ids):
        r_keep = min(len(r), max(budget - len(p), budget // 2))
        p_keep = min(len(p), budget - r_keep)
        plan.append({"prompt_ids": p[len(p) - p_keep:], "response_ids": r[:r_keep],
                     "prompt_cut": len(p) - p_keep, "response_cut": len(r) - r_keep})
    return plan


def _match_flags(row: dict, specials: set[int]) -> torch.Tensor:
    """1 on each response token of a :func:`truncation_plan` row that also occurs in its prompt (special tokens
    aside): the exact-match feature."""
    seen = set(row["prompt_ids"]) - specials
    return torch.tensor([int(t in seen) for t in row["response_ids"]], dtype=torch.long)


def encode(tokenizer, prompts: list[str], responses: list[str], max_length: int,
           plan: list[dict] | None = None) -> dict[str, torch.Tensor]:
    """Encode (prompt, response) pairs within ``max_length`` (see :func:`truncation_plan`), padded.

    ``response_start``: per row, the index of the response's first token (after padding);
    ``response_mask``: 1 on the response's tokens and the special tokens after it; ``match``: 1 on the response
    tokens that also occur in the prompt (special tokens aside)."""
    plan = plan if plan is not None else truncation_plan(tokenizer, prompts, responses, max_length)
    before, between, after = pair_template(tokenizer)
    ids = [before + x["prompt_ids"] + between + x["response_ids"] + after for x in plan]
    width = max((len(x) for x in ids), default=0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    response_mask = torch.zeros((len(ids), width), dtype=torch.long)
    match = torch.zeros((len(ids), width), dtype=torch.long)
    specials = set(before + between + after) | set(getattr(tokenizer, "all_special_ids", []) or [])
    starts = []
    for i, (row, x) in enumerate(zip(ids, plan)):
        off = width - len(row) if left else 0
        input_ids[i, off:off + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, off:off + len(row)] = 1
        start = off + len(before) + len(x["prompt_ids"]) + len(between)
        response_mask[i, start:off + len(row)] = 1  # the response and the special tokens after it
        match[i, start:start + len(x["response_ids"])] = _match_flags(x, specials)
        starts.append(start)
    return {"input_ids": input_ids, "attention_mask": mask, "response_mask": response_mask, "match": match,
            "response_start": torch.tensor(starts, dtype=torch.long)}


def model_inputs(enc: dict, device) -> dict[str, torch.Tensor]:
    """The tensors of :func:`encode` a :class:`RewardModel` takes, on ``device``."""
    return {k: enc[k].to(device) for k in ("input_ids", "attention_mask", "response_mask", "match")}


def encode_shared(tokenizer, prompts: list[str], responses: list[str], max_length: int,
                  plan: list[dict] | None = None) -> dict[str, torch.Tensor] | None:
    """:func:`encode`'s rows split for :meth:`RewardModel.pooled_shared`: each distinct prompt once (the tokens
    before the answer, as the window cut them; left-padded), and each row's answer and end tokens (right-padded)
    with ``prefix_of``, its prompt's row. ``suffix_match`` is :func:`encode`'s ``match`` over the answer. None when
    some row has no answer token (nothing to pool; :func:`encode` then)."""
    plan = plan if plan is not None else truncation_plan(tokenizer, prompts, responses, max_length)
    before, between, after = pair_template(tokenizer)
    rows: dict[tuple[int, ...], int] = {}
    prefix_of = [rows.setdefault(tuple(x["prompt_ids"]), len(rows)) for x in plan]
    prefixes = [before + list(k) + between for k in rows]
    suffixes = [x["response_ids"] + after for x in plan]
    if any(not sfx for sfx in suffixes):
        return None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    p_width, s_width = max(len(x) for x in prefixes), max(len(x) for x in suffixes)
    prefix_ids = torch.full((len(prefixes), p_width), pad, dtype=torch.long)
    prefix_mask = torch.zeros((len(prefixes), p_width), dtype=torch.long)
    for i, row in enumerate(prefixes):
        prefix_ids[i, p_width - len(row):] = torch.tensor(row, dtype=torch.long)
        prefix_mask[i, p_width - len(row):] = 1
    suffix_ids = torch.full((len(suffixes), s_width), pad, dtype=torch.long)
    suffix_mask = torch.zeros((len(suffixes), s_width), dtype=torch.long)
    suffix_match = torch.zeros((len(suffixes), s_width), dtype=torch.long)
    specials = set(before + between + after) | set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, (row, x) in enumerate(zip(suffixes, plan)):
        suffix_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        suffix_mask[i, :len(row)] = 1
        suffix_match[i, :len(x["response_ids"])] = _match_flags(x, specials)
    return {"prefix_ids": prefix_ids, "prefix_mask": prefix_mask, "suffix_ids": suffix_ids,
            "suffix_mask": suffix_mask, "prefix_of": torch.tensor(prefix_of, dtype=torch.long),
            "suffix_match": suffix_match}


@torch.no_grad()
def score(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 64,
          max_length: int | None = None, weights: dict[str, float] | None = None, pooled: bool = False,
          distinct: bool = True) -> pd.DataFrame:
    """Per-head scores and the scalar reward of each (prompt, response); optionally the pooled states.

    ``max_length`` defaults to the window the model was trained with. Rows are batched by length (less
    padding) and returned in the order given; inputs go to the model's device.

    ``distinct``: each distinct (prompt, response) is scored once and its row repeated wherever it occurs. Pairs
    repeat their answers (a prompt's 6 candidates make up to 15 pairs per criterion, 45 in all, from 6 answers), so
    scoring a pair set's chosen and rejected sides scored each answer many times over. ``False`` scores every row
    as given (the same values, up to float rounding of a differently padded batch).

    Where the model :attr:`~RewardModel.shares_prefix`, the rows are batched by prompt and each distinct prompt of a
    batch runs through the backbone once for all its answers (:meth:`RewardModel.pooled_shared`; best-of-n's samples,
    GRPO's groups and a pair set's answers share prompts); the same values up to float rounding.
    """
    if distinct:
        at: dict[tuple[str, str], int] = {}
        where = [at.setdefault(key, len(at)) for key in zip(prompts, responses)]
        if len(at) < len(where):
            once = score(rm, tokenizer, [k[0] for k in at], [k[1] for k in at], batch_size=batch_size,
                         max_length=max_length, weights=weights, pooled=pooled, distinct=False)
            states = once.attrs.pop("pooled", None)  # taken off first: pandas would copy it into the repeated rows
            out = once.iloc[where].reset_index(drop=True)
            if pooled:
                out.attrs["pooled"] = states[where] if states is not None else None
            return out
    rm.eval()
    plan = truncation_plan(tokenizer, prompts, responses, max_length or rm.max_length)
    share = rm.shares_prefix
    if share:  # a prompt's answers side by side, so that a batch runs each of its prompts once
        order = sorted(range(len(plan)), key=lambda i: (len(plan[i]["prompt_ids"]), plan[i]["prompt_ids"],
                                                        len(plan[i]["response_ids"])))
    else:
        order = sorted(range(len(plan)), key=lambda i: len(plan[i]["prompt_ids"]) + len(plan[i]["response_ids"]))
    device = next(rm.parameters()).device
    rows, states = [], []
    for b in range(0, len(order), batch_size):
        chunk = [plan[i] for i in order[b:b + batch_size]]
        shared = encode_shared(tokenizer, [], [], 0, plan=chunk) if share else None
        if shared is not None:
            inputs = {"shared": {k: v.to(device) for k, v in shared.items()}}
        else:
            inputs = model_inputs(encode(tokenizer, [], [], 0, plan=chunk), device)
        if pooled:
            h = rm.pooled_shared(**inputs["shared"]) if shared is not None else rm.pooled(**inputs)
            states.append(h.float().cpu())
            out = rm.head(h)[:, :len(rm.heads) * (rm.n_bins if rm.kind == "distributional" else 1)]
            s = out if rm.kind == "multi_head" else (
                out.view(len(h), len(rm.heads), rm.n_bins).softmax(-1)
                * torch.arange(1, rm.n_bins + 1, dtype=out.dtype, device=out.device)).sum(-1)
        else:
            s = rm(**inputs)["scores"]
        rows.append(torch.cat([s, rm.scalar(s, weights).unsqueeze(-1)], dim=-1).float().cpu())
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    data = torch.cat(rows)[inverse].numpy() if rows else []
    df = pd.DataFrame(data, columns=[*rm.heads, "scalar"])
    if pooled:
        df.attrs["pooled"] = torch.cat(states)[inverse].numpy() if states else None
    return df


def score_prompts(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str], **kwargs) -> pd.DataFrame:
    """:func:`score` for prompts as the tasks state them: formatted the way the reward model was
    trained (``ru_rlhf.models.policy.format_prompt``)."""
    from ru_rlhf.models.policy import format_prompt

    return score(rm, tokenizer, [format_prompt(p) for p in prompts], responses, **kwargs)


def fit_normalisation(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str],
                      max_length: int | None = None) -> dict:
    """Set the per-head centre and spread of the scalar from raw head scores of these responses
    (model-formatted prompts); returns them."""
    rm.norm_mean, rm.norm_std = {h: 0.0 for h in rm.heads}, {h: 1.0 for h in rm.heads}
    raw = score(rm, tokenizer, prompts, responses, max_length=max_length)
    rm.norm_mean = {h: round(float(raw[h].mean()), 6) for h in rm.heads}
    rm.norm_std = {h: round(max(float(raw[h].std(ddof=0)), 1e-6), 6) for h in rm.heads}
    return {"mean": rm.norm_mean, "std": rm.norm_std, "responses": len(responses)}


def fit_normalisation_on_pairs(rm: RewardModel, tokenizer, pairs, max_length: int | None = None, seed: int = 0,
                               limit: int = 2000) -> dict:
    """:func:`fit_normalisation` on the responses of training pairs (``prompt`` model-formatted; both sides, distinct,
    at most ``limit`` of them, a seeded sample)."""
    import pandas as pd

    texts = pd.DataFrame({"prompt": list(pairs["prompt"]) * 2,
                          "response": list(pairs["chosen"]) + list(pairs["rejected"])}).drop_duplicates()
    texts = texts.sample(n=min(limit, len(texts)), random_state=seed)
    return fit_normalisation(rm, tokenizer, list(texts["prompt"]), list(texts["response"]), max_length)


# --------------------------------------------------------------------------- training
@torch.no_grad()
def pair_accuracy(rm: RewardModel, tokenizer, pairs: pd.DataFrame, max_length: int | None = None,
                  batch_size: int = 64) -> dict[str, float]:
    """Per head: :func:`ru_rlhf.metrics.pairwise_metrics` accuracy of that head's pairs.

    The truth is the gold ordering where the pairs carry one (``gold_margin``; gold ties are left out), else
    the label (chosen over rejected)."""
    from ru_rlhf.metrics import pairwise_metrics

    pairs = pairs[pairs["criterion"].isin(rm.heads)]
    if pairs.empty:
        return {}
    was_training = rm.training
    sc = score(rm, tokenizer, list(pairs["prompt"]) * 2, list(pairs["chosen"]) + list(pairs["rejected"]),
               max_length=max_length, batch_size=batch_size)
    rm.train(was_training)
    n = len(pairs)
    gold = (pd.to_numeric(pairs["gold_margin"], errors="coerce").fillna(1.0).to_numpy()
            if "gold_margin" in pairs else np.ones(n))
    out = {}
    for h in rm.heads:
        sel = (pairs["criterion"] == h).to_numpy()
        if sel.any():
            acc = pairwise_metrics(sc[h].to_numpy()[:n][sel] - sc[h].to_numpy()[n:][sel], gold[sel])["accuracy"]
            if acc is not None:
                out[h] = acc
    return out


def pair_lengths(pairs: pd.DataFrame) -> np.ndarray:
    """Each pair's length in characters, the prompt and the longer answer: the width its batch pads to."""
    return (pairs["prompt"].str.len() + np.maximum(pairs["chosen"].str.len(), pairs["rejected"].str.len())).to_numpy()


def epoch_batches(order: list[int], batch_size: int, rng: random.Random,
                  lengths: np.ndarray | None = None, mega_batches: int = 50) -> list[list[int]]:
    """One epoch's batches of the row indices in ``order`` (shuffled in place with ``rng``).

    With ``lengths`` (one per row), batches are grouped by length as transformers' ``LengthGroupedSampler``
    groups them: the shuffled rows are cut into mega-batches of ``mega_batches`` batches, each sorted by length
    and cut into batches, and the batches are then shuffled, so a batch pads to a length close to its own rows'
    while the epoch's order stays random. We write it out rather than use the sampler because this loop
    batches (prompt, chosen, rejected) pairs itself and draws one order on every rank.
    """
    rng.shuffle(order)
    if lengths is None:
        return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    size = batch_size * mega_batches
    batches = []
    for m in range(0, len(order), size):
        mega = sorted(order[m:m + size], key=lambda i: -lengths[i])
        batches += [mega[b:b + batch_size] for b in range(0, len(mega), batch_size)]
    rng.shuffle(batches)
    return batches


def prompt_batches(groups: list[list[int]], batch_size: int, rng: random.Random,
                   lengths: np.ndarray | None = None, mega_batches: int = 50) -> list[list[int]]:
    """One epoch's batches of row indices with each prompt's pairs side by side (``groups``: the rows of each
    prompt), for :func:`train_reward_model`'s ``batching="prompts"``.

    The prompts are shuffled (and the pairs within each), their rows laid end to end and cut into batches of
    ``batch_size`` pairs, and the batches shuffled: a batch holds the pairs of a few prompts, whose answers recur
    across those pairs, so each distinct (prompt, answer) is scored once for all its pairs (InstructGPT, Ouyang et
    al. 2022, §3.5: all of a prompt's comparisons in one batch element). With ``lengths`` (one per row) the prompts
    are first sorted by their longest pair within mega-batches of about ``mega_batches`` batches, as
    :func:`epoch_batches` sorts pairs. Written out for the reasons :func:`epoch_batches` gives.
    """
    groups = [list(g) for g in groups]
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(g)
    if lengths is not None:
        size, sorted_groups, mega, rows = batch_size * mega_batches, [], [], 0
        for g in groups:
            mega.append(g)
            rows += len(g)
            if rows >= size:
                sorted_groups += sorted(mega, key=lambda x: -int(lengths[x].max()))
                mega, rows = [], 0
        groups = sorted_groups + sorted(mega, key=lambda x: -int(lengths[x].max()))
    order = [i for g in groups for i in g]
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def distinct_sequences(prompts: list[str], chosen: list[str], rejected: list[str]
                       ) -> tuple[list[str], list[str], list[int], list[int]]:
    """The distinct (prompt, answer) sequences of a batch of pairs, in first-seen order, and each pair's chosen and
    rejected positions among them: a batch of a few prompts' pairs scores each answer once."""
    seen: dict[tuple[str, str], int] = {}
    chosen_at = [seen.setdefault((p, c), len(seen)) for p, c in zip(prompts, chosen)]
    rejected_at = [seen.setdefault((p, r), len(seen)) for p, r in zip(prompts, rejected)]
    return [p for p, _ in seen], [a for _, a in seen], chosen_at, rejected_at


def train_reward_model(rm: RewardModel, tokenizer, pairs: pd.DataFrame, *, epochs: float = 2.0, batch_size: int = 32,
                       learning_rate: float = 2e-4, max_length: int = 256, seed: int = 0,
                       checkpoint_dir: str | Path | None = None, save_steps: int = 500,
                       desc: str = "reward model", validation: pd.DataFrame | None = None,
                       evals_per_epoch: int = 1, patience: int = 2, train_eval_pairs: int = 600,
                       debias_weight: float = 1.0, balance_criteria: bool | str = False,
                       group_by_length: bool = False, batching: str = "pairs",
                       shared_prefix: bool = True) -> tuple[RewardModel, pd.DataFrame]:
    """Train on ``pairs`` (``prompt, chosen, rejected, criterion``), each pair on its criterion's head.

    With ``validation`` pairs the model is evaluated ``evals_per_epoch`` times an epoch (per-head accuracy
    on the validation pairs and on a seeded sample of ``train_eval_pairs`` training pairs); training stops
    after ``patience`` evaluations without a better mean validation accuracy, and the best state is the
    one returned (``epochs`` is then an upper bound: early stopping on validation pairwise accuracy).

    ``balance_criteria``: True (or ``"batch"``), each batch's loss is the mean over its criteria of their mean loss
    (:func:`balanced_mean`); ``"epoch"``, each pair weighted by :func:`criterion_weights`, so each criterion carries
    the same share of the epoch's loss however the batches mix them (for ``batching="prompts"``); False (or
    ``"none"``), the plain mean.
    A model with a bias head is trained on P(chosen ≻ rejected) = σ(Δr_c + Δbias) plus ``debias_weight`` ×
    :func:`decorrelation_penalty` of the quality heads against :func:`bias_features`.

    ``group_by_length``: batches of pairs of similar length (:func:`epoch_batches`), so less of each batch is padding.

    ``batching``: ``"pairs"``, each batch a random draw of pairs, two sequences scored per pair; ``"prompts"``, each
    batch the pairs of a few prompts (:func:`prompt_batches`), each distinct (prompt, answer) scored once for all its
    pairs (:func:`distinct_sequences`): the same pairs per step from fewer sequences.

    ``shared_prefix``: each distinct prompt of a batch runs through the backbone once for all its answers
    (:meth:`RewardModel.pooled_shared`; the chosen and rejected answers of a pair share their prompt), where the model
    :attr:`~RewardModel.shares_prefix`; the same loss as whole sequences, up to float rounding. It sets the model's
    ``prefix_sharing``, so its evaluations score alike (:func:`score`), and the model returned keeps it.

    Under ``accelerate launch`` with N processes every rank draws the same shuffled order (same
    seed) and takes every N-th pair of each global batch of ``batch_size``; DDP averages the
    gradients, so a step sees the same global batch as one process would. Loss and accuracy are
    averaged over ranks before they are logged or checked, so every rank logs and stops alike;
    only rank 0 writes checkpoints.

    Returns:
        ``(model, log)``: one ``kind = "step"`` row per step with ``step, epoch, loss, accuracy`` (share
        of the batch where the chosen response scored higher on its head), and one ``kind = "eval"`` row
        per evaluation with ``train_accuracy_<head>``, ``validation_accuracy_<head>``,
        ``validation_accuracy`` (their mean) and ``best`` (the state returned).

    Raises:
        FloatingPointError: a NaN or infinite loss (names the step); nothing is saved then.
    """
    from tqdm.auto import tqdm

    rm.max_length = int(max_length)
    torch.manual_seed(seed)
    head_of = {h: i for i, h in enumerate(rm.heads)}
    data = pairs[pairs["criterion"].isin(head_of)].reset_index(drop=True)
    order = list(range(len(data)))
    steps_per_epoch = math.ceil(len(data) / batch_size)
    total = max(1, int(steps_per_epoch * epochs))
    opt = torch.optim.AdamW(rm.parameters(), lr=learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * max(0.0, 1 - s / total))
    acc = accelerator()
    train_model = rm
    if acc is not None:  # the scheduler stays on the raw optimizer: stepped once per global step
        train_model, opt = acc.prepare(rm, opt)
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    device = next(rm.parameters()).device
    rng = random.Random(seed)
    eval_every = max(1, steps_per_epoch // max(1, evals_per_epoch))
    train_probe = data.sample(n=min(train_eval_pairs, len(data)), random_state=seed) if validation is not None else None
    best = {"score": -1.0, "state": None, "step": 0}
    since_best = 0
    logs = []
    step = 0
    bar = tqdm(total=total, desc=desc, unit="step", mininterval=2.0, disable=rank > 0)

    def evaluate() -> bool:
        """Log one evaluation row; True when training should stop (no gain in ``patience`` evaluations)."""
        nonlocal since_best
        val = pair_accuracy(rm, tokenizer, validation, max_length)
        tr = pair_accuracy(rm, tokenizer, train_probe, max_length)
        mean = float(np.mean(list(val.values()))) if val else 0.0
        improved = mean > best["score"]
        if improved:
            best.update(score=mean, step=step, state={k: v.detach().cpu().clone() for k, v in rm.state_dict().items()})
            since_best = 0
        else:
            since_best += 1
        logs.append({"kind": "eval", "step": step, "epoch": round(step / steps_per_epoch, 4),
                     "validation_accuracy": round(mean, 4),
                     **{f"train_accuracy_{h}": v for h, v in tr.items()},
                     **{f"validation_accuracy_{h}": v for h, v in val.items()}})
        log.info("%s step %d (epoch %.2f): validation accuracy %s, train %s%s", desc, step, step / steps_per_epoch,
                 val, tr, " (best)" if improved else "")
        return since_best >= patience

    if batching not in ("pairs", "prompts"):
        raise ValueError(f"batching={batching!r}: expected 'pairs' or 'prompts'")
    balance = ("batch" if balance_criteria else "none") if isinstance(balance_criteria, bool) else balance_criteria
    if balance not in ("batch", "epoch", "none"):
        raise ValueError(f"balance_criteria={balance_criteria!r}: expected 'batch', 'epoch', 'none' or a bool")
    rm.prefix_sharing = bool(shared_prefix)  # its evaluations too, and the model returned
    share = rm.shares_prefix
    pair_weight = (torch.tensor(criterion_weights(data["criterion"]).to_numpy(), dtype=torch.float32)
                   if balance == "epoch" else None)
    lengths = pair_lengths(data) if group_by_length else None
    groups = list(data.groupby("prompt", sort=False).indices.values()) if batching == "prompts" else None
    stop = False
    while step < total and not stop:
        batches = (prompt_batches(groups, batch_size, rng, lengths) if groups is not None
                   else epoch_batches(order, batch_size, rng, lengths))
        for batch in batches:
            if step >= total:
                break
            if len(batch) < world:  # a tail too short to give every rank a pair (only with several ranks)
                continue
            rows = data.iloc[batch[rank::world]]
            n = len(rows)
            if groups is not None:  # each distinct (prompt, answer) once
                seq_prompts, seq_answers, c_at, r_at = distinct_sequences(
                    list(rows["prompt"]), list(rows["chosen"]), list(rows["rejected"]))
            else:  # the chosen answers, then the rejected ones
                seq_prompts, seq_answers = list(rows["prompt"]) * 2, list(rows["chosen"]) + list(rows["rejected"])
                c_at, r_at = list(range(n)), list(range(n, 2 * n))
            shared = encode_shared(tokenizer, seq_prompts, seq_answers, max_length) if share else None
            train_model.train()
            if shared is not None:
                out = train_model(shared={k: v.to(device) for k, v in shared.items()})
            else:
                out = train_model(**model_inputs(encode(tokenizer, seq_prompts, seq_answers, max_length), device))
            ci, ri = torch.tensor(c_at, device=device), torch.tensor(r_at, device=device)
            idx = torch.tensor([head_of[c] for c in rows["criterion"]], device=device)
            balanced, w = balance == "batch", None if pair_weight is None else pair_weight[batch[rank::world]].to(device)
            if rm.kind == "multi_head" and rm.bias_head:
                sb = out["scores"] + out["bias"].unsqueeze(-1)
                loss = bradley_terry_loss(sb[ci], sb[ri], idx, balanced, w)
                feats = bias_features(seq_answers).to(device)
                loss = loss + debias_weight * decorrelation_penalty(out["scores"], feats)
            elif rm.kind == "multi_head":
                loss = bradley_terry_loss(out["scores"][ci], out["scores"][ri], idx, balanced, w)
            else:
                loss = distributional_loss(out["probs"][ci], out["probs"][ri], idx, balanced, w)
            with torch.no_grad():
                s = out["scores"].detach()
                batch_acc = (s[ci].gather(-1, idx.unsqueeze(-1)) > s[ri].gather(-1, idx.unsqueeze(-1))).float().mean()
                shown = torch.stack([loss.detach(), batch_acc])
                if acc is not None:  # every rank logs and checks the mean over all ranks
                    shown = acc.reduce(shown, reduction="mean")
            if not torch.isfinite(shown[0]):
                raise FloatingPointError(f"{desc}: loss is {shown[0].item()} at step {step}; nothing was saved")
            if acc is not None:
                acc.backward(loss)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            logs.append({"kind": "step", "step": step, "epoch": round(step / steps_per_epoch, 4),
                         "loss": float(shown[0]), "accuracy": float(shown[1]),
                         "learning_rate": sched.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{float(shown[0]):.3f}")
            if checkpoint_dir and step % save_steps == 0 and rank == 0:
                rm.save_pretrained(Path(checkpoint_dir) / f"checkpoint-{step}", tokenizer)
            if validation is not None and (step % eval_every == 0 or step == total) and evaluate():
                log.info("%s: early stop at step %d: no better validation accuracy in %d evaluations; "
                         "keeping step %d", desc, step, patience, best["step"])
                stop = True
                break
    bar.close()
    if acc is not None:
        acc.wait_for_everyone()
    if validation is not None:
        if not any(r["kind"] == "eval" and r["step"] == step for r in logs):
            evaluate()  # the last state is a candidate too
        rm.load_state_dict(best["state"])
    history = pd.DataFrame(logs)
    if validation is not None:
        history["best"] = (history["kind"] == "eval") & (history["step"] == best["step"])
    return rm.eval(), history
