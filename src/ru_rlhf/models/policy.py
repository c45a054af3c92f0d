"""The policy: its tokenizer, its prompt format, and the one loader of causal LMs.

The prompt format is fixed here, once: every pipeline that trains on or generates from a
prompt calls :func:`format_prompt`. ``load_policy`` builds a small Llama-style model from a size
config or loads a hub id / local directory with ``from_pretrained`` (safetensors only,
``trust_remote_code`` off), so the ``hub`` env runs the same code the tests run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from ru_rlhf.params import Params

log = logging.getLogger(__name__)

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, USER, ASSISTANT]


def format_prompt(prompt: str) -> str:
    """The model's view of a prompt: a user turn, then the start of the assistant's turn.

    The answer follows the assistant marker directly, with no newline: the project's tokenizer
    adds a space before the first word after a special token (:func:`train_tokenizer`), so an
    answer's first word is the same token as that word inside the text it is copied from.
    """
    return f"{USER}{prompt}\n{ASSISTANT}"


def policy_prompt(policy, prompt: str, lang: str | None = None) -> str:
    """The generation prompt for ``policy``: :func:`format_prompt`, then the policy's inference cue if it has
    one (a Chain of Hindsight policy is conditioned on its positive feedback phrase, stored in its config;
    see :mod:`ru_rlhf.hindsight`). ``lang`` picks the phrase's language (guessed from the prompt if None)."""
    from ru_rlhf.hindsight import CUE_ATTRIBUTE, inference_cue

    config = getattr(policy, "config", None)
    if not getattr(config, CUE_ATTRIBUTE, None):
        return format_prompt(prompt)
    if lang is None:
        from ru_rlhf.metrics import is_tatar

        lang = "tt" if is_tatar(prompt) else "ru"
    return format_prompt(prompt) + inference_cue(config, lang)


class PolicySize(Params):
    """Size of a policy built from scratch (a Llama-style decoder)."""

    hidden_size: int = Field(256, gt=0)
    intermediate_size: int = Field(704, gt=0)
    num_hidden_layers: int = Field(4, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    num_key_value_heads: int = Field(4, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    tie_word_embeddings: bool = True


class ModelLoadError(ValueError):
    """A model directory or hub id that cannot be loaded safely (names the path and the reason)."""


def train_tokenizer(texts: list[str], vocab_size: int = 8000, min_frequency: int = 2,
                    model_max_length: int = 512):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a Hugging Face tokenizer.

    The tokenizer pads on the left (for batched generation) and truncates from the left (so the
    question at the end of a long prompt survives).

    ``add_prefix_space``: every stretch of text between special tokens starts with a space, so a
    word is one token whether it opens an answer or sits inside a sentence ("Ġ14030" in both).
    Measured without it: a policy copied organisations and places from its context (answers
    "Компания «X»", "В X": the copied word is mid-sentence) in 90-100 % of validation QA prompts
    but dates, people and numbers (the answer's first word, a different token from the one in the
    text) in 0 %. Decoded text then starts with that space; generation strips it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT], model_max_length=model_max_length,
        padding_side="left", truncation_side="left",
    )


def load_tokenizer(name_or_path: str | Path):
    """Load a tokenizer from a hub id or a local directory; pad and truncate on the left."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    tok.padding_side, tok.truncation_side = "left", "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a directory")
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path}: no config.json, not a saved model")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
        found = sorted(p.name for p in path.iterdir())
        raise ModelLoadError(
            f"{path}: no safetensors weights (found {found}); only safetensors are loaded, never pickles"
        )


def resolve_device(device: str | None, dtype: str | None) -> tuple[str | None, str | None]:
    """``device="auto"``: CUDA when there is a GPU, else CPU; ``dtype="auto"``: bf16 on a GPU that
    supports it, else float32 (CPU runs stay in float32)."""
    import torch

    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if (device or "").startswith("cuda") and cuda and torch.cuda.is_bf16_supported() else None
    return device, dtype


def load_policy(name_or_path: str | Path | None = None, *, size: PolicySize | dict | None = None,
                tokenizer=None, dtype: str | None = None, device: str | None = None, seed: int = 0):
    """Build or load a causal LM.

    Args:
        name_or_path: a hub id or a local directory to load with ``from_pretrained``; ``None``
            builds a fresh Llama-style model from ``size`` (random weights, seeded).
        size: the size config for a model built from scratch.
        tokenizer: the tokenizer whose vocabulary and special tokens a fresh model uses.
        dtype: ``"float32"``, ``"bfloat16"`` … (default float32); ``"auto"``: bf16 on a GPU.
        device: where to put the model (default CPU); ``"auto"``: CUDA when available.
        seed: seed of the random initialisation of a fresh model.

    Raises:
        ModelLoadError: a local directory without safetensors weights or without a config.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    device, dtype = resolve_device(device, dtype)
    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    if name_or_path is None:
        if tokenizer is None:
            raise ValueError("a fresh policy needs the tokenizer it will use")
        s = size if isinstance(size, PolicySize) else PolicySize.model_validate(size or {})
        config = LlamaConfig(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **s.model_dump(),
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch_dtype)
        log.info("built a fresh Llama-style policy with %.2fM parameters", model.num_parameters() / 1e6)
    else:
        path = Path(str(name_or_path))
        local = path.exists() or str(name_or_path).startswith((".", "/"))
        if local:
            _check_local_dir(path)
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), dtype=torch_dtype, trust_remote_code=False, use_safetensors=True,
        )
    if device:
        model = model.to(device)
    return model


def model_card_facts(model: Any) -> dict:
    """A few facts about a model for reports (parameter count, layers, vocabulary)."""
    cfg = model.config
    return {"parameters": int(model.num_parameters()), "layers": getattr(cfg, "num_hidden_layers", None),
            "hidden_size": getattr(cfg, "hidden_size", None), "vocab_size": getattr(cfg, "vocab_size", None)}
