"""Log-probability scoring of given responses: their tokens' log-probabilities under a model
(:func:`sequence_logprobs`) and the per-token KL of a model to a reference along them (:func:`response_kl`)."""

from __future__ import annotations

import torch

from ru_rlhf.models.generation.batching import left_pad


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
        ids, mask = left_pad(seqs, tokenizer.pad_token_id)
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
        ids, mask = left_pad(seqs, tokenizer.pad_token_id)
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
