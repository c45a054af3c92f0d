"""A tiny data root the app can serve from: a tokenizer, four tiny policies, a few test prompts."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from tests.conftest import TINY_SIZE

MODEL_IDS = ("sft", "dpo", "ppo", "cem")


def app_client(url: str, **kwargs):
    """A ``gradio_client.Client`` of the app at ``url`` (plain HTTP on this machine).

    ``ssl_verify=False``: gradio_client makes a new httpx client for most of its requests, and with verification on
    each of them parses the whole CA bundle, although a plain-HTTP URL never uses it: 5.5x the client's CPU time
    when 50 clients vote 4 times each (44.7 -> 8.1 s), which the app's server then waits for on a 2-core machine.
    """
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_data_root(tmp_path_factory, small_world):
    from ru_rlhf.models.policy import load_policy, train_tokenizer

    raw, _ = small_world
    root = tmp_path_factory.mktemp("app_data")
    tok = train_tokenizer(raw["text"].tolist(), vocab_size=600, model_max_length=256)
    tok.save_pretrained(root / "06_models" / "tokenizer")
    for i, m in enumerate(MODEL_IDS):
        path = root / "06_models" / ("sft_policy" if m == "sft" else f"policies/{m}")
        load_policy(size=TINY_SIZE, tokenizer=tok, seed=i).save_pretrained(path)
    (root / "03_primary").mkdir(parents=True)
    pd.DataFrame({"prompt_id": ["p-test-1", "p-test-2", "p-train-1"], "split": ["test", "test", "train"],
                  "lang": ["ru", "tt", "ru"], "task_type": ["qa", "dialogue", "qa"],
                  "prompt": ["Ответь на вопрос по тексту.\nТекст: В Казани открыли мост.\nВопрос: Что открыли?",
                             "Бу хәбәргә ничек итеп әдәпле җавап бирергә?\nЯңалык: Казанда мост ачылды.\nХәбәр: Рәхмәт!",
                             "Ответь на вопрос по тексту.\nТекст: В Елабуге прошёл фестиваль.\nВопрос: Где?"]}
                 ).to_parquet(root / "03_primary" / "prompts.parquet")
    return root


@pytest.fixture()
def service(app_data_root, tmp_path):
    from ru_rlhf.app.service import ABService, AppConfig

    return ABService(AppConfig(data_root=str(app_data_root), store=str(tmp_path / "votes.sqlite"), max_new_tokens=4))
