"""The best-state rule every RL loop shares (:class:`ru_rlhf.rl.selection.BestState`), against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ru_rlhf.rl.selection import BestState


class _FakePolicy:
    """Enough of a policy: one weight, ``state_dict`` and ``save_pretrained`` (a folder)."""

    def __init__(self, weight: float = 0.0):
        self.weight = torch.tensor([weight])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.weight}

    def save_pretrained(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)


def _best(tmp_path: Path | None, scores: list[float], **kw) -> BestState:
    it = iter(scores)
    return BestState(lambda policy: {"score": next(it), "probe_gold": 0.5}, tmp_path,
                     **{"best_max_kl": None, "kl_window": 3, "patience": 2, **kw})


def test_smoothed_kl_is_the_mean_over_the_window_leaving_out_missing_kls():
    best = _best(None, [], kl_window=3)
    rows = [{"kl": 9.0}, {"kl": 0.1}, {"kl": None}, {"kl": float("nan")}, {"kl": 0.3}]
    assert best.smoothed_kl(rows) == pytest.approx(0.3)  # the last 3 rows: None, NaN, 0.3 → 0.3 / 1
    rows.append({"kl": 0.5})  # the window: NaN, 0.3, 0.5 → 0.4
    assert best.smoothed_kl(rows) == pytest.approx(0.4)
    assert best.smoothed_kl([{"step": 0}, {"kl": None}]) == 0.0  # no KL in the window
    assert best.smoothed_kl([]) == 0.0


def test_a_better_score_beyond_best_max_kl_is_not_taken_and_counts_as_bad(tmp_path):
    best = _best(tmp_path, [1.0, 2.0, 1.5], best_max_kl=0.1, kl_window=1)
    policy = _FakePolicy(1.0)
    best.evaluate(policy, 0, [])  # no KL yet: 0 ≤ 0.1, eligible
    assert (best.score, best.step, best.bad_evals) == (1.0, 0, 0)
    assert best.state["w"].tolist() == [1.0] and best.state["w"] is not policy.weight  # a copy, not the tensor
    policy.weight = torch.tensor([2.0])
    res = best.evaluate(policy, 5, [{"kl": 0.05}, {"kl": 0.2}])  # smoothed KL 0.2 > 0.1: 2.0 is not taken
    assert res["score"] == 2.0 and res["probe_gold"] == 0.5
    assert (best.score, best.step, best.bad_evals) == (1.0, 0, 1) and best.state["w"].tolist() == [1.0]
    policy.weight = torch.tensor([3.0])
    best.evaluate(policy, 10, [{"kl": 0.2}, {"kl": 0.05}])  # 0.05 ≤ 0.1 and 1.5 > 1.0: the new best
    assert (best.score, best.step, best.bad_evals) == (1.5, 10, 0) and best.state["w"].tolist() == [3.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step-0005", "step-0010"]  # step 0 is not saved


def test_only_the_main_process_writes(tmp_path):
    best = _best(tmp_path, [1.0, 2.0], is_main=False)
    best.evaluate(_FakePolicy(), 0, [])
    best.evaluate(_FakePolicy(), 1, [])
    assert best.step == 1 and list(tmp_path.iterdir()) == []


def test_patience_stops_after_that_many_evaluations_without_a_better_score():
    best = _best(None, [2.0, 2.0, 1.0, 3.0, 1.0, 3.0 + 1e-12], patience=2)
    reasons = []
    for step in range(6):
        best.evaluate(_FakePolicy(), step, [])
        reasons.append(best.stop_reason())
    # 2.0 best; equal: bad (1); lower: bad (2) → stop; 3.0 resets; lower: 1; a gain under 1e-9: 2 → stop
    assert [r is not None for r in reasons] == [False, False, True, False, False, True]
    assert reasons[2] == "early stop: no better probe score in 2 evaluations"
    assert best.score == 3.0 and best.step == 3


def test_no_patience_stop_without_an_evaluation_function():
    best = BestState(None, None, best_max_kl=None, kl_window=1, patience=0)
    assert best.score == -math.inf and best.stop_reason() is None


def test_clearing_removes_an_earlier_runs_states_and_nothing_else(tmp_path):
    for name in ("step-0001", "step-0010", "best", "resume", "trainer"):
        (tmp_path / name).mkdir()
    (tmp_path / "step-0001" / "model.safetensors").write_text("x")
    (tmp_path / "log.csv").write_text("step\n")
    _best(tmp_path, []).clear_earlier_run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "resume", "trainer"]
    (tmp_path / "best").mkdir()
    _best(tmp_path, [], is_main=False).clear_earlier_run()  # another rank: leaves it
    _best(None, []).clear_earlier_run()  # no folder: nothing to do
    assert (tmp_path / "best").is_dir()
