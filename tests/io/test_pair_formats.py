"""Preference pairs as users have them: TRL's standard and conversational formats (roles kept, rendered in the
project's chat format), TRL's implicit-prompt conversations, Anthropic HH text, and gzipped files."""

from __future__ import annotations

import gzip
import json

import pytest

from ru_rlhf.io.pairs import hh_pair, read_preference_pairs, render_prompt, validate_pairs
from ru_rlhf.models.policy import format_prompt

CONVERSATION = [{"role": "system", "content": "Отвечай кратко."}, {"role": "user", "content": "Кто мэр Казани?"},
                {"role": "assistant", "content": "Ильсур Метшин."}, {"role": "user", "content": "С какого года?"}]


def _write(path, records, gz: bool = False):
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_a_conversation_keeps_its_roles_in_the_policys_chat_format():
    assert format_prompt(render_prompt(CONVERSATION)) == (
        "<|user|>Отвечай кратко.\n\nКто мэр Казани?\n<|assistant|>Ильсур Метшин.\n<|user|>С какого года?\n<|assistant|>")
    assert render_prompt([{"role": "user", "content": "Привет?"}]) == "Привет?"  # one turn: its own text
    for bad, rule in (([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "end with a user"),
                      ([{"role": "critic", "content": "a"}], "unknown role"), ([], "non-empty")):
        with pytest.raises(TypeError, match=rule):
            render_prompt(bad)


def test_trl_formats_and_hh_text_read_into_prompt_chosen_rejected(tmp_path):
    hh_chosen = "\n\nHuman: Как дела?\n\nAssistant: Хорошо.\n\nHuman: А у тебя?\n\nAssistant: Отлично, спасибо."
    hh_rejected = "\n\nHuman: Как дела?\n\nAssistant: Хорошо.\n\nHuman: А у тебя?\n\nAssistant: Отстань."
    records = [
        {"prompt": "Сколько будет 2+2?", "chosen": "4", "rejected": "5"},  # standard
        {"prompt": CONVERSATION, "chosen": [{"role": "assistant", "content": "С 2010 года."}],
         "rejected": [{"role": "assistant", "content": "Не знаю."}]},  # conversational
        {"chosen": [*CONVERSATION, {"role": "assistant", "content": "С 2010 года."}],
         "rejected": [*CONVERSATION, {"role": "assistant", "content": "Давно."}]},  # implicit prompt
        {"chosen": hh_chosen, "rejected": hh_rejected},  # Anthropic HH
        {"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "user", "content": "b"}],
         "rejected": "c"},  # an answer that is not the assistant's
    ]
    pairs = read_preference_pairs(_write(tmp_path / "pairs.jsonl.gz", records, gz=True))
    kept, quarantine = validate_pairs(pairs)
    assert len(kept) + len(quarantine) == len(records) == len(pairs)
    rows = kept.set_index("source_row")
    assert rows.loc[1, ["prompt", "chosen", "rejected"]].tolist() == ["Сколько будет 2+2?", "4", "5"]
    assert rows.loc[2, "prompt"] == render_prompt(CONVERSATION) and rows.loc[2, "chosen"] == "С 2010 года."
    assert rows.loc[3, "prompt"] == render_prompt(CONVERSATION) and rows.loc[3, "rejected"] == "Давно."
    assert rows.loc[4, ["prompt", "chosen", "rejected"]].tolist() == [
        "Как дела?\n<|assistant|>Хорошо.\n<|user|>А у тебя?", "Отлично, спасибо.", "Отстань."]
    assert quarantine["source_row"].tolist() == [5] and "not the assistant's" in quarantine["rule"].iloc[0]


def test_hh_sides_that_differ_before_the_answer_are_refused():
    with pytest.raises(TypeError, match="differ before their last answer"):
        hh_pair("\n\nHuman: A?\n\nAssistant: B.", "\n\nHuman: C?\n\nAssistant: D.")
    with pytest.raises(TypeError, match="end with an Assistant"):
        hh_pair("\n\nHuman: A?", "\n\nHuman: A?")
