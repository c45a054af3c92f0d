"""The sft pipeline as a slice on an in-memory catalog, with a tiny model and a few prompts."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from ru_rlhf.pipelines.ingestion import create_pipeline as ingestion
from ru_rlhf.pipelines.sft import create_pipeline as sft
from ru_rlhf.pipelines.sft.nodes import generate_candidates
from ru_rlhf.schemas import TableError
from tests.conftest import TINY_SIZE, keep_catalog
from tests.params_helpers import base_params, merged

INGEST = base_params("ingestion", {"seed": 3, "prompts": {"per_task": 8, "min_tatar_share": 0.25}})


def sft_params(tmp_path) -> dict:
    stage = {"epochs": 1, "batch_size": 16, "logging_steps": 1, "save_steps": 5, "max_length": 256}
    return base_params("sft", {"seed": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "tokenizer": {"vocab_size": 600},
                               "policy": {"size": TINY_SIZE}, "pretrain": stage, "sft": stage,
                               "reading": {"documents": 10, "stage": {**stage, "max_steps": 3}},
                               "candidates": {"max_new_tokens": 8, "batch_size": 48}, "evaluation": {"max_prompts": 8}})


@pytest.fixture(scope="module")
def world_tables_for_sft(project_root):
    import json

    lines = (project_root / "data/01_raw/world_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return pd.DataFrame([json.loads(x) for x in lines])


@pytest.fixture(scope="module")
def sft_run(small_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    raw, facts = small_world
    keep = ["prompts", "candidates", "candidates_jsonl", "sft_summary", "pretrain_log", "sft_log", "sft_policy",
            "policy_tokenizer"]
    catalog = keep_catalog({"raw_corpus": raw, "world_facts": facts, "params:ingestion": INGEST,
                            "params:sft": sft_params(tmp)}, keep=keep)
    SequentialRunner().run(ingestion() + sft(), catalog)
    return catalog, tmp


def test_six_candidates_per_prompt_with_their_sampling(sft_run):
    catalog, _ = sft_run
    prompts, cands = catalog.load("prompts"), catalog.load("candidates")
    assert len(cands) == len(prompts) == 24
    assert cands["responses"].map(len).eq(6).all()
    grid = {(s["temperature"], s["top_p"]) for s in cands.loc[0, "sampling"]}
    assert grid == {(t, p) for t in (0.3, 0.7, 1.0) for p in (0.85, 0.95)}
    seeds = [s["seed"] for ss in cands["sampling"] for s in ss]
    assert len(set(seeds)) == len(seeds)
    jsonl = catalog.load("candidates_jsonl")
    assert list(jsonl.columns[:3]) == ["prompt", "responses", "task_type"]
    assert {"prompt_id", "lang", "split", "sampling"} <= set(jsonl.columns)


def test_losses_are_logged_per_step_and_checkpoints_written(sft_run):
    catalog, tmp = sft_run
    for name in ("pretrain_log", "sft_log"):
        log = catalog.load(name)
        for _, stage in log.groupby("stage"):
            assert len(stage) >= 2 and stage["step"].is_monotonic_increasing and stage["loss"].notna().all()
    # LM pre-training first, reading comprehension last before SFT (see pretrain_policy)
    assert list(dict.fromkeys(catalog.load("pretrain_log")["stage"])) == ["pretrain", "reading"]
    assert list((tmp / "ckpt" / "pretrain").glob("checkpoint-*"))
    summary = catalog.load("sft_summary")
    for key in ("qa_answer_rate", "pretrained_validation_perplexity", "sft_validation_perplexity"):
        assert key in summary
    assert 0 <= summary["candidates"]["mean_distinct_2"] <= 1
    assert summary["candidates"]["pairs"] == 24 * 6


def test_empty_prompt_is_a_schema_error_naming_the_row(sft_run):
    catalog, tmp = sft_run
    prompts = catalog.load("prompts").copy()
    prompts.loc[3, "prompt"] = "  "
    with pytest.raises(TableError, match=rf"row 3 \({prompts.loc[3, 'prompt_id']}\): prompt:non_empty_prompt"):
        generate_candidates(catalog.load("sft_policy"), catalog.load("policy_tokenizer"), prompts, sft_params(tmp))
    with pytest.raises(TableError, match=r"missing column\(s\) \['split'\]"):
        generate_candidates(None, None, prompts.drop(columns=["split"]), sft_params(tmp))


def test_candidate_frame_round_trips_through_parquet(sft_run, tmp_path):
    cands = sft_run[0].load("candidates")
    cands.to_parquet(tmp_path / "c.parquet")
    back = pd.read_parquet(tmp_path / "c.parquet")
    assert list(back.loc[0, "responses"]) == list(cands.loc[0, "responses"])


def test_reading_examples_come_from_fresh_documents(world_tables_for_sft):
    from ru_rlhf.pipelines.sft.nodes import reading_examples

    ex = reading_examples(20, seed=99, tatar_share=0.25)
    assert len(ex) >= 20 * 4 and {"prompt", "completion", "context", "item"} == set(ex.columns)
    assert ex["prompt"].str.startswith("<|user|>").all() and (ex["context"] == "document").all()
    corpus_texts = set(world_tables_for_sft["text"])
    assert not any(t in p for p in ex["prompt"] for t in list(corpus_texts)[:50])


def test_reading_passages_hold_the_answer_and_easy_questions_are_thinned():
    from ru_rlhf.pipelines.sft.nodes import EASY_ITEMS, reading_examples

    full = reading_examples(60, seed=5, tatar_share=0.25)
    mixed = reading_examples(60, seed=5, tatar_share=0.25, passage_share=1.0, passage_extra_sentences=1,
                             easy_keep=0.2)
    passages = mixed[mixed["context"] == "passage"]
    assert len(passages) >= 0.9 * len(mixed)  # nearly every answer sits in one sentence
    assert passages["prompt"].str.len().mean() < 0.6 * full["prompt"].str.len().mean()
    # the answer (its first word) is in the passage the question is asked on
    first_words = passages["completion"].str.strip(".").str.split().str[0].str.strip("«»")
    assert all(w.lower() in p.lower() for w, p in zip(first_words, passages["prompt"]))
    easy_full, easy_mixed = full["item"].isin(EASY_ITEMS).sum(), mixed["item"].isin(EASY_ITEMS).sum()
    assert 0 < easy_mixed < 0.4 * easy_full
    assert (~mixed["item"].isin(EASY_ITEMS)).sum() == (~full["item"].isin(EASY_ITEMS)).sum()


def test_prompts_with_identical_responses_are_redrawn_and_recorded(sft_run):
    """A near-greedy grid makes every prompt's responses the same; the redraw draws the hottest row
    again at its own temperature and records it, and without attempts nothing changes."""
    catalog, tmp = sft_run
    policy, tok, prompts = catalog.load("sft_policy"), catalog.load("policy_tokenizer"), catalog.load("prompts")
    params = sft_params(tmp)
    near_greedy = {"temperatures": [0.01], "top_ps": [0.5, 0.6]}
    off = merged(params, {"candidates": {**near_greedy, "redraw": {"attempts": 0}}})
    on = merged(params, {"candidates": {**near_greedy, "redraw": {"attempts": 2, "temperature": 1.5, "rows": 1}}})
    before, stats_off = generate_candidates(policy, tok, prompts, off)
    after, stats_on = generate_candidates(policy, tok, prompts, on)
    same_before = before["responses"].map(lambda rs: len(set(rs)) == 1)
    same_after = after["responses"].map(lambda rs: len(set(rs)) == 1)
    assert same_before.sum() == stats_on["redraw"]["prompts_identical_before"] >= len(prompts) // 2
    assert stats_off["redraw"]["rows_redrawn"] == 0
    assert same_after.sum() == stats_on["redraw"]["prompts_still_identical"] < same_before.sum()
    for i in same_before[same_before].index:
        first, hot = after.loc[i, "sampling"]
        assert first["redraw"] == 0 and first["temperature"] == 0.01  # the colder row is kept
        assert after.loc[i, "responses"][0] == before.loc[i, "responses"][0]
        assert hot["redraw"] >= 1 and hot["temperature"] == 1.5 and hot["top_p"] == 1.0
    for i in same_before[~same_before].index:  # prompts that already differed are untouched
        assert list(after.loc[i, "responses"]) == list(before.loc[i, "responses"])
