"""Shared text metrics."""

import numpy as np
import pytest

from ru_rlhf.metrics import distinct_n, is_tatar


def test_distinct_n():
    assert distinct_n(["а б в", "а б в"], 2) == 0.5  # 2 unique bigrams of 4
    assert distinct_n(["а б в", "г д е"], 2) == 1.0
    assert distinct_n(["а", ""], 2) == 0.0


def test_is_tatar():
    assert is_tatar("2023 елның 12 маенда Казанда яңа күпер ачылды.")
    assert is_tatar("35 кеше")
    assert not is_tatar("В Казани открыли новый мост 12 мая 2023 года.")
    assert not is_tatar("Когда это было? Всегда места хватало.")
    assert not is_tatar("")


# --------------------------------------------------------------------------- evaluation metrics
def test_self_bleu_of_identical_and_disjoint_texts():
    from ru_rlhf.metrics import self_bleu

    assert self_bleu(["в Казани открыли новый мост"] * 3) == pytest.approx(100.0)
    assert self_bleu(["один два три четыре", "пять шесть семь восемь"]) == pytest.approx(0.0)
    assert np.isnan(self_bleu(["одна строка"]))


def test_mtld_against_hand_computed_values():
    from ru_rlhf.metrics import mtld

    # one word repeated: TTR falls to 0.5 < 0.72 at every second token, so a factor closes every 2 tokens
    assert mtld("а " * 10) == pytest.approx(2.0)
    # "кот пёс" repeated: TTR 1, 1, 2/3 → a factor every 3 tokens (2 factors in 8 tokens, remainder TTR 1
    # adds 0) → 8 / 2 = 4 both ways
    assert mtld("кот пёс кот пёс кот пёс кот пёс") == pytest.approx(4.0)
    assert np.isnan(mtld(""))


def test_factual_consistency_on_hand_made_cases():
    from ru_rlhf.judges import JudgeContext, factual_claims

    ctx = JudgeContext(task_type="qa", lang="ru", source_text="В Казани 5 мая 2021 года открыли мост длиной 300 метров.",
                       fact_surfaces=("Казань", "5 мая 2021 года", "300 метров"))
    assert factual_claims(ctx, "Мост открыли в Казани 5 мая 2021 года.") == (2, 2)
    supported, total = factual_claims(ctx, "Мост открыли в Самаре 7 мая 2021 года, его длина 300 метров.")
    assert total == 3 and supported == 1
    assert factual_claims(ctx, "Здравствуйте!") == (0, 0)


def test_win_rate_ci_on_a_fixed_sample():
    from ru_rlhf.metrics import bootstrap_ci

    wins = np.array([1.0] * 60 + [0.0] * 30 + [0.5] * 10)  # 65 % with ties counting half
    m, lo, hi = bootstrap_ci(wins, n_boot=4000, seed=0)
    assert m == pytest.approx(0.65)
    # the normal approximation: sd ≈ 0.46 / √100 → a 95 % CI of about ±0.09
    assert lo == pytest.approx(0.56, abs=0.02) and hi == pytest.approx(0.74, abs=0.02)


def test_ngram_shift_is_zero_for_the_same_texts_and_names_the_changes():
    from ru_rlhf.metrics import ngram_shift

    same = ngram_shift(["рад помочь вам"], ["рад помочь вам"])
    assert same["jsd"] == 0.0
    diff = ngram_shift(["рад помочь вам"] * 3, ["мост открыли в казани"] * 3)
    assert diff["jsd"] == pytest.approx(1.0)
    assert diff["increased"][0][0] in {"мост открыли", "открыли в", "в казани"}
    assert {g for g, _ in diff["decreased"]} == {"рад помочь", "помочь вам"}


def test_bertscore_loads_the_encoder_from_a_path_holding_t5(tmp_path, small_world):
    # bert-score loads any model name containing "t5" as a T5 encoder: a data root such as /tmp/smoke_run-x1t5ab
    # failed the evaluation stage with a T5 config error
    from ru_rlhf.metrics import bertscore_f1
    from ru_rlhf.models.encoder import load_encoder, train_wordpiece_tokenizer

    tok = train_wordpiece_tokenizer(small_world[0]["text"].tolist(), vocab_size=500, model_max_length=128)
    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 128}
    encoder = load_encoder(size=size, tokenizer=tok, seed=1)
    paths = [tmp_path / "plain" / "encoder", tmp_path / "run-x1t5ab" / "encoder"]
    for path in paths:
        encoder.save_pretrained(path)
        tok.save_pretrained(path)
    cands, refs = ["В Казани открыли мост.", ""], ["Мост открыли в Казани.", "Мост."]
    plain, t5 = (bertscore_f1(cands, refs, str(p), num_layers=2) for p in paths)
    assert plain[1] == t5[1] == 0.0 and 0 < plain[0] <= 1
    assert t5[0] == pytest.approx(plain[0], abs=1e-6)
