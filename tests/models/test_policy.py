"""The policy loader, the tokenizer and the prompt format."""

from __future__ import annotations

import pytest
import torch

from ru_rlhf.io.datasets import HFModelDataset
from ru_rlhf.models.policy import ASSISTANT, USER, ModelLoadError, PolicySize, format_prompt, load_policy


def test_prompt_format_is_fixed_in_one_place():
    assert format_prompt("Вопрос?") == f"{USER}Вопрос?\n{ASSISTANT}"


def test_tokenizer_special_tokens_padding_and_roundtrip(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.padding_side == "left" and tok.truncation_side == "left"
    assert {tok.pad_token, tok.eos_token, tok.bos_token} == {"<|pad|>", "<|eos|>", "<|bos|>"}
    text = "2023 елның 12 маенда Казанда яңа күпер ачылды. «Ак Барс Строй» — 350 метров."
    # byte-level: lossless on Tatar letters too, after the one space added before the first word
    assert tok.decode(tok(text)["input_ids"]) == " " + text
    ids = tok(format_prompt("x"), add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(USER) in ids and tok.convert_tokens_to_ids(ASSISTANT) in ids
    batch = tok(["а", "длинный текст здесь"], padding=True)
    assert batch["attention_mask"][0][0] == 0  # left padding


def test_an_answers_first_word_is_the_token_it_has_inside_the_text(tiny_tokenizer):
    """The answer follows the assistant marker; its first word must be the same token as in the
    text it is copied from (without the prefix space it was another token, and never copied)."""
    tok = tiny_tokenizer
    prompt = format_prompt("Зрителями стали 2023 человек. Сколько пришло?")
    answer_ids = tok(prompt + "2023 человек.", add_special_tokens=False)["input_ids"]
    after = answer_ids[answer_ids.index(tok.convert_tokens_to_ids(ASSISTANT)) + 1:]
    inside = tok(prompt, add_special_tokens=False)["input_ids"]
    first_word = tok(" 2023", add_special_tokens=False)["input_ids"]
    assert after[: len(first_word)] == first_word
    assert any(inside[i: i + len(first_word)] == first_word for i in range(len(inside)))


def test_default_size_is_a_few_million_parameters(tiny_tokenizer):
    model = load_policy(size=PolicySize(), tokenizer=tiny_tokenizer)
    assert 1e6 < model.num_parameters() < 1e7
    assert model.config.model_type == "llama"


def test_save_load_round_trip_is_identical(tmp_path, tiny_policy, tiny_tokenizer):
    ds_model = HFModelDataset(str(tmp_path / "policy"))
    ds_tok = HFModelDataset(str(tmp_path / "tok"), kind="tokenizer")
    ds_model.save(tiny_policy)
    ds_tok.save(tiny_tokenizer)
    assert list((tmp_path / "policy").glob("*.safetensors"))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary directory was renamed away
    loaded, tok = ds_model.load(), ds_tok.load()
    ids = torch.tensor([tok("Мост открыли в Казани.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(tiny_policy.eval()(ids).logits, loaded.eval()(ids).logits)


def test_directory_without_safetensors_is_refused(tmp_path, tiny_policy):
    tiny_policy.save_pretrained(tmp_path / "m")
    for f in (tmp_path / "m").glob("*.safetensors"):
        f.rename(f.with_name("pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match=r"no safetensors weights .*pytorch_model\.bin"):
        load_policy(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_policy(tmp_path)


def test_missing_model_dataset_names_what_to_run(tmp_path):
    with pytest.raises(Exception, match="run the pipeline that writes it first"):
        HFModelDataset(str(tmp_path / "nothing")).load()
