"""Reinforcement learning from the reward model: our own PPO and REINFORCE (``ppo.py``)."""
