"""Scale-out of GRPO (TRL's GRPOTrainer, ``ru_rlhf.rl.trl_online``) on 2 CPU processes (gloo), on a tiny policy:
``ru_rlhf.distributed.trl_rl`` launches the workers, TRL's trainer distributes itself, every rank scores the probe on
the same weights and rank 0 writes the checkpoints; the parent gets rank 0's policy, log and info back."""

from __future__ import annotations

import pytest

from tests.params_helpers import base_params
from tests.pipelines.preference_curation.conftest import world_tables  # noqa: F401
from tests.scaleout.launches import check_launches


@pytest.mark.e2e
def test_grpo_on_two_processes(world_tables, tiny_policy, tiny_tokenizer, tmp_path):  # noqa: F811
    from ru_rlhf import distributed
    from ru_rlhf.io.datasets import saved_checkpoints
    from ru_rlhf.pipelines.alignment.nodes import select_alignment_prompts
    from ru_rlhf.pipelines.alignment.params import TrlRLParams

    docs, facts, prompts = world_tables
    table = select_alignment_prompts(prompts, facts, docs, base_params("alignment.common", {
        "seed": 3, "train_prompts": 16, "probe_prompts": 4}))
    train, probe = (table[table["role"] == r].reset_index(drop=True) for r in ("train", "probe"))
    p = TrlRLParams.of(base_params("alignment.grpo.train", {
        "steps": 2, "batch_size": 4, "num_generations": 2, "max_new_tokens": 4, "eval_every": 2}))
    keep = tmp_path / "launches"
    dist = distributed.DistributedParams(num_processes=2, keep_workdir=str(keep))
    policy, log, info = distributed.trl_rl(
        tiny_policy, tiny_policy, tiny_tokenizer, None, train, probe, dist, method="grpo", trl=p.trl(),
        reward="gold", seed=3, checkpoint_dir=str(tmp_path / "ckpt"), reward_weights=None, max_new_tokens=4,
        batch_size=8, desc="grpo on two processes")
    (report,) = check_launches(keep, "trl_rl", expected=1)  # two gloo ranks, both stepped, in lockstep
    assert report["steps"] == 2 and info["processes"] == 2 and info["steps_run"] == 2
    assert list(saved_checkpoints(tmp_path / "ckpt")) == ["step-0002"]  # written once, by rank 0
    assert log["reward"].iloc[1:].notna().all() and policy.num_parameters() == tiny_policy.num_parameters()
