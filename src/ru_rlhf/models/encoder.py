"""The encoder: a small BERT built from a size config, or a hub id / local directory.

It is the reward model's backbone and the BERTScore / MAUVE feature model of the evaluation.
Built from scratch it gets a WordPiece tokenizer trained on the corpus and a brief masked-LM
pre-training. Loading follows the policy's rules: safetensors only, ``trust_remote_code`` off.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from ru_rlhf.models.policy import ModelLoadError, _check_local_dir, resolve_device
from ru_rlhf.params import Params

log = logging.getLogger(__name__)


class EncoderSize(Params):
    """Size of an encoder built from scratch (BERT)."""

    hidden_size: int = Field(192, gt=0)
    intermediate_size: int = Field(512, gt=0)
    num_hidden_layers: int = Field(4, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    max_position_embeddings: int = Field(512, gt=0)


def train_wordpiece_tokenizer(texts: list[str], vocab_size: int = 8000, model_max_length: int = 512):
    """Train a WordPiece tokenizer (cased, BERT special tokens) on ``texts``; truncate from the left.

    Why not ``tokenizers.BertWordPieceTokenizer.train_from_iterator``: measured here (tokenizers
    0.23), it returns a different vocabulary on every call for the same texts, so two runs trained
    different encoders and reward models. Its trainer is a BPE trainer with a ``##``
    continuing-subword prefix, and it is that prefix option that is not deterministic (BPE without
    it is, also measured). So we train plain BPE on words marked with a word-start symbol (``▁``)
    and turn its vocabulary into WordPiece's: ``▁x`` → ``x`` (word-initial), ``x`` → ``##x``, with
    every character in both forms. Same kind of vocabulary, now the same on every run.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                            lowercase=False)
    start = "\u2581"
    words = pre_tokenizers.BertPreTokenizer()
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.Sequence([words, pre_tokenizers.Metaspace(replacement=start, prepend_scheme="always")])
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                                       show_progress=False))
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        if token and token not in vocab:
            vocab[token] = len(vocab)

    for token, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        if token in specials:
            add(token)
        elif token.startswith(start):
            add(token[1:])
        else:
            add("##" + token)
    for ch in sorted({c for t in texts for c in normalizer.normalize_str(t) if not c.isspace() and c != start}):
        add(ch)
        add("##" + ch)
    wp = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    wp.normalizer, wp.pre_tokenizer = normalizer, words
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    wp.decoder = decoders.WordPiece(prefix="##")
    tok = BertTokenizerFast(tokenizer_object=wp, model_max_length=model_max_length,
                            do_lower_case=False, truncation_side="left")
    tok.unk_token, tok.pad_token, tok.cls_token, tok.sep_token, tok.mask_token = \
        "[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"
    return tok


def load_encoder(name_or_path: str | Path | None = None, *, size: EncoderSize | dict | None = None,
                 tokenizer=None, masked_lm: bool = False, seed: int = 0, dtype: str | None = None,
                 device: str | None = None):
    """Build or load an encoder (``AutoModel``), or with ``masked_lm`` its masked-LM model.

    ``dtype`` and ``device`` as for :func:`ru_rlhf.models.policy.load_policy` (``"auto"``: bf16 / CUDA on a GPU).

    Raises:
        ModelLoadError: a local directory without safetensors weights or without a config.
    """
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, BertModel

    device, dtype = resolve_device(device, dtype)
    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    if name_or_path is None:
        if tokenizer is None:
            raise ValueError("a fresh encoder needs the tokenizer it will use")
        s = size if isinstance(size, EncoderSize) else EncoderSize.model_validate(size or {})
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **s.model_dump())
        torch.manual_seed(seed)
        model = (BertForMaskedLM if masked_lm else BertModel)(config)
        log.info("built a fresh BERT encoder with %.2fM parameters", model.num_parameters() / 1e6)
        return model.to(device=device or "cpu", dtype=torch_dtype)
    path = Path(str(name_or_path))
    if path.exists() or str(name_or_path).startswith((".", "/")):
        _check_local_dir(path)
    cls = AutoModelForMaskedLM if masked_lm else AutoModel
    model = cls.from_pretrained(str(name_or_path), dtype=torch_dtype, trust_remote_code=False, use_safetensors=True)
    return model.to(device) if device else model


def load_encoder_tokenizer(name_or_path: str | Path):
    """The encoder's tokenizer (prompts are cut from the left so the response survives)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    tok.truncation_side = "left"
    return tok


__all__ = ["EncoderSize", "ModelLoadError", "load_encoder", "load_encoder_tokenizer", "train_wordpiece_tokenizer"]
