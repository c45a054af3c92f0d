"""The best state of an RL run, chosen by the probe: the one place this rule lives.

Every RL loop of the project (our PPO and REINFORCE in :mod:`ru_rlhf.rl.loop`, TRL's GRPO and RLOO in
:mod:`ru_rlhf.rl.trl_online`) keeps its best state with :class:`BestState`: every evaluated state is saved under
``checkpoint_dir/step-NNNN``; a state is the new best when its probe score beats the best so far and the smoothed
KL (the mean ``kl`` of the last ``kl_window`` log rows) is within ``best_max_kl``; the best is kept in memory and
saved under ``checkpoint_dir/best``; the run stops after ``patience`` evaluations without a new best. A fresh run
first clears an earlier run's ``step-*`` and ``best`` folders, so no earlier states are mixed into its curve.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class BestState:
    """One run's best state by the probe score within ``best_max_kl``, and the evaluations since it last improved.

    ``score``, ``step`` and ``state`` (a detached copy of the policy's state dict; None before any eligible
    evaluation) are the best so far, ``bad_evals`` the evaluations since; a resumable run saves and restores them.
    Only the main process (``is_main``) writes folders; without ``checkpoint_dir`` nothing is written.
    """

    def __init__(self, evaluate_fn: Callable[[object], dict] | None, checkpoint_dir: str | Path | None, *,
                 best_max_kl: float | None, kl_window: int, patience: int, is_main: bool = True):
        self.evaluate_fn = evaluate_fn  # the policy -> a dict with ``score`` (higher is better) and more to log
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.best_max_kl, self.kl_window, self.patience, self.is_main = best_max_kl, kl_window, patience, is_main
        self.score: float = -math.inf
        self.step: int = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.bad_evals: int = 0

    def smoothed_kl(self, rows: Sequence[dict]) -> float:
        """The mean ``kl`` of the last ``kl_window`` log rows, leaving out rows without one (None, NaN); 0 if none."""
        recent = [r["kl"] for r in rows[-self.kl_window:] if r.get("kl") is not None and r["kl"] == r["kl"]]
        return sum(recent) / len(recent) if recent else 0.0

    def evaluate(self, policy, step: int, rows: Sequence[dict]) -> dict:
        """Save ``policy`` as ``step-NNNN`` (step > 0), score it; keep it as the best if it scores better while the
        smoothed KL of ``rows`` (the log so far) is within ``best_max_kl``, else count a bad evaluation. Returns the
        evaluation's dict."""
        ckpt = self.checkpoint_dir
        if ckpt is not None and step > 0 and self.is_main:  # every evaluated state is kept (the audit scores them all)
            policy.save_pretrained(ckpt / f"step-{step:04d}")
        res = self.evaluate_fn(policy)
        eligible = self.best_max_kl is None or self.smoothed_kl(rows) <= self.best_max_kl
        if eligible and res["score"] > self.score + 1e-9:
            self.score, self.step = res["score"], step
            self.state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            self.bad_evals = 0
            if ckpt is not None and self.is_main:
                policy.save_pretrained(ckpt / "best")
        else:
            self.bad_evals += 1
        return res

    def stop_reason(self) -> str | None:
        """The early stop's reason once ``patience`` evaluations in a row found no better state, else None (and
        always None without an evaluation function)."""
        if self.evaluate_fn is not None and self.bad_evals >= self.patience:
            return f"early stop: no better probe score in {self.patience} evaluations"
        return None

    def clear_earlier_run(self) -> None:
        """Remove an earlier run's ``step-*`` and ``best`` folders from ``checkpoint_dir`` (main process only);
        anything else there is left."""
        if self.checkpoint_dir is None or not self.is_main:
            return
        for old in [*self.checkpoint_dir.glob("step-*"), self.checkpoint_dir / "best"]:
            shutil.rmtree(old, ignore_errors=True)
