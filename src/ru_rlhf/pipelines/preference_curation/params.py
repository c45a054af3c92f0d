"""Typed parameters of the preference_curation pipeline (``preference_curation`` in
``conf/base/parameters_preference_curation.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ru_rlhf.params import Params


class PanelParams(Params):
    """The simulated annotator panel. Each annotator draws its own biases from these ranges."""

    pool_size: int = Field(gt=1)
    per_item: int = Field(gt=1)
    careless: list[str]
    careless_random_rate: float = Field(ge=0, le=1)
    noise_sd: tuple[float, float]
    leniency: tuple[float, float]
    length_bias: tuple[float, float]
    sycophancy_bias: tuple[float, float]


class AgreementParams(Params):
    level: Literal["nominal", "ordinal", "interval", "ratio"]
    threshold: float = Field(ge=-1, le=1)  # α lies in [-1, 1]; smoke sets -1 (never fails)
    on_fail: Literal["fail", "drop_annotators"]
    min_gain: float = Field(ge=0)


class PairParams(Params):
    margin: float = Field(ge=0)
    weights: dict[Literal["helpfulness", "truthfulness", "harmlessness"], Annotated[float, Field(ge=0)]]


class ImportParams(Params):
    """How imported human labels are kept (the files are the catalog entry ``human_labels``)."""

    # an annotator who rated fewer items than this cannot be compared with anyone: quarantined
    min_ratings_per_annotator: int = Field(ge=1)


class AppVoteParams(Params):
    margin: float = Field(1.0, ge=0)  # rating difference (1–5 scale) that makes a per-criterion pair from one vote


class CurationParams(Params):
    """Typed parameters of the preference_curation pipeline."""

    seed: int
    panel: PanelParams
    agreement: AgreementParams
    pairs: PairParams
    human_labels: ImportParams
    app_votes: AppVoteParams = Field(default_factory=AppVoteParams)  # not in the YAML
