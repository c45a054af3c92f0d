"""Fixtures: candidates made from demonstration variants (six responses of known quality)."""

from __future__ import annotations

import pandas as pd
import pytest

from ru_rlhf.pipelines.ingestion import nodes as ing
from tests.params_helpers import base_params

VARIANTS = ("reference", "hedge", "flattery", "refusal", "wrong_fact", "rude")


@pytest.fixture(scope="session")
def world_tables(small_world):
    """documents, facts and prompts of the small world (60 ru + 20 tt documents)."""
    raw, world_facts = small_world
    params = base_params("ingestion", {"seed": 5, "prompts": {"per_task": 40, "min_tatar_share": 0.25}})
    docs, _ = ing.deduplicate_documents(ing.validate_documents(ing.normalise_documents(raw), params)[0], params)
    splits = ing.split_documents(docs, params)
    facts = ing.build_facts(docs, world_facts)
    prompts = ing.build_prompts(docs, facts, splits, params)
    return docs, facts, prompts


@pytest.fixture(scope="session")
def variant_candidates(world_tables):
    """Six candidates per prompt: the reference and its five worse variants (every rate 1)."""
    _, _, prompts = world_tables
    rates = {v: 1.0 for v in VARIANTS[1:]}
    demos = ing.build_demonstrations(prompts, base_params("ingestion", {"seed": 5, "demonstrations": {"rates": rates}}))
    rows = []
    for pid, g in demos.groupby("prompt_id", sort=True):
        by = dict(zip(g["variant"], g["response"]))
        responses = [by.get(v, by["reference"] + " Спасибо.") for v in VARIANTS]
        p = prompts.set_index("prompt_id").loc[pid]
        rows.append({"prompt_id": pid, "doc_id": p["doc_id"], "task_type": p["task_type"], "lang": p["lang"],
                     "split": p["split"], "prompt": p["prompt"], "responses": responses,
                     "sampling": [{"temperature": 0.7, "top_p": 0.95, "seed": k} for k in range(6)]})
    return pd.DataFrame(rows)
