"""Typed parameters of the ingestion pipeline (``ingestion`` in ``conf/base/parameters_ingestion.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from ru_rlhf.params import Params

TASK = Literal["qa", "dialogue", "summarization"]


class SchemaParams(Params):
    min_chars: int = Field(ge=0)
    max_chars: int = Field(gt=0)
    min_cyrillic_share: float = Field(ge=0, le=1)


class DedupParams(Params):
    shingle_size: int = Field(gt=0)
    near_duplicate_threshold: float = Field(gt=0, le=1)
    num_perm: int = Field(gt=0)


class SplitParams(Params):
    train: float = Field(gt=0, lt=1)
    validation: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SplitParams:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-6:
            raise ValueError(f"split shares must sum to 1, not {self.train + self.validation + self.test:g}")
        return self


class PromptParams(Params):
    per_task: int = Field(gt=0)
    min_tatar_share: float = Field(ge=0, le=1)
    max_items_per_doc: dict[TASK, PositiveInt]


class DemonstrationParams(Params):
    rates: dict[str, Annotated[float, Field(ge=0, le=1)]]


class IngestionParams(Params):
    """Typed parameters of the ingestion pipeline (``parameters_ingestion.yml``)."""

    seed: int
    schema_: SchemaParams = Field(alias="schema")
    dedup: DedupParams
    split: SplitParams
    prompts: PromptParams
    demonstrations: DemonstrationParams
