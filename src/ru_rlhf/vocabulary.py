"""The project's fixed names, defined once: the criteria, the reward model's heads, the alignment methods.

Every stage, the app and the reports import them from here, so a criterion or a method is added in one place.
"""

from __future__ import annotations

# what the gold judges score, the annotators and experts rate and the app asks about, in this order
CRITERIA = ("helpfulness", "truthfulness", "harmlessness")

# the multi-head reward model's heads: one per criterion, in the same order
HEADS = CRITERIA

# the alignment methods in the order they are trained and reported, each with its kind: "preference" (a
# pairwise loss on preference pairs: DPO, IPO), "hindsight" (SFT on feedback-conditioned pairs), "rl" (our own
# PPO, REINFORCE against the reward model), "trl_rl" (GRPO, RLOO against the reward model with TRL's own trainers)
# or "cem" (SFT on the reward model's best samples)
METHODS = {
    "dpo": "preference",
    "ipo": "preference",
    "coh": "hindsight",
    "ppo": "rl",
    "reinforce": "rl",
    "grpo": "trl_rl",
    "rloo": "trl_rl",
    "cem": "cem",
}

# the audit's runs of the same method template, kept out of the method comparison: the oracle runs (reward: gold,
# the gold judges' mean, Gao et al.'s setup: how far each optimiser gets when the reward is the measure itself,
# so a gap between a method and its oracle is the reward model's) and PPO run past its KL budget (the
# over-optimisation curve: gold rising, peaking and falling while the proxy keeps rising)
AUDIT_RUNS = {
    "ppo_gold": "rl",
    "reinforce_gold": "rl",
    "grpo_gold": "trl_rl",
    "rloo_gold": "trl_rl",
    "ppo_long": "rl",
}

# every instance of the alignment template, with its kind
RUNS = {**METHODS, **AUDIT_RUNS}
