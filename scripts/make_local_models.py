"""Build small models of real Hugging Face architectures, offline, for ``kedro run --env local_models``.

Writes three folders with ``save_pretrained`` (safetensors) and their tokenizers, trained on the
bundled corpus (``data/01_raw/world_corpus.jsonl``), so that the pipelines load them exactly as they
would load a model downloaded from the hub (``AutoModelForCausalLM`` / ``AutoModelForMaskedLM`` /
``AutoTokenizer`` on a local directory):

- ``gpt2``: ``GPT2LMHeadModel`` with a byte-level BPE tokenizer whose one special token is
  ``<|endoftext|>`` (GPT-2's convention: it is BOS, EOS and UNK, and there is no pad token);
- ``qwen2``: ``Qwen2ForCausalLM`` (grouped-query attention, rotary positions) with Qwen's special
  tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) and Qwen's ChatML chat template;
- ``bert``: ``BertForMaskedLM`` with a cased WordPiece tokenizer.

The weights are random (seeded): these are architectures, not pretrained models; the pipelines
pre-train and fine-tune them as they would a hub model. ``--size realistic`` builds the sizes a GPU
run uses: GPT-2 small (12 x 768, 124 M parameters with its 50 257-row embedding), BERT-base (12 x 768,
110 M with 30 522 rows) and a Qwen2 of the same depth and width (78 M; the corpus's own vocabulary).

Usage::

    python scripts/make_local_models.py                # into data/local_models/01_raw/models
    python scripts/make_local_models.py --out DIR --size realistic

Nothing is downloaded: every piece is built from a config here. The same inputs give the same
tokenizers and weights (the tokenizers' trainers are deterministic on one machine; weights are seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "01_raw" / "world_corpus.jsonl"
ARCHITECTURES = ("gpt2", "qwen2", "bert")

SIZES = {
    "smoke": {
        "vocab_size": 2000,
        "gpt2": dict(n_embd=64, n_layer=2, n_head=2, n_positions=512),
        "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512),
        "bert": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     max_position_embeddings=512),
    },
    "realistic": {
        "vocab_size": 16000,   # an upper bound: the corpus gives about 2 800 tokens
        # embedding rows of GPT-2's and BERT-base's vocabularies (rows past the tokenizer's are never fed and
        # decode to nothing, as the padded rows of hub vocabularies do), so the models have their sizes
        "model_vocab": {"gpt2": 50257, "bert": 30522},
        "gpt2": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024),
        "qwen2": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                      num_key_value_heads=4, max_position_embeddings=1024),
        "bert": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     max_position_embeddings=512),
    },
}

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2's ChatML template (the instruct models' own; a system turn only when the messages carry one)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def default_out() -> Path:
    """Where the ``local_models`` env looks: ``<data root>/01_raw/models`` (``RU_RLHF_DATA_ROOT`` when set)."""
    return Path(os.environ.get("RU_RLHF_DATA_ROOT") or ROOT / "data" / "local_models") / "01_raw" / "models"


def corpus_texts(path: Path = CORPUS) -> list[str]:
    """The bundled corpus's document texts (one JSON object per line with a ``text`` field)."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def byte_level_bpe(texts: list[str], vocab_size: int, specials: list[str]):
    """A byte-level BPE tokenizer (GPT-2's and Qwen2's kind) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tok


def _rows(size: dict, name: str, tok) -> int:
    """Embedding rows: the tokenizer's, or the size's ``model_vocab`` where it asks for more."""
    return max(len(tok), size.get("model_vocab", {}).get(name, 0))


def build_gpt2(texts: list[str], size: str, seed: int):
    """``GPT2LMHeadModel`` and its tokenizer (``<|endoftext|>`` only; no pad token, as GPT-2 ships)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    s = SIZES[size]
    tok = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(texts, s["vocab_size"], [ENDOFTEXT]),
                                  bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT,
                                  model_max_length=s["gpt2"]["n_positions"])
    config = GPT2Config(vocab_size=_rows(s, "gpt2", tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        n_ctx=s["gpt2"]["n_positions"], **s["gpt2"])
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config), tok, "GPT2Tokenizer"


def build_qwen2(texts: list[str], size: str, seed: int):
    """``Qwen2ForCausalLM`` and its tokenizer (Qwen's special tokens and ChatML chat template)."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    s = SIZES[size]
    tok = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(texts, s["vocab_size"], [ENDOFTEXT, IM_START, IM_END]),
                                  eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
                                  additional_special_tokens=[IM_START, IM_END],
                                  model_max_length=s["qwen2"]["max_position_embeddings"])
    tok.chat_template = QWEN_CHAT_TEMPLATE
    # Qwen2 base models end a text with <|endoftext|> (the instruct models' generation config adds <|im_end|>)
    config = Qwen2Config(vocab_size=len(tok), bos_token_id=None, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **s["qwen2"])
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config), tok, "Qwen2Tokenizer"


def build_bert(texts: list[str], size: str, seed: int):
    """``BertForMaskedLM`` and a cased WordPiece tokenizer (the project's deterministic trainer)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from ru_rlhf.models.encoder import train_wordpiece_tokenizer

    s = SIZES[size]
    tok = train_wordpiece_tokenizer(texts, s["vocab_size"], s["bert"]["max_position_embeddings"])
    tok.truncation_side = "right"  # a hub BERT's default; the project's loader sets what it needs
    config = BertConfig(vocab_size=_rows(s, "bert", tok), pad_token_id=tok.pad_token_id, **s["bert"])
    torch.manual_seed(seed)
    return BertForMaskedLM(config), tok, "BertTokenizer"


BUILDERS = {"gpt2": build_gpt2, "qwen2": build_qwen2, "bert": build_bert}


def make(out: Path, size: str = "smoke", architectures=ARCHITECTURES, seed: int = 0, force: bool = False,
         corpus: Path = CORPUS) -> dict[str, Path]:
    """Build and save each architecture under ``out/<name>``; an existing folder built with the same
    size and seed is kept unless ``force``. Returns the folders."""
    texts = None
    done = {}
    for name in architectures:
        target = out / name
        stamp = {"architecture": name, "size": size, "seed": seed, "corpus": corpus.name}
        marker = target / "local_model.json"
        if not force and marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
            done[name] = target
            continue
        texts = texts if texts is not None else corpus_texts(corpus)
        model, tok, tokenizer_class = BUILDERS[name](texts, size, seed)
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # the class a hub checkpoint of this architecture names, so AutoTokenizer loads the real one
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["tokenizer_class"] = tokenizer_class
        cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
        (tmp / "local_model.json").write_text(json.dumps(stamp), encoding="utf-8")
        if target.exists():
            import shutil

            shutil.rmtree(target)
        tmp.rename(target)
        print(f"{name}: {type(model).__name__}, {model.num_parameters() / 1e6:.2f} M parameters, "
              f"vocabulary {len(tok)} -> {target}")
        done[name] = target
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder of the three models (default: %(default)s)")
    ap.add_argument("--size", choices=sorted(SIZES), default="smoke")
    ap.add_argument("--only", nargs="*", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild folders that already exist")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    make(args.out or default_out(), args.size, args.only, args.seed, args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
