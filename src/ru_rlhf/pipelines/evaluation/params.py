"""Typed parameters of the evaluation pipeline (``evaluation`` in ``conf/base/parameters_evaluation.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from pydantic import Field

from ru_rlhf.params import Params


class EvaluationParams(Params):
    """Typed parameters of the evaluation pipeline (``parameters_evaluation.yml``)."""

    seed: int
    bertscore_model: str  # a local directory or a hub id (conf/hub)
    bertscore_num_layers: int | None = Field(gt=0)  # None: the encoder's last layer
    expert_pairs: int = Field(gt=0)  # test (prompt, sample) items per model for the expert channel
    bootstrap: int = Field(gt=0)
    attribution_pairs: int = Field(ge=0)  # chosen/rejected pairs per head for Captum
    attribution_steps: int = Field(gt=0)
    cases: int = Field(ge=0)  # before/after cases per method
    mauve_max_texts: int = Field(gt=1)
