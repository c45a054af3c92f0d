"""Chain of Hindsight (Liu, Sferrazza and Abbeel 2023, arXiv 2302.02676): preference pairs as sequences
conditioned on natural-language feedback.

A pair (prompt, chosen, rejected) becomes one sequence: the model-formatted prompt, then both answers, each
introduced by its feedback phrase, in either order::

    <|user|>…<|assistant|>Хороший ответ: <chosen></s>
    Плохой ответ: <rejected></s>

The loss is on the answers' tokens and the end-of-sequence after each answer, never on the prompt or the
feedback words; at inference the policy is given the prompt and the positive phrase, and its answer ends at
its end-of-sequence. Two guards from the paper, each a parameter: a share of plain sequences (the prompt and
the chosen answer, no feedback) mixed in, and a random share of the input tokens masked (replaced by a mask, unknown or pad
token in the input, kept as targets) so that the model cannot learn to copy one answer into the other.

Written here rather than taken from a library: neither TRL nor Transformers builds hindsight sequences; the
training itself is TRL's ``SFTTrainer`` on the pre-tokenised ``input_ids`` / ``labels`` made here.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100
CUE_ATTRIBUTE = "ru_rlhf_inference_cue"  # on a policy's config: {lang: positive phrase}, saved in config.json


def hindsight_text(prompt: str, chosen: str, rejected: str, positive: str, negative: str, eos: str,
                   chosen_first: bool) -> tuple[str, list[tuple[int, int]]]:
    """One hindsight sequence and the character spans of its answers (each with its end-of-sequence).

    Args:
        prompt: the model-formatted prompt (it ends where the assistant's turn starts).
        positive, negative: the feedback phrases that introduce the chosen and the rejected answer.
        chosen_first: the chosen answer (with the positive phrase) first, or the rejected one.
    """
    parts = [(positive, chosen), (negative, rejected)]
    if not chosen_first:
        parts.reverse()
    text, spans = prompt, []
    for i, (phrase, answer) in enumerate(parts):
        text += ("\n" if i else "") + phrase
        start = len(text)
        text += " " + answer.strip() + eos
        spans.append((start, len(text)))
    return text, spans


def plain_text(prompt: str, answer: str, eos: str) -> tuple[str, list[tuple[int, int]]]:
    """A plain sequence (no feedback): the prompt and the answer, the loss on the answer."""
    start = len(prompt)
    text = prompt + " " + answer.strip() + eos
    return text, [(start, len(text))]


def tokenize_with_loss_spans(tokenizer, text: str, spans: list[tuple[int, int]], max_length: int
                             ) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of ``text``: labels are the ids on tokens inside ``spans``, ``-100`` elsewhere.

    The whole text is tokenised at once (so the prompt and the feedback phrase are the same tokens a
    generation prompt gives), and a token counts as an answer's when its characters lie inside a span.
    Sequences longer than ``max_length`` keep their end (the answers) and lose the prompt's start, as the
    tokenizer truncates prompts.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [t if any(s <= a and b <= e and a < b for s, e in spans) else IGNORE
              for t, (a, b) in zip(ids, offsets)]
    if len(ids) > max_length:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return ids, labels


def mask_inputs(input_ids: list[int], share: float, mask_id: int | None, rng: np.random.Generator,
                protect: set[int], vocab_size: int | None = None) -> list[int]:
    """The input with a random ``share`` of its tokens replaced by ``mask_id`` (special tokens in ``protect``
    are kept): the paper's random masking of past tokens. Labels are not touched, so each masked token is
    still a target where it is one. ``mask_id=None`` (a tokenizer with no special token to mask with, see
    :func:`mask_token_id`): each masked token becomes a random ordinary token of ``range(vocab_size)``
    instead (BERT's random replacement), drawn from ``rng``."""
    if share <= 0:
        return list(input_ids)
    if mask_id is None and not vocab_size:
        raise ValueError("mask_inputs: mask_id None needs the vocabulary size for random replacement")
    out = list(input_ids)
    for i in np.flatnonzero(rng.random(len(out)) < share):
        if out[i] not in protect:
            if mask_id is not None:
                out[i] = mask_id
                continue
            new = int(rng.integers(vocab_size))
            while new in protect:
                new = int(rng.integers(vocab_size))
            out[i] = new
    return out


def for_language(by_lang: dict, lang: str | None):
    """The entry for ``lang``, else the Russian one, else the first (the same rule in training and inference)."""
    if not by_lang:
        return None
    return by_lang.get(lang) or by_lang.get("ru") or next(iter(by_lang.values()))


def mask_token_id(tokenizer) -> int | None:
    """The id masked inputs get: the tokenizer's mask or unknown token, else its pad token (unless that is the
    end-of-sequence token, as for many hub tokenizers), else its BOS, else another special token that is not
    the end of sequence (Qwen's ``<|im_start|>``). None when the only special token ends a sequence (GPT-2's
    ``<|endoftext|>`` is its BOS, EOS and UNK): :func:`mask_inputs` then replaces with random ordinary tokens."""
    ids = [tokenizer.mask_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id,
           *sorted(tokenizer.all_special_ids)]
    for tid in ids:
        if tid is not None and tid != tokenizer.eos_token_id:
            return tid
    return None


def inference_cue(config, lang: str) -> str:
    """The text a policy is conditioned on after the prompt at inference (``""`` for most policies; the
    positive feedback phrase for a Chain of Hindsight policy, read from its config)."""
    return for_language(getattr(config, CUE_ATTRIBUTE, None) or {}, lang) or ""
