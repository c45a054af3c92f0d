"""Checks shared by the scale-out tests: what each kept `accelerate launch` work directory must hold."""

from __future__ import annotations

import json
from pathlib import Path


def check_launches(keep: Path, task: str, expected: int | None = None) -> list[dict]:
    """Check every kept launch: two ranks, gloo, both stepped, in lockstep, and rank 0's saved model
    loads; return rank 0's reports."""
    launches = sorted(keep.iterdir())
    assert launches, "no distributed launch happened"
    if expected is not None:
        assert len(launches) == expected
    reports = []
    for w in launches:
        assert w.name.startswith(task)
        ranks = [json.loads((w / f"rank_{i}.json").read_text()) for i in range(2)]
        assert [r["rank"] for r in ranks] == [0, 1]
        assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
        assert all(r["steps"] > 0 for r in ranks)  # both ranks stepped
        assert ranks[0]["steps"] == ranks[1]["steps"]  # in lockstep
        if task == "rm":  # what rank 0 saved loads (safetensors only)
            from ru_rlhf.models.reward import load_reward_model

            load_reward_model(w / "out")
        else:
            from ru_rlhf.models.policy import load_policy

            load_policy(w / "out")
        reports.append({**ranks[0], "workdir": w})
    return reports
