"""Scale-out of the other training nodes: SFT, CEM and the reward model on 2 CPU processes (gloo).

The nodes are called as Kedro calls them, on the session's smoke run's inputs (the ``smoke_run`` fixture,
loaded through the smoke catalog), with ``distributed.num_processes=2``: each training step goes to ``accelerate launch``,
and the node returns the trained model in this process. Each launch's work directory is kept, so
the test reads every rank's own report (rank, world size, backend, steps) and loads what rank 0
saved. Nothing is written to the smoke catalog.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import env_context
from tests.scaleout.launches import check_launches


@pytest.fixture(scope="module")
def smoke_context(project_root, smoke_run):
    with env_context("smoke", smoke_run.root, project_root) as context:
        yield context


def _distributed(keep: Path) -> dict:
    return {"num_processes": 2, "keep_workdir": str(keep)}


@pytest.mark.e2e
def test_sft_node_on_two_processes(smoke_context, tmp_path):
    from ru_rlhf.models.policy import load_policy
    from ru_rlhf.pipelines.sft.nodes import sft_policy

    cat, keep = smoke_context.catalog, tmp_path / "launches"
    params = {**smoke_context.params["sft"], "checkpoint_dir": str(tmp_path / "ckpt"),
              "distributed": _distributed(keep)}
    model, history = sft_policy(cat.load("pretrained_policy"), cat.load("policy_tokenizer"),
                                cat.load("demonstrations"), params)
    (report,) = check_launches(keep, "sft", expected=1)
    assert len(history) > 0 and history["step"].max() == report["steps"]
    saved = load_policy(report["workdir"] / "out")
    assert saved.num_parameters() == model.num_parameters() > 0


@pytest.mark.e2e
def test_reward_model_node_on_two_processes(smoke_context, tmp_path):
    from ru_rlhf.models.reward import load_reward_model, score
    from ru_rlhf.pipelines.reward_modeling.nodes import _training_pairs, train_multi_head_rm
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams

    cat, keep = smoke_context.catalog, tmp_path / "launches"
    params = {**smoke_context.params["reward_modeling"], "checkpoint_dir": str(tmp_path / "ckpt"),
              "distributed": _distributed(keep)}
    pairs = cat.load("preference_pairs")
    (rm, tok), history, _ = train_multi_head_rm(pairs, cat.load("encoder"), cat.load("sft_policy"),
                                                cat.load("policy_tokenizer"), params)
    (report,) = check_launches(keep, "rm", expected=1)
    # the global batch is split across ranks, so the step count is the single-process one
    p = RewardParams.of(params)
    n = len(_training_pairs(pairs, p))
    steps = history[history["kind"] == "step"]
    assert report["steps"] == len(steps) == max(1, int(math.ceil(n / p.train.batch_size) * p.train.epochs))
    # every rank evaluated the same validation pairs, and the state kept is one of those evaluated
    assert (history["kind"] == "eval").any() and history["best"].sum() == 1
    # what rank 0 saved is what the node returned (same scores)
    saved, saved_tok = load_reward_model(report["workdir"] / "out")
    prompts, responses = ["Вопрос: сколько?"] * 2, ["Ответ: два.", "Не знаю."]
    a = score(rm, tok, prompts, responses)
    b = score(saved, saved_tok, prompts, responses)
    assert (a[list(rm.heads)].to_numpy() == b[list(rm.heads)].to_numpy()).all()


@pytest.mark.e2e
def test_cem_node_on_two_processes(smoke_context, tmp_path):
    from ru_rlhf.pipelines.alignment.nodes import train_cem

    cat, keep = smoke_context.catalog, tmp_path / "launches"
    params = smoke_context.params["alignment"]
    common = {**params["common"], "checkpoint_dir": str(tmp_path / "ckpt"), "distributed": _distributed(keep)}
    train = {**params["cem"]["train"], "iterations": 1}
    policy, step_log, info = train_cem(cat.load("sft_policy"), cat.load("reference_policy"),
                                       cat.load("policy_tokenizer"), cat.load("reward_model"),
                                       cat.load("alignment_prompts"), common, train)
    (report,) = check_launches(keep, "sft", expected=1)  # one SFT step per CEM iteration
    assert list(step_log["step"]) == [0, 1] and info["iterations"] == 1
    assert policy.num_parameters() > 0
