"""Scale-out: DPO and PPO nodes run their training under `accelerate launch` with 2 CPU processes.

On a copy of the session's smoke run (the ``smoke_run`` fixture), the alignment nodes of DPO and PPO are
run again with ``alignment.common.distributed.num_processes=2``: each node launches two gloo workers, the
rest of the graph runs once in the parent. The test checks that both ranks stepped (their own reports),
that they used gloo, and that the saved policy loads from safetensors.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_kedro
from tests.scaleout.launches import check_launches


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["dpo", "ppo"])
def test_training_node_runs_on_two_processes(smoke_run, tmp_path, method):
    from ru_rlhf.models.policy import load_policy

    root = smoke_run.copy_to(tmp_path / "smoke")  # the run writes this method's outputs again
    keep = tmp_path / "launches"
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "alignment", "--namespaces", f"alignment.{method}",
                     "--params", f"alignment.common.distributed.num_processes=2,"
                                 f"alignment.common.distributed.keep_workdir={keep}"], timeout=900, data_root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    task = "dpo" if method == "dpo" else "rl"
    check_launches(keep, task)  # two gloo ranks per launch, both stepped, in lockstep; rank 0's model loads
    info = json.loads((root / "08_reporting" / "alignment" / f"{method}_info.json").read_text())
    if method == "ppo":
        assert info["processes"] == 2
    policy = load_policy(root / "06_models" / "policies" / method)  # the node's output, written by the parent
    assert policy.num_parameters() > 0
