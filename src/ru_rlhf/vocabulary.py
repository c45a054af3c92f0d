"""The project's fixed names, defined once: the criteria, the reward model's heads, the alignment methods.

Every stage, the app and the reports import them from here, so a criterion or a method is added in one place.
"""

from __future__ import annotations

# what the gold judges score, the annotators and experts rate and the app asks about, in this order
CRITERIA = ("helpfulness", "truthfulness", "harmlessness")

# the multi-head reward model's heads: one per criterion, in the same order
HEADS = CRITERIA

# the alignment methods in the order they are trained and reported, each with its kind: "preference" (a
# pairwise loss on preference pairs: DPO, IPO), "hindsight" (SFT on feedback-conditioned pairs), "rl" (PPO,
# REINFORCE against the reward model) or "cem" (SFT on the reward model's best samples)
METHODS = {
    "dpo": "preference",
    "ipo": "preference",
    "coh": "hindsight",
    "ppo": "rl",
    "reinforce": "rl",
    "cem": "cem",
}
