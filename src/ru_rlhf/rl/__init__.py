"""Reinforcement learning from the reward model, our own PPO and REINFORCE: the shared loop (``loop.py``: rollouts,
KL controller, evaluation, early stops, resume), its rollouts (``rollout.py``) and losses (``losses.py``), each
algorithm's config and update (``ppo.py``, ``reinforce.py``), the typed parameters (``params.py``) and one run against
a reward model (``runner.py``); GRPO and RLOO with TRL's own trainers in the same evaluation frame
(``trl_online.py``); and the best state by the probe score with the patience stop, which every RL loop shares
(``selection.py``)."""
