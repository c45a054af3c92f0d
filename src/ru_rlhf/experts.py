"""The simulated expert panel (see docs/method.md): three low-noise experts who rate through the gold judges.

SIMULATED: no human expert is reachable here. Each expert gives a 1–5 Likert score per criterion,
``round(1 + 4·gold + noise)`` with a small noise of their own and none of the annotators' length or
sycophancy biases, and pairwise A/B choices from their Likert means. The noise is drawn from a
stream seeded by the expert, the prompt and the response text, so the same response always gets
the same scores (a probe set scored twice gives the same number). Real expert votes come from the
app and replace this channel through the annotation formats.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ru_rlhf.judges import JudgeContext, score_all
from ru_rlhf.vocabulary import CRITERIA


@dataclass(frozen=True)
class Expert:
    expert_id: str
    noise_sd: float


PANEL = (Expert("expert_1", 0.20), Expert("expert_2", 0.25), Expert("expert_3", 0.30))


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("|".join(map(str, parts)).encode("utf-8")))


def likert(gold: dict[str, float], expert: Expert, prompt_id: str, response: str) -> dict[str, int]:
    """One expert's 1–5 scores of one response, per criterion."""
    noise = _rng(expert.expert_id, prompt_id, response).normal(0.0, expert.noise_sd, len(CRITERIA))
    return {c: int(np.clip(np.rint(1 + 4 * gold[c] + n), 1, 5)) for c, n in zip(CRITERIA, noise)}


def rate(contexts: dict[str, JudgeContext], prompt_ids: list[str], responses: list[str],
         panel: tuple[Expert, ...] = PANEL) -> pd.DataFrame:
    """Likert scores of every (prompt, response) by every expert.

    Returns:
        One row per response and expert: ``prompt_id, row, expert_id``, the three criteria, and
        ``likert`` (their mean). Labelled ``source = "simulated_expert"``.
    """
    rows = []
    for i, (pid, resp) in enumerate(zip(prompt_ids, responses)):
        gold = score_all(contexts[pid], resp)
        for e in panel:
            s = likert(gold, e, pid, resp)
            rows.append({"prompt_id": pid, "row": i, "expert_id": e.expert_id, **s,
                         "likert": float(np.mean(list(s.values()))), "source": "simulated_expert"})
    return pd.DataFrame(rows)


def panel_score(contexts: dict[str, JudgeContext], prompt_ids: list[str], responses: list[str]) -> float:
    """The panel's mean Likert score (1–5) over responses, experts and criteria."""
    if not responses:
        return float("nan")
    return float(rate(contexts, prompt_ids, responses)["likert"].mean())


def pairwise(contexts: dict[str, JudgeContext], prompt_ids: list[str], responses_a: list[str],
             responses_b: list[str], panel: tuple[Expert, ...] = PANEL) -> pd.DataFrame:
    """Each expert's A/B choice per prompt: ``a``, ``b`` or ``tie`` (equal Likert means).

    Returns:
        One row per prompt and expert: ``prompt_id, expert_id, likert_a, likert_b, choice``.
    """
    a = rate(contexts, prompt_ids, responses_a, panel)
    b = rate(contexts, prompt_ids, responses_b, panel)
    out = a[["prompt_id", "row", "expert_id"]].copy()
    out["likert_a"], out["likert_b"] = a["likert"].to_numpy(), b["likert"].to_numpy()
    out["choice"] = np.where(out["likert_a"] > out["likert_b"], "a",
                             np.where(out["likert_a"] < out["likert_b"], "b", "tie"))
    return out


def win_rate(choices: pd.DataFrame) -> float:
    """Share of A/B choices won by A, ties counting half."""
    if choices.empty:
        return float("nan")
    return float(((choices["choice"] == "a") + 0.5 * (choices["choice"] == "tie")).mean())
