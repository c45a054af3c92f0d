"""Shared text metrics."""

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
