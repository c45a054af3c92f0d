"""user_ratings: Krippendorff's α, its bootstrap interval and the agreement gate on a user's own rating exports."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
