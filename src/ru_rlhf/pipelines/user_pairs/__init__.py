"""user_pairs: a reward model, DPO and a harmlessness classifier trained on a user's own preference pairs."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
