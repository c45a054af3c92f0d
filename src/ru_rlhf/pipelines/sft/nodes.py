"""Nodes of the sft pipeline: tokenizer → pre-trained policy → SFT policy → 6 candidates per prompt."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ru_rlhf import distributed
from ru_rlhf.metrics import distinct_n, is_tatar
from ru_rlhf.models.generation import GenerationStats, generate, sequence_logprobs, stable_seed
from ru_rlhf.models.policy import (
    format_prompt,
    load_policy,
    load_tokenizer,
    model_card_facts,
    train_tokenizer,
)
from ru_rlhf.models.training import StageParams
from ru_rlhf.pipelines.sft.params import SftParams
from ru_rlhf.schemas import PROMPT_SCHEMA, check_table
from ru_rlhf.world.tasks import document_items
from ru_rlhf.world.tasks import format_prompt as format_task_prompt

log = logging.getLogger(__name__)


def _train_stage(model, tokenizer, dataset, stage: StageParams, p: SftParams, name: str):
    """One trainer stage (``run_sft_trainer``), here or on ``distributed.num_processes`` processes."""
    return distributed.sft(model, tokenizer, dataset, stage, p.distributed, seed=p.seed,
                           output_dir=Path(p.checkpoint_dir) / name, stage=name)


# --------------------------------------------------------------------------- tokenizer, models
def build_tokenizer(documents: pd.DataFrame, demonstrations: pd.DataFrame, params: dict):
    """Train a byte-level BPE tokenizer on the corpus and the demonstrations (or load the hub one).

    With ``policy.name_or_path`` set (the ``hub`` env), the model's own tokenizer is loaded.
    """
    p = SftParams.of(params)
    if p.policy.name_or_path:
        return load_tokenizer(p.policy.name_or_path)
    texts = documents["text"].tolist() + demonstrations["prompt"].drop_duplicates().tolist() \
        + demonstrations["response"].tolist()
    tok = train_tokenizer(texts, p.tokenizer.vocab_size, p.tokenizer.min_frequency, p.tokenizer.model_max_length)
    log.info("build_tokenizer: %d tokens in the vocabulary (asked for at most %d)", len(tok),
             p.tokenizer.vocab_size)
    return tok


_SENTENCE_END = re.compile(r"(?<=[.!?»])\s+(?=\S)")
EASY_ITEMS = ("org", "place")  # answers that start with a fixed word, then copy (see ReadingParams.easy_keep)


def reading_examples(n_documents: int, seed: int, tatar_share: float, passage_share: float = 0.0,
                     passage_extra_sentences: int = 2, easy_keep: float = 1.0) -> pd.DataFrame:
    """Prompt/completion QA examples on ``n_documents`` fresh documents of the world generator.

    With ``passage_share`` > 0, that share of the questions is asked on a short passage: the
    sentence holding the answer and up to ``passage_extra_sentences`` other sentences of the same
    document, in their order (a question whose answer is in no single sentence keeps the whole
    document). ``easy_keep`` < 1 keeps only that share of the org/place questions. Column
    ``context`` says which: ``document`` or ``passage``.
    """
    import random

    from ru_rlhf.world import generate_world

    rng = random.Random(seed)
    n_tt = round(n_documents * tatar_share)
    docs, facts = generate_world(seed=seed, n_ru=n_documents - n_tt, n_tt=n_tt)
    by_doc: dict[str, list[dict]] = {}
    for f in facts:
        by_doc.setdefault(f["doc_id"], []).append({**f, "origin": "world"})
    rows = []
    for d in docs:
        sentences = _SENTENCE_END.split(d["text"])
        for it in document_items(d["doc_id"], d["lang"], d["title"], d["text"], None, by_doc[d["doc_id"]])["qa"]:
            if it["item_key"] in EASY_ITEMS and rng.random() >= easy_keep:
                continue
            text, kind = d["text"], "document"
            if rng.random() < passage_share:
                key = str(it["answer_key"]).lower()
                holding = [i for i, x in enumerate(sentences) if key in x.lower()]
                if holding:
                    others = [i for i in range(len(sentences)) if i != holding[0]]
                    extra = rng.sample(others, min(len(others), rng.randint(0, passage_extra_sentences)))
                    text, kind = " ".join(sentences[i] for i in sorted([holding[0], *extra])), "passage"
            rows.append({"prompt": format_prompt(format_task_prompt("qa", d["lang"], text, it["input"])),
                         "completion": it["reference"], "context": kind, "item": it["item_key"]})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def pretrain_policy(documents: pd.DataFrame, doc_splits: pd.DataFrame, policy_tokenizer,
                    params: dict) -> tuple[Any, pd.DataFrame]:
    """Pre-training: causal LM on the training documents' text, then reading comprehension.

    1. Causal-LM loss on every token of the training split's documents (``pretrain``).
    2. With ``reading.documents > 0``: questions on fresh documents from the world generator,
       loss on the answer only (see :class:`ReadingParams` for why). It runs last, next to SFT:
       measured (validation QA at temperature 0.3, 5 000 reading steps), LM steps *after* it undo
       much of the copying it taught (0.52 -> 0.40, dates 0.45 -> 0.15), and SFT starting from there
       ends at 0.34-0.39; with the LM epoch first, reading reaches 0.56-0.58 and SFT keeps 0.53-0.57.
       (After only 1 000 reading steps the order went the other way: 31 % with reading first,
       9 % with the LM epoch first; copying now has the steps to emerge either way.)

    A model built from scratch starts here; a hub model (``policy.name_or_path``) is loaded and,
    with both stages off, passed on unchanged.

    Returns:
        ``(model, log)``: the log has one row per logged step; ``stage`` is ``reading`` or
        ``pretrain``.
    """
    import datasets

    p = SftParams.of(params)
    model = load_policy(p.policy.name_or_path, size=p.policy.size, tokenizer=policy_tokenizer,
                        dtype=p.policy.dtype, device=p.policy.device, seed=p.seed)
    logs = []
    if p.pretrain.epochs > 0:
        train_ids = set(doc_splits.loc[doc_splits["split"] == "train", "doc_id"])
        texts = documents.loc[documents["doc_id"].isin(train_ids), "text"].tolist()
        model, history = _train_stage(model, policy_tokenizer, datasets.Dataset.from_dict({"text": texts}),
                                      p.pretrain, p, "pretrain")
        logs.append(history)
    if p.reading.documents > 0:
        r = p.reading
        examples = reading_examples(r.documents, r.seed, r.tatar_share, r.passage_share,
                                    r.passage_extra_sentences, r.easy_keep)
        log.info("reading comprehension: %d questions (%d on short passages) on %d generated documents",
                 len(examples), int((examples["context"] == "passage").sum()), r.documents)
        model, history = _train_stage(model, policy_tokenizer,
                                      datasets.Dataset.from_pandas(examples[["prompt", "completion"]]),
                                      r.stage, p, "reading")
        logs.append(history)
    log_table = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(columns=["stage", "step", "loss"])
    return model, log_table


def sft_policy(pretrained_policy, policy_tokenizer, demonstrations: pd.DataFrame,
               params: dict) -> tuple[Any, pd.DataFrame]:
    """Supervised fine-tuning on the training demonstrations, loss on the completion only.

    All variants of the training split are used (the worse ones on purpose, so that candidates
    differ); the prompt is wrapped in the one prompt format (:func:`format_prompt`).
    """
    import datasets

    p = SftParams.of(params)
    train = demonstrations[demonstrations["split"] == "train"]
    ds = datasets.Dataset.from_dict({"prompt": [format_prompt(x) for x in train["prompt"]],
                                     "completion": train["response"].tolist()})
    model, history = _train_stage(pretrained_policy, policy_tokenizer, ds, p.sft, p, "sft")
    return model, history


# --------------------------------------------------------------------------- evaluation
def freeze_reference(sft_policy):
    """The frozen reference for every KL term: a copy of the SFT policy saved on its own
    (``06_models/reference_policy``), so that later stages never read a policy being trained."""
    for param in sft_policy.parameters():
        param.requires_grad_(False)
    return sft_policy


def evaluate_sft(pretrained_policy, sft_policy, policy_tokenizer, demonstrations: pd.DataFrame,
                 prompts: pd.DataFrame, params: dict) -> dict:
    """Validation perplexity of both models on reference answers, and the QA answer rate.

    Perplexity is exp(mean negative log-likelihood per response token) of the validation
    reference answers given their prompts. The QA answer rate is the share of validation QA
    prompts whose answer (``answer_key``) appears in the SFT policy's answer at temperature 0.3.
    """
    p = SftParams.of(params)
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
        seeds=[stable_seed(p.seed, pid, "qa_eval") for pid in qa["prompt_id"]], max_new_tokens=32,
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
    result["policy"] = policy_facts(sft_policy, policy_tokenizer, p.policy.name_or_path)
    log.info("evaluate_sft: %s", {k: v for k, v in result.items() if k != "qa_examples"})
    return result


def policy_facts(model, tokenizer, name_or_path: str | None) -> dict:
    """What the policy is, for reports and cards: its class, where it came from (a hub id or folder, or None
    for the project's model built from a config), size, device, dtype and tokenizer."""
    first = next(model.parameters())
    return {"architecture": type(model).__name__, "model_type": model.config.model_type, "base": name_or_path,
            **model_card_facts(model), "device": str(first.device), "dtype": str(first.dtype).replace("torch.", ""),
            "tokenizer": type(tokenizer).__name__, "chat_template": bool(getattr(tokenizer, "chat_template", None))}


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
    p = SftParams.of(params)
    check_table(prompts, PROMPT_SCHEMA, "prompt_id", source="prompts")
    c = p.candidates
    grid = [(t, tp) for t in c.temperatures for tp in c.top_ps]
    g = len(grid)
    texts: list[str] = [""] * (len(prompts) * g)
    temps, tops, seeds = [0.0] * len(texts), [0.0] * len(texts), [0] * len(texts)
    start = time.perf_counter()
    stats = GenerationStats()
    records = list(prompts[["prompt_id", "prompt"]].itertuples(index=False))
    # one call for every row: each row has its task's length budget, and rows of all tasks share
    # the running batch (so there is one drain at the end, not one per task)
    rows = [(i * g + k, format_prompt(rec.prompt), t, tp, stable_seed(p.seed, rec.prompt_id, k),
             c.max_new_tokens_by_task.get(task, c.max_new_tokens))
            for i, (rec, task) in enumerate(zip(records, prompts["task_type"])) for k, (t, tp) in enumerate(grid)]
    for r, _, t, tp, sd, _ in rows:
        temps[r], tops[r], seeds[r] = t, tp, sd
    out, st = generate(sft_policy, policy_tokenizer, [x[1] for x in rows], temperatures=[x[2] for x in rows],
                       top_ps=[x[3] for x in rows], seeds=[x[4] for x in rows], max_new_tokens=[x[5] for x in rows],
                       batch_size=c.batch_size, desc="candidates")
    for (r, *_), text in zip(rows, out):
        texts[r] = text
    stats.merge(st)
    attempt = [0] * len(texts)
    redraw = _redraw_identical(sft_policy, policy_tokenizer, prompts, records, texts, temps, tops, seeds, attempt,
                               p, g, stats)
    out = prompts[["prompt_id", "doc_id", "task_type", "lang", "split", "prompt"]].copy()
    out["responses"] = [texts[i * g:(i + 1) * g] for i in range(len(prompts))]
    out["sampling"] = [
        [{"temperature": temps[i * g + k], "top_p": tops[i * g + k], "seed": seeds[i * g + k],
          "redraw": attempt[i * g + k]} for k in range(g)]
        for i in range(len(prompts))
    ]
    info = {
        "prompts": len(prompts), "responses": len(texts), "grid": [list(x) for x in grid],
        "seconds": round(time.perf_counter() - start, 2), "new_tokens": stats.new_tokens,
        "tokens_per_second": round(stats.new_tokens / max(1e-9, time.perf_counter() - start), 1),
        "truncated_prompts": stats.truncated_prompts, "empty_responses": stats.empty_outputs,
        "redraw": redraw,
    }
    log.info("generate_candidates: %s", info)
    return out.reset_index(drop=True), info


def _redraw_identical(policy, tokenizer, prompts: pd.DataFrame, records: list, texts: list[str], temps: list,
                      tops: list, seeds: list, attempt: list, p: SftParams, g: int, stats: GenerationStats) -> dict:
    """Draw the hottest rows of prompts whose ``g`` responses are all the same again (in place).

    Returns the counts: prompts with identical responses before, rows redrawn, prompts still
    identical after the last attempt.
    """
    r = p.candidates.redraw
    same = [i for i in range(len(records)) if len(set(texts[i * g:(i + 1) * g])) == 1]
    counts = {"prompts_identical_before": len(same), "rows_redrawn": 0, "prompts_still_identical": len(same)}
    if not same or r.attempts == 0:
        return counts
    # the hottest grid points are the last rows of a prompt (temperature, then top-p, ascending)
    grid = [(t, tp) for t in p.candidates.temperatures for tp in p.candidates.top_ps]
    ks = sorted(range(g), key=lambda k: grid[k])[-min(r.rows, g):]
    tasks = prompts["task_type"].tolist()
    budget = p.candidates.max_new_tokens_by_task
    for a in range(1, r.attempts + 1):
        if not same:
            break
        for task in sorted({tasks[i] for i in same}):
            rows = [(i * g + k, records[i]) for i in same if tasks[i] == task for k in ks]
            sd = [stable_seed(p.seed, rec.prompt_id, k_row % g, "redraw", a) for k_row, rec in rows]
            out, st = generate(policy, tokenizer, [format_prompt(rec.prompt) for _, rec in rows],
                               temperatures=[r.temperature] * len(rows), top_ps=[r.top_p] * len(rows), seeds=sd,
                               max_new_tokens=budget.get(task, p.candidates.max_new_tokens),
                               batch_size=p.candidates.batch_size, desc=f"redraw {a} ({task})")
            for (row, _), text, seed in zip(rows, out, sd):
                texts[row], temps[row], tops[row], seeds[row], attempt[row] = text, r.temperature, r.top_p, seed, a
            stats.merge(st)
            counts["rows_redrawn"] += len(rows)
        same = [i for i in same if len(set(texts[i * g:(i + 1) * g])) == 1]
    counts["prompts_still_identical"] = len(same)
    log.info("candidates: redrew identical prompts: %s", counts)
    return counts


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
        **{stage: first_last(g) for stage, g in pretrain_log.groupby("stage")},
        "sft": first_last(sft_log),
        **{k: v for k, v in sft_eval.items()},
        "candidates": {
            **candidate_stats,
            "pairs": int(candidates["responses"].map(len).sum()),
            "mean_distinct_2": round(float(d2.mean()), 4),
            "share_prompts_all_identical": round(float(identical.mean()), 4),
            "share_prompts_all_identical_before_redraw": round(
                candidate_stats.get("redraw", {}).get("prompts_identical_before", int(identical.sum()))
                / max(1, len(candidates)), 4),
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


def plot_sft_losses(pretrain_log: pd.DataFrame, sft_log: pd.DataFrame):
    """Training loss per step of every stage (reading, pre-training, SFT), for kedro-viz."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = pd.concat([pretrain_log, sft_log], ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for stage, g in logs.groupby("stage", sort=False):
        ax.plot(g["step"], g["loss"], label=str(stage))
    ax.set_xlabel("step (per stage)")
    ax.set_ylabel("training loss")
    ax.set_title("sft pipeline: loss per stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
