"""Chain of Hindsight: the sequences built from hand-made pairs (what is in the loss, both orders, the
guards), and the method in the alignment slice (grid, inference cue, a changed policy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ru_rlhf.hindsight import hindsight_text
from ru_rlhf.models.policy import format_prompt, policy_prompt
from ru_rlhf.pipelines.alignment.nodes import hindsight_dataset
from ru_rlhf.pipelines.alignment.params import CohGuards, CohParams
from tests.params_helpers import base_params

PAIRS = pd.DataFrame([
    {"prompt": "Ответь на вопрос по тексту.\nТекст: В Казани открыли мост.\nВопрос: Что открыли?",
     "chosen": "Мост.", "rejected": "Не знаю.", "lang": "ru"},
    {"prompt": "Кыскача җавап бир.\nЯңалык: Казанда мост ачылды.", "chosen": "Мост ачылды.",
     "rejected": "Белмим.", "lang": "tt"},
] * 20)


NO_GUARDS = CohGuards(mask_share=0.0, plain_share=0.0)


def _params(**kw) -> CohParams:
    return CohParams.of(base_params("alignment.coh.train", {"max_pairs": 100, "epochs": 1, "batch_size": 4,
                                                            "max_length": 256, **kw}))


def test_sequence_text_has_both_answers_after_their_feedback_in_either_order():
    good, spans = hindsight_text("P", "Да.", "Нет.", "Хороший ответ:", "Плохой ответ:", "</s>", chosen_first=True)
    assert good == "PХороший ответ: Да.</s>\nПлохой ответ: Нет.</s>"
    assert [good[a:b] for a, b in spans] == [" Да.</s>", " Нет.</s>"]
    bad, spans = hindsight_text("P", "Да.", "Нет.", "Хороший ответ:", "Плохой ответ:", "</s>", chosen_first=False)
    assert bad == "PПлохой ответ: Нет.</s>\nХороший ответ: Да.</s>"
    assert [bad[a:b] for a, b in spans] == [" Нет.</s>", " Да.</s>"]


def test_only_answers_and_their_ends_are_in_the_loss(tiny_tokenizer):
    p = _params()
    ds, built = hindsight_dataset(PAIRS, tiny_tokenizer, p, NO_GUARDS, seed=0)
    eos = tiny_tokenizer.eos_token
    assert len(ds) == len(PAIRS) and set(built["kind"]) == {"hindsight"}
    # both orders are present (a seeded coin per pair)
    assert 0 < built["chosen_first"].sum() < len(built)
    for row, pair, first in zip(ds, PAIRS.itertuples(index=False), built["chosen_first"]):
        ids, labels = row["input_ids"], row["labels"]
        assert ids == [t if t != -100 else ids[i] for i, t in enumerate(labels)]  # labels are the ids where set
        learned = tiny_tokenizer.decode([t for t in labels if t != -100])
        answers = [pair.chosen, pair.rejected] if first else [pair.rejected, pair.chosen]
        assert learned.replace(" ", "") == "".join(a + eos for a in answers).replace(" ", "")
        context = tiny_tokenizer.decode([t for t, y in zip(ids, labels) if y == -100])
        phr = p.feedback[pair.lang]
        assert phr.positive in context and phr.negative in context  # feedback words: context, not loss
        assert pair.prompt.split("\n")[0] in context  # the prompt: context, not loss
        # the sequence opens with the whole model-formatted prompt (decoding adds a space after special tokens)
        assert tiny_tokenizer.decode(ids).replace(" ", "").startswith(format_prompt(pair.prompt).replace(" ", ""))


def test_the_guards_add_plain_sequences_and_mask_inputs_only(tiny_tokenizer):
    ds0, _ = hindsight_dataset(PAIRS, tiny_tokenizer, _params(), NO_GUARDS, seed=0)
    ds, built = hindsight_dataset(PAIRS, tiny_tokenizer, _params(), CohGuards(mask_share=0.2, plain_share=0.5),
                                  seed=0)
    assert (built["kind"] == "plain").sum() == len(PAIRS) // 2 and len(ds) == len(PAIRS) * 3 // 2
    share = built["masked"].sum() / built["tokens"].sum()
    assert 0.1 < share < 0.25  # 20 % of non-special tokens
    pad = tiny_tokenizer.pad_token_id
    for a, b in zip(ds0, ds):  # the same hindsight sequences: labels unchanged, inputs masked with the pad id
        assert a["labels"] == b["labels"]
        assert all(x == y or y == pad for x, y in zip(a["input_ids"], b["input_ids"]))
    plain = [r for r, k in zip(ds, built["kind"]) if k == "plain"]
    text = tiny_tokenizer.decode(plain[0]["input_ids"])
    assert "ответ:" not in text and "җавап:" not in text  # no feedback words in a plain sequence


def test_bad_guard_or_phrase_parameters_are_refused():
    with pytest.raises(ValueError, match="mask_share"):
        CohGuards(mask_share=0.9, plain_share=0.0)
    with pytest.raises(ValueError, match="positive"):
        _params(feedback={"ru": {"positive": "", "negative": "Плохо:"}})
    with pytest.raises(ValueError, match="Extra inputs"):
        _params(grdi=[{}])


def test_coh_in_the_alignment_slice(alignment_run):
    grid = alignment_run.load("alignment.coh.grid")
    assert list(grid["grid_value"]) == ["mask=0,plain=0", "mask=0.05,plain=0.5"]
    assert grid["chosen"].sum() == 1 and list(grid["plain_sequences"]) == [0, 12]
    assert grid.loc[0, "masked_tokens_share"] == 0 and grid.loc[1, "masked_tokens_share"] > 0
    info = alignment_run.load("alignment.coh.info")
    assert info["chosen_value"] == grid.loc[grid["probe_gold"].idxmax(), "grid_value"]
    assert info["inference_cue"] == {"ru": "Хороший ответ:", "tt": "Яхшы җавап:"}
    policy, sft = alignment_run.load("alignment.coh.policy"), alignment_run.load("sft_policy")
    # the policy is conditioned on the positive phrase at inference, in the prompt's language
    assert policy_prompt(policy, "Вопрос?", "ru") == format_prompt("Вопрос?") + "Хороший ответ:"
    assert policy_prompt(policy, "Сорау?", "tt") == format_prompt("Сорау?") + "Яхшы җавап:"
    assert policy_prompt(sft, "Вопрос?", "ru") == format_prompt("Вопрос?")
    # and training changed it
    diff = sum(float((a - b).abs().sum()) for a, b in zip(policy.parameters(), sft.parameters()))
    assert diff > 0
    assert alignment_run.load("alignment_summary")["coh"]["parameter"] == "guards"


def test_the_cue_survives_save_and_load(alignment_run, tmp_path):
    from ru_rlhf.models.policy import load_policy

    policy = alignment_run.load("alignment.coh.policy")
    policy.save_pretrained(tmp_path / "coh")
    again = load_policy(tmp_path / "coh")
    assert policy_prompt(again, "Вопрос?", "ru").endswith("Хороший ответ:")
    x = torch.tensor([[1, 2, 3]])
    assert torch.allclose(policy(x).logits, again(x).logits, atol=1e-5)


def test_masked_inputs_never_become_the_end_of_sequence(tiny_tokenizer):
    """A hub tokenizer often pads with its EOS: masking with it would end answers mid-sequence."""
    from types import SimpleNamespace

    from ru_rlhf.hindsight import mask_inputs, mask_token_id

    assert mask_token_id(tiny_tokenizer) == tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id
    hub_like = SimpleNamespace(mask_token_id=None, unk_token_id=None, pad_token_id=2, eos_token_id=2, bos_token_id=1,
                               all_special_ids=[1, 2])
    assert mask_token_id(hub_like) == 1
    qwen_like = SimpleNamespace(mask_token_id=None, unk_token_id=None, pad_token_id=2, eos_token_id=2,
                                bos_token_id=None, all_special_ids=[2, 5, 4])  # <|endoftext|>, <|im_start|>...
    assert mask_token_id(qwen_like) == 4
    # GPT-2: <|endoftext|> is all it has, so masked inputs become random ordinary tokens
    assert mask_token_id(SimpleNamespace(mask_token_id=None, unk_token_id=None, pad_token_id=2, eos_token_id=2,
                                         bos_token_id=2, all_special_ids=[2])) is None
    rng = np.random.default_rng(0)
    x = list(range(3, 203))
    xm = mask_inputs(x + [2], 0.5, None, rng, {0, 1, 2}, vocab_size=10)
    changed = [b for a, b in zip(x, xm) if a != b]
    assert 60 < len(changed) < 140 and all(3 <= b < 10 for b in changed) and xm[-1] == 2


def test_kl_with_the_cue_compares_each_response_token_under_both_prompts(tiny_tokenizer):
    """response_kl(ref_prompts=...): the policy sees prompt + cue, the reference the prompt alone; batched
    results equal one-at-a-time ones, and the same model on the same prompts has KL 0."""
    from ru_rlhf.models.generation import response_kl
    from ru_rlhf.models.policy import load_policy
    from tests.conftest import TINY_SIZE

    a = load_policy(size=TINY_SIZE, tokenizer=tiny_tokenizer, seed=0)
    b = load_policy(size=TINY_SIZE, tokenizer=tiny_tokenizer, seed=1)
    prompts = [format_prompt("Короткий вопрос?"), format_prompt("Гораздо более длинный вопрос о мосте в Казани?")]
    cued = [p + "Хороший ответ:" for p in prompts]
    responses = ["Мост.", "Мост открыли вчера."]
    batched = response_kl(a, b, tiny_tokenizer, cued, responses, ref_prompts=prompts)
    single = [response_kl(a, b, tiny_tokenizer, [c], [r], ref_prompts=[p])[0]
              for c, r, p in zip(cued, responses, prompts)]
    for x, y in zip(batched, single):
        assert x["tokens"] == y["tokens"] and x["kl"] == pytest.approx(y["kl"], abs=1e-5)
    assert all(k["kl"] > 0 for k in batched)
    same = response_kl(a, a, tiny_tokenizer, prompts, responses, ref_prompts=list(prompts))
    assert all(abs(k["kl"]) < 1e-6 for k in same)
    # the cue changes what the policy is conditioned on: KL(a | cue || a | no cue) is not 0
    shifted = response_kl(a, a, tiny_tokenizer, cued, responses, ref_prompts=prompts)
    assert all(k["kl"] > 0 for k in shifted)
