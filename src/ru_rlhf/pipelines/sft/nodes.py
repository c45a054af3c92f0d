"""Nodes of the sft pipeline: tokenizer → pre-trained policy → SFT policy → 6 candidates per prompt."""

from __future__ import annotations

import logging
import math
import time
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from ru_rlhf.metrics import distinct_n, is_tatar
from ru_rlhf.models.generation import generate, sequence_logprobs
from ru_rlhf.models.policy import PolicySize, format_prompt, load_policy, load_tokenizer, train_tokenizer
from ru_rlhf.models.training import run_sft_trainer
from ru_rlhf.schemas import PROMPT_SCHEMA, check_table
from ru_rlhf.world.tasks import reading_text

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parameters
class TokenizerParams(BaseModel):
    vocab_size: int = 8000
    min_frequency: int = 2
    model_max_length: int = 512


class PolicyParams(BaseModel):
    name_or_path: str | None = None  # None: build from `size`; else a hub id or local directory
    size: PolicySize = Field(default_factory=PolicySize)
    dtype: str | None = None
    device: str | None = None


class StageParams(BaseModel):
    """One training stage (pre-training or SFT) run through TRL's SFTTrainer."""

    with_questions: bool = False  # pre-training only: follow each document with the questions it answers
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 512
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2


class CandidateParams(BaseModel):
    temperatures: list[float] = [0.3, 0.7, 1.0]
    top_ps: list[float] = [0.85, 0.95]
    max_new_tokens: int = 64
    batch_size: int = 96


class EvalParams(BaseModel):
    qa_temperature: float = 0.3
    qa_top_p: float = 0.95
    max_prompts: int = 400
    batch_size: int = 32


class SftParams(BaseModel):
    """Typed parameters of the sft pipeline (``parameters_sft.yml``)."""

    seed: int = 2024
    checkpoint_dir: str = "data/06_models/checkpoints"
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams)
    policy: PolicyParams = Field(default_factory=PolicyParams)
    pretrain: StageParams = Field(default_factory=StageParams)
    sft: StageParams = Field(default_factory=lambda: StageParams(learning_rate=5e-4))
    candidates: CandidateParams = Field(default_factory=CandidateParams)
    evaluation: EvalParams = Field(default_factory=EvalParams)


def _params(params: dict) -> SftParams:
    return SftParams.model_validate(params)


def _seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts (crc32 of their text; the same on every machine)."""
    return zlib.crc32("|".join(map(str, parts)).encode("utf-8")) & 0x7FFFFFFF


# --------------------------------------------------------------------------- tokenizer, models
def build_tokenizer(documents: pd.DataFrame, demonstrations: pd.DataFrame, params: dict):
    """Train a byte-level BPE tokenizer on the corpus and the demonstrations (or load the hub one).

    With ``policy.name_or_path`` set (the ``hub`` env), the model's own tokenizer is loaded.
    """
    p = _params(params)
    if p.policy.name_or_path:
        return load_tokenizer(p.policy.name_or_path)
    texts = documents["text"].tolist() + demonstrations["prompt"].drop_duplicates().tolist() \
        + demonstrations["response"].tolist()
    tok = train_tokenizer(texts, p.tokenizer.vocab_size, p.tokenizer.min_frequency, p.tokenizer.model_max_length)
    log.info("build_tokenizer: %d tokens in the vocabulary (asked for at most %d)", len(tok),
             p.tokenizer.vocab_size)
    return tok


def pretrain_policy(documents: pd.DataFrame, facts: pd.DataFrame, doc_splits: pd.DataFrame, policy_tokenizer,
                    params: dict) -> tuple[Any, pd.DataFrame]:
    """Causal-LM pre-training of the policy on the training documents' text.

    With ``pretrain.with_questions``, each training document is followed by the questions it
    answers and their answers (reading-comprehension text from the fact table), which teaches a
    small model to copy from its context; validation and test documents are never read here.
    A model built from scratch starts here; a hub model (``policy.name_or_path``) is loaded and,
    if ``pretrain.epochs`` is 0, passed on unchanged.

    Returns:
        ``(model, log)``: the log has one row per logged step (``stage, step, loss, ...``).
    """
    import datasets

    p = _params(params)
    model = load_policy(p.policy.name_or_path, size=p.policy.size, tokenizer=policy_tokenizer,
                        dtype=p.policy.dtype, device=p.policy.device, seed=p.seed)
    train_ids = set(doc_splits.loc[doc_splits["split"] == "train", "doc_id"])
    train_docs = documents[documents["doc_id"].isin(train_ids)]
    if p.pretrain.with_questions:
        facts_by_doc = {k: g.to_dict("records") for k, g in facts.groupby("doc_id", sort=False)}
        texts = [reading_text(d.doc_id, d.lang, d.title, d.text, d.qas, facts_by_doc.get(d.doc_id, []))
                 for d in train_docs.itertuples(index=False)]
    else:
        texts = train_docs["text"].tolist()
    if p.pretrain.epochs <= 0:
        return model, pd.DataFrame(columns=["stage", "step", "loss"])
    ds = datasets.Dataset.from_dict({"text": texts})
    model, history = run_sft_trainer(model, policy_tokenizer, ds, p.pretrain, seed=p.seed,
                                     output_dir=Path(p.checkpoint_dir) / "pretrain", stage="pretrain")
    return model, history


def sft_policy(pretrained_policy, policy_tokenizer, demonstrations: pd.DataFrame,
               params: dict) -> tuple[Any, pd.DataFrame]:
    """Supervised fine-tuning on the training demonstrations, loss on the completion only.

    All variants of the training split are used (the worse ones on purpose, so that candidates
    differ); the prompt is wrapped in the one prompt format (:func:`format_prompt`).
    """
    import datasets

    p = _params(params)
    train = demonstrations[demonstrations["split"] == "train"]
    ds = datasets.Dataset.from_dict({"prompt": [format_prompt(x) for x in train["prompt"]],
                                     "completion": train["response"].tolist()})
    model, history = run_sft_trainer(pretrained_policy, policy_tokenizer, ds, p.sft, seed=p.seed,
                                     output_dir=Path(p.checkpoint_dir) / "sft", stage="sft")
    return model, history


# --------------------------------------------------------------------------- evaluation
def evaluate_sft(pretrained_policy, sft_policy, policy_tokenizer, demonstrations: pd.DataFrame,
                 prompts: pd.DataFrame, params: dict) -> dict:
    """Validation perplexity of both models on reference answers, and the QA answer rate.

    Perplexity is exp(mean negative log-likelihood per response token) of the validation
    reference answers given their prompts. The QA answer rate is the share of validation QA
    prompts whose answer (``answer_key``) appears in the SFT policy's answer at temperature 0.3.
    """
    p = _params(params)
    e = p.evaluation
    val = demonstrations[(demonstrations["split"] == "validation") & (demonstrations["variant"] == "reference")]
    val = val.sample(n=min(len(val), e.max_prompts), random_state=p.seed)
    formatted = [format_prompt(x) for x in val["prompt"]]
    result: dict[str, Any] = {"validation_references": len(val)}
    for name, model in (("pretrained", pretrained_policy), ("sft", sft_policy)):
        scored = sequence_logprobs(model, policy_tokenizer, formatted, val["response"].tolist(),
                                   batch_size=e.batch_size)
        nll = -sum(s["logprob"] for s in scored) / max(1, sum(s["tokens"] for s in scored))
        result[f"{name}_validation_perplexity"] = round(math.exp(nll), 4)
    qa = prompts[(prompts["split"] == "validation") & (prompts["task_type"] == "qa")]
    qa = qa.sample(n=min(len(qa), e.max_prompts), random_state=p.seed)
    answers, _ = generate(
        sft_policy, policy_tokenizer, [format_prompt(x) for x in qa["prompt"]],
        temperatures=[e.qa_temperature] * len(qa), top_ps=[e.qa_top_p] * len(qa),
        seeds=[_seed(p.seed, pid, "qa_eval") for pid in qa["prompt_id"]], max_new_tokens=32,
        batch_size=p.candidates.batch_size, desc="qa answer rate",
    )
    hits = [str(key).lower() in ans.lower() for key, ans in zip(qa["answer_key"], answers)]
    result["qa_prompts"] = len(qa)
    result["qa_answer_rate"] = round(sum(hits) / max(1, len(hits)), 4)
    by_lang = pd.DataFrame({"lang": qa["lang"].values, "hit": hits}).groupby("lang")["hit"].mean()
    result["qa_answer_rate_by_lang"] = {k: round(float(v), 4) for k, v in by_lang.items()}
    result["qa_examples"] = [
        {"question": q, "answer_key": k, "model_answer": a}
        for q, k, a in list(zip(qa["input"], qa["answer_key"], answers))[:5]
    ]
    log.info("evaluate_sft: %s", {k: v for k, v in result.items() if k != "qa_examples"})
    return result


# --------------------------------------------------------------------------- candidates
def generate_candidates(sft_policy, policy_tokenizer, prompts: pd.DataFrame,
                        params: dict) -> tuple[pd.DataFrame, dict]:
    """Six responses per prompt, one per point of the grid temperature × top-p, for every prompt.

    Every (prompt, grid point) row has its own seed, derived from the run seed and the prompt id,
    so a prompt's candidates do not depend on the batch it was generated in.

    Returns:
        ``(candidates, stats)``: one row per prompt with ``prompt, responses, task_type,
        prompt_id, lang, split`` and ``sampling`` (each response's temperature, top-p and seed).
    """
    p = _params(params)
    check_table(prompts, PROMPT_SCHEMA, "prompt_id", source="prompts")
    c = p.candidates
    grid = [(t, tp) for t in c.temperatures for tp in c.top_ps]
    rows, temps, tops, seeds = [], [], [], []
    for pr in prompts.itertuples(index=False):
        for k, (t, tp) in enumerate(grid):
            rows.append(format_prompt(pr.prompt))
            temps.append(t)
            tops.append(tp)
            seeds.append(_seed(p.seed, pr.prompt_id, k))
    start = time.perf_counter()
    texts, stats = generate(sft_policy, policy_tokenizer, rows, temperatures=temps, top_ps=tops, seeds=seeds,
                            max_new_tokens=c.max_new_tokens, batch_size=c.batch_size, desc="candidates")
    g = len(grid)
    out = prompts[["prompt_id", "doc_id", "task_type", "lang", "split", "prompt"]].copy()
    out["responses"] = [texts[i * g:(i + 1) * g] for i in range(len(prompts))]
    out["sampling"] = [
        [{"temperature": temps[i * g + k], "top_p": tops[i * g + k], "seed": seeds[i * g + k]} for k in range(g)]
        for i in range(len(prompts))
    ]
    info = {
        "prompts": len(prompts), "responses": len(texts), "grid": [list(x) for x in grid],
        "seconds": round(time.perf_counter() - start, 2), "new_tokens": stats.new_tokens,
        "tokens_per_second": round(stats.tokens_per_second, 1),
        "truncated_prompts": stats.truncated_prompts, "empty_responses": stats.empty_outputs,
    }
    log.info("generate_candidates: %s", info)
    return out.reset_index(drop=True), info


def summarise_sft(pretrain_log: pd.DataFrame, sft_log: pd.DataFrame, sft_eval: dict, candidates: pd.DataFrame,
                  candidate_stats: dict) -> dict:
    """The quality figures of the stage for ``08_reporting/sft_summary.json``.

    Candidates differ: mean distinct-2 across a prompt's 6 responses and the share of prompts with
    6 identical responses. Tatar prompts get Tatar answers: the share of responses to Tatar
    prompts that are Tatar (Tatar-specific letters or words), and the same share for Russian
    prompts, which should be low.
    """
    def first_last(df: pd.DataFrame) -> dict:
        losses = df["loss"].dropna().tolist() if len(df) else []
        if not losses:
            return {"steps": 0}
        k = max(1, len(losses) // 10)
        return {"steps": int(df["step"].max()), "loss_first": round(sum(losses[:k]) / k, 4),
                "loss_last": round(sum(losses[-k:]) / k, 4)}

    d2 = candidates["responses"].map(lambda rs: distinct_n(list(rs), 2))
    identical = candidates["responses"].map(lambda rs: len(set(rs)) == 1)
    tt = candidates[candidates["lang"] == "tt"]["responses"].explode()
    ru = candidates[candidates["lang"] == "ru"]["responses"].explode()
    summary = {
        "pretrain": first_last(pretrain_log),
        "sft": first_last(sft_log),
        **{k: v for k, v in sft_eval.items()},
        "candidates": {
            **candidate_stats,
            "pairs": int(candidates["responses"].map(len).sum()),
            "mean_distinct_2": round(float(d2.mean()), 4),
            "share_prompts_all_identical": round(float(identical.mean()), 4),
            "tatar_prompts_answered_in_tatar": round(float(tt.map(is_tatar).mean()), 4) if len(tt) else None,
            "russian_prompts_answered_in_tatar": round(float(ru.map(is_tatar).mean()), 4) if len(ru) else None,
        },
    }
    log.info("sft summary: %s", summary)
    return summary


def write_candidates_jsonl(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates in the seed's JSONL layout: ``prompt, responses, task_type`` first, then the rest."""
    cols = ["prompt", "responses", "task_type", "prompt_id", "doc_id", "lang", "split", "sampling"]
    return candidates[cols]
