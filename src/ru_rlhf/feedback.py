"""The A/B app's votes as annotations and preference pairs: the one conversion every consumer uses.

The app stores votes (:mod:`ru_rlhf.io.feedback_store`); the catalog's ``AppFeedbackDataset`` reads them
with :func:`votes_to_long`; ``preference_curation`` turns them into pairs with
:func:`long_to_pairs`; ``python -m ru_rlhf.app export`` writes both. Kept below the pipelines and
the app so that neither imports the other.
"""

from __future__ import annotations

import pandas as pd

from ru_rlhf.text import same_text
from ru_rlhf.vocabulary import CRITERIA

VOTE_COLUMNS = ["id", "ts", "annotator", "prompt_id", "prompt", "models", "responses", "ratings", "choice",
                "chosen_model", "comment"]
LONG_VOTE_COLUMNS = ["item_id", "prompt_id", "response_id", "annotator_id", "criterion", "score", "choice",
                     "source", "prompt", "response", "model", "vote_id", "ts", "comment"]
PAIR_COLUMNS = ["pair_id", "prompt_id", "criterion", "prompt", "chosen", "rejected", "chosen_id", "rejected_id",
                "margin", "n_votes", "annotator_id", "source", "comment"]


def empty_votes() -> pd.DataFrame:
    """A vote table with no rows (a store that does not exist yet)."""
    return pd.DataFrame(columns=VOTE_COLUMNS)


def votes_to_long(votes: pd.DataFrame) -> pd.DataFrame:
    """The votes as the long annotation table (``item_id, annotator_id, criterion, score, choice``…),
    one row per response and criterion plus one ``overall`` row per vote with the chosen item.

    ``item_id`` is ``app:<vote id>:<slot>``; ``source`` is ``app``; ``comment`` is the voter's comment,
    exactly as typed, on every row of the vote.
    """
    rows = []
    for v in votes.itertuples(index=False):
        comment = getattr(v, "comment", "") or ""
        base = {"prompt_id": v.prompt_id or f"app:{v.id}", "annotator_id": v.annotator, "source": "app",
                "prompt": v.prompt, "vote_id": int(v.id), "ts": v.ts, "comment": comment}
        for slot, (model, resp, r) in enumerate(zip(v.models, v.responses, v.ratings)):
            for c in CRITERIA:
                rows.append({**base, "item_id": f"app:{v.id}:{slot}", "response_id": f"app:{v.id}:{slot}",
                             "criterion": c, "score": float(r[c]), "choice": None, "response": resp, "model": model})
        rows.append({**base, "item_id": f"app:{v.id}", "response_id": f"app:{v.id}:{v.choice}",
                     "criterion": "overall", "score": float("nan"), "choice": f"app:{v.id}:{v.choice}",
                     "response": v.responses[v.choice], "model": v.chosen_model})
    return pd.DataFrame(rows, columns=LONG_VOTE_COLUMNS)


def long_to_pairs(long: pd.DataFrame, margin: float = 1.0) -> tuple[pd.DataFrame, dict]:
    """Preference pairs in TRL's format from the long vote table (:func:`votes_to_long`).

    Per criterion, two responses of one vote whose ratings differ by at least ``margin``; overall, the
    chosen response over each other one. Two responses whose texts are the same after
    :func:`ru_rlhf.text.comparison_key` never make a pair (the app should not have served them; an
    older store may hold such votes).

    Returns:
        ``(pairs, counts)``: ``counts`` has ``votes``, ``pairs`` and ``dropped_identical_texts``.
    """
    rows, identical = [], 0
    if "comment" not in long.columns:
        long = long.assign(comment="")
    for vote_id, g in long.groupby("vote_id", sort=True):
        rated = g[g["criterion"] != "overall"]
        text = dict(zip(rated["response_id"], rated["response"]))
        prompt, pid, annotator = g["prompt"].iloc[0], g["prompt_id"].iloc[0], g["annotator_id"].iloc[0]
        base = {"prompt_id": pid, "prompt": prompt, "n_votes": 1, "annotator_id": annotator, "source": "app",
                "comment": g["comment"].iloc[0]}

        ordered = []  # (criterion, better, worse, margin) of this vote
        for c, gc in rated.groupby("criterion", sort=True):
            sc = dict(zip(gc["response_id"], gc["score"]))
            ordered += [(c, a, b, float(sa - sb)) for a, sa in sc.items() for b, sb in sc.items()
                        if a != b and sa - sb >= margin]
        for r in g[g["criterion"] == "overall"].itertuples(index=False):
            ordered += [("overall", r.choice, b, float("nan")) for b in text if b != r.choice]
        for criterion, a, b, m in ordered:
            if same_text(text[a], text[b]):
                identical += 1
                continue
            rows.append({**base, "pair_id": f"app:{vote_id}|{criterion}|{a}|{b}", "criterion": criterion,
                         "chosen": text[a], "rejected": text[b], "chosen_id": a, "rejected_id": b, "margin": m})
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    counts = {"votes": int(long["vote_id"].nunique()) if len(long) else 0, "pairs": len(pairs),
              "dropped_identical_texts": identical}
    return pairs, counts
