"""Typed parameters of the sft pipeline (``sft`` in ``conf/base/parameters_sft.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveFloat

from ru_rlhf.distributed import DistributedParams
from ru_rlhf.models.policy import PolicySize
from ru_rlhf.models.training import StageParams
from ru_rlhf.params import Params


class TokenizerParams(Params):
    vocab_size: int = Field(gt=0)
    min_frequency: int = Field(gt=0)
    model_max_length: int = Field(gt=16)


class PolicyParams(Params):
    name_or_path: str | None  # None: build from `size`; else a hub id or local directory
    size: PolicySize
    dtype: str | None = None
    device: str | None = None


class ReadingParams(Params):
    """Reading-comprehension pre-training on extra documents from the bundled world's generator.

    A policy of a few million parameters trained from scratch on ~1 000 documents memorises
    them instead of learning to copy an answer from its context (measured: QA answers right
    in about 1 % of validation prompts). Questions answered from many *fresh* documents, with
    the loss on the answer only, make copying the only way to lower the loss. The documents come
    from ``ru_rlhf.world`` with a seed of their own; no validation or test document is used.

    What decides the answer rate (measured on the 88 validation QA prompts, reading stage only):
    organisations and places ("Компания «X»", "В X") are copied first, by an induction head
    that repeats what followed the same word in the text; dates, people and counts need the
    answer's *first* word found by what it is (a day before a month, a name, the number before the
    question's noun), which emerges later and from run to run at very different steps. Single
    runs each: short passages (``passage_share``) brought copying earlier (0.30 vs 0.16 after
    900 steps), and the answer's sentence alone did better than up to three sentences (0.375 vs
    0.33 after 2 400 steps of 8); a rate held constant and then decayed over the last quarter
    (``warmup_stable_decay``) lifted one run from 0.25 to 0.40 during the decay (people 0 → 0.73);
    keeping only 30 % of the org/place questions (``easy_keep``) stopped copying from emerging at
    all (0.11 after 2 400 steps): the easy answers teach the copying the hard ones build on.
    More steps decide it (single runs, reading stage alone): 3 000 steps reached 0.375, 3 600
    reached 0.42 (0.58 in a run on another draw of documents), 5 000 reached 0.52 with reading
    first and 0.56-0.58 after the LM epoch (dates 0.45-0.70, people 0.91). In the whole pipeline
    (LM epoch, reading, SFT) 4 500 steps gave QA 0.500 and 4 200 gave 0.511, so 4 200 it is (19 s
    less). Batches grouped by length (``group_by_length``: passages are
    ~34 tokens, documents ~76, and mixed batches were 43 % padding) made a step 0.1 -> 0.055 s,
    which is what pays for those steps.
    """

    documents: int = Field(ge=0)  # 0: skip this stage
    seed: int
    tatar_share: float = Field(ge=0, le=1)
    # Passages: this share of questions is asked on a short passage (the sentence holding the
    # answer plus 0 to ``passage_extra_sentences`` other sentences of the document, in order)
    # instead of the whole document; the rest keep the whole document.
    passage_share: float = Field(ge=0, le=1)
    passage_extra_sentences: int = Field(ge=0)
    # Questions whose answer starts with a fixed word ("Компания «X»", "В X": org, place) are
    # learnt first; only this share of them is kept (measured: thinning them stops copying from
    # emerging at all, see above, so base keeps them all).
    easy_keep: float = Field(ge=0, le=1)
    stage: StageParams


class RedrawParams(Params):
    """Prompts whose responses all came out the same (a confident model on a short QA answer gives
    the same entity at every grid point) get their highest-temperature rows drawn again, hotter,
    with fresh seeds, until two responses differ or the attempts run out; a pair needs two
    different responses. Redrawn rows record their own temperature, top-p, seed and attempt."""

    attempts: int = Field(ge=0)  # 0: no redraw
    temperature: float = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    rows: int = Field(ge=1)  # how many of the prompt's rows (the hottest grid points) are drawn again


class CandidateParams(Params):
    temperatures: list[PositiveFloat] = Field(min_length=1)
    top_ps: list[Annotated[float, Field(gt=0, le=1)]] = Field(min_length=1)
    max_new_tokens: int = Field(gt=0)
    # per task (a short QA answer needs fewer steps than a summary); tasks not named use max_new_tokens
    max_new_tokens_by_task: dict[str, int] = {"qa": 24, "dialogue": 48, "summarization": 64}
    # rows decoded at once: with the default (Llama) policy continuously batched, new prompts' rows
    # joining as ended rows leave; any other model runs batches of this many rows
    batch_size: int = Field(gt=0)
    redraw: RedrawParams


class EvalParams(Params):
    qa_temperature: float = Field(ge=0)
    qa_top_p: float = Field(gt=0, le=1)
    max_prompts: int = Field(gt=0)
    batch_size: int = Field(gt=0)


class SftParams(Params):
    """Typed parameters of the sft pipeline (``parameters_sft.yml``)."""

    seed: int
    checkpoint_dir: str
    tokenizer: TokenizerParams
    policy: PolicyParams
    pretrain: StageParams
    reading: ReadingParams
    sft: StageParams
    candidates: CandidateParams
    evaluation: EvalParams
    # num_processes > 1: every trainer stage (reading, pre-training, SFT) runs under `accelerate launch`
    distributed: DistributedParams
