"""Typed parameters of the user_ratings pipeline (``user_ratings`` in ``conf/base/parameters_user_ratings.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from pydantic import Field

from ru_rlhf.params import Params


class RatingsParams(Params):
    """Typed parameters of the user_ratings pipeline (``parameters_user_ratings.yml``)."""

    seed: int
    threshold: float = Field(ge=0, le=1)  # Krippendorff's customary floor for tentative conclusions
    bootstrap: int = Field(ge=0)  # resamples of items for the interval (0: no interval)
    confidence: float = Field(gt=0, lt=1)
    min_gain: float = Field(ge=0)  # the panel's rule: drop a worker only if α rises this much
    max_drop: int = Field(ge=0)  # at most this many workers dropped by the α rule per criterion
    min_control_accuracy: float | None = Field(ge=0, le=1)  # workers below it are dropped first
    min_control_answers: int = Field(ge=1)  # ... when they answered at least this many control tasks
