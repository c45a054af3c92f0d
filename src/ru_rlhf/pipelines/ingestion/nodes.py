"""Nodes of the ingestion pipeline: documents → validated corpus → prompts and demonstrations."""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re

import pandas as pd
from datasketch import MinHash, MinHashLSH
from sklearn.model_selection import train_test_split

from ru_rlhf import phrases
from ru_rlhf.pipelines.ingestion.params import IngestionParams
from ru_rlhf.schemas import (
    DEMONSTRATION_SCHEMA,
    PROMPT_SCHEMA,
    TASKS,
    document_schema,
    split_by_schema,
)
from ru_rlhf.text import extract_mentions, normalise_text, word_shingles
from ru_rlhf.world import lexicon as lx
from ru_rlhf.world.tasks import document_items, format_prompt

log = logging.getLogger(__name__)

DOC_COLUMNS = ["doc_id", "lang", "source", "title", "text", "license", "qas"]
QUARANTINE_COLUMNS = ["doc_id", "lang", "source", "source_file", "source_row", "stage", "rule",
                      "detail", "text"]


# --------------------------------------------------------------------------- documents
def normalise_documents(raw_corpus: pd.DataFrame) -> pd.DataFrame:
    """Normalise the text and title of every readable row (Unicode NFC, whitespace, BOMs).

    Rows the reader could not read keep their ``read_error`` and pass through unchanged.
    """
    df = raw_corpus.copy()
    for col in ("text", "title"):
        df[col] = df[col].map(lambda v: normalise_text(v) if isinstance(v, str) else v)
    return df


def _to_quarantine(df: pd.DataFrame, stage: str, rules, details=None) -> pd.DataFrame:
    out = pd.DataFrame({
        "doc_id": df["doc_id"].values,
        "lang": df["lang"].values,
        "source": df["source"].values,
        "source_file": df["source_file"].values,
        "source_row": df["source_row"].values,
        "stage": stage,
        "rule": list(rules),
        "detail": list(details) if details is not None else df.get("detail", pd.Series([None] * len(df))).values,
        "text": df["text"].map(lambda t: t[:300] if isinstance(t, str) else None).values,
    })
    return out[QUARANTINE_COLUMNS]


def validate_documents(normalised: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check documents against the schema; unreadable or failing rows go to quarantine.

    Returns:
        ``(valid, quarantined)``; ``quarantined`` names each row's file, row and rule.
    """
    p = IngestionParams.of(params).schema_
    unreadable = normalised[normalised["read_error"].notna()]
    readable = normalised[normalised["read_error"].isna()]
    kept, failed = split_by_schema(readable, document_schema(p.min_chars, p.max_chars, p.min_cyrillic_share))
    quarantine = pd.concat(
        [_to_quarantine(unreadable, "read", unreadable["read_error"]),
         _to_quarantine(failed, "schema", failed["rule"])],
        ignore_index=True,
    )
    log.info("validate_documents: %d readable of %d rows, %d pass the schema, %d quarantined",
             len(readable), len(normalised), len(kept), len(quarantine))
    return kept, quarantine


def deduplicate_documents(valid: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop exact duplicates (same normalised text) and near-duplicates (shingle Jaccard).

    Near-duplicate candidates come from MinHash LSH (datasketch) over word shingles and are
    confirmed with the exact Jaccard similarity; the first document of a group is kept and the
    others go to quarantine naming the document they duplicate.
    """
    p = IngestionParams.of(params)
    d = p.dedup
    lsh = MinHashLSH(threshold=d.near_duplicate_threshold, num_perm=d.num_perm)
    seen_hash: dict[str, str] = {}
    shingles: dict[str, set] = {}
    keep, drop, rules = [], [], []
    for idx, row in valid.iterrows():
        digest = hashlib.sha1(row["text"].encode("utf-8")).hexdigest()
        if digest in seen_hash:
            drop.append(idx)
            rules.append(f"exact_duplicate_of:{seen_hash[digest]}")
            continue
        sh = word_shingles(row["text"], d.shingle_size)
        mh = MinHash(num_perm=d.num_perm, seed=p.seed)
        for s in sh:
            mh.update(s.encode("utf-8"))
        twin = None
        for cand in lsh.query(mh):
            a, b = sh, shingles[cand]
            if a and b and len(a & b) / len(a | b) >= d.near_duplicate_threshold:
                twin = cand
                break
        if twin is not None:
            drop.append(idx)
            rules.append(f"near_duplicate_of:{twin}")
            continue
        seen_hash[digest] = row["doc_id"]
        shingles[row["doc_id"]] = sh
        lsh.insert(row["doc_id"], mh)
        keep.append(idx)
    documents = valid.loc[keep, DOC_COLUMNS].reset_index(drop=True)
    quarantined = _to_quarantine(valid.loc[drop], "dedup", rules, [None] * len(drop))
    documents = _validated_documents(documents, params)
    log.info("deduplicate_documents: kept %d, %d duplicates", len(documents), len(quarantined))
    return documents, quarantined


def _validated_documents(documents: pd.DataFrame, params: dict) -> pd.DataFrame:
    p = IngestionParams.of(params).schema_
    return document_schema(p.min_chars, p.max_chars, p.min_cyrillic_share).validate(documents)


def collect_quarantine(raw_corpus: pd.DataFrame, documents: pd.DataFrame,
                       schema_quarantine: pd.DataFrame, dedup_quarantine: pd.DataFrame) -> pd.DataFrame:
    """Join the quarantine tables and check that every row read is kept or quarantined.

    Raises:
        RuntimeError: when read ≠ kept + quarantined (a row went missing).
    """
    quarantine = pd.concat([schema_quarantine, dedup_quarantine], ignore_index=True)
    read, kept, bad = len(raw_corpus), len(documents), len(quarantine)
    if read != kept + bad:
        raise RuntimeError(f"ingestion lost rows: read {read} != kept {kept} + quarantined {bad}")
    log.info("ingestion accounting: read %d = kept %d + quarantined %d; %d ids normalised (NFC, white space)",
             read, kept, bad, ids_normalised(raw_corpus))
    for rule, n in quarantine["rule"].map(_rule_family).value_counts().items():
        log.info("  quarantined by %s: %d", rule, n)
    return quarantine


def _rule_family(rule: str) -> str:
    """``near_duplicate_of:ru-00012`` → ``near_duplicate_of`` (for counting)."""
    return ";".join(r.split(":")[0] if "duplicate_of" in r else r for r in str(rule).split(";"))


# --------------------------------------------------------------------------- splits, facts
def split_documents(documents: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Assign every document to train / validation / test, stratified by language.

    The split is by document, so no document (and none of its prompts) is in two splits.
    """
    p = IngestionParams.of(params)
    s = p.split
    ids, langs = documents["doc_id"].tolist(), documents["lang"].tolist()
    strat = langs if min(pd.Series(langs).value_counts()) >= 10 else None
    train, rest, _, rest_lang = train_test_split(ids, langs, train_size=s.train, random_state=p.seed,
                                                 stratify=strat)
    val_share = s.validation / (s.validation + s.test)
    strat_rest = rest_lang if strat is not None else None
    val, test = train_test_split(rest, train_size=val_share, random_state=p.seed, stratify=strat_rest)
    split = {**dict.fromkeys(train, "train"), **dict.fromkeys(val, "validation"), **dict.fromkeys(test, "test")}
    out = documents[["doc_id", "lang"]].assign(split=documents["doc_id"].map(split))
    log.info("split_documents: %s", out["split"].value_counts().to_dict())
    return out


def build_facts(documents: pd.DataFrame, world_facts: pd.DataFrame) -> pd.DataFrame:
    """The fact table of the kept documents.

    Documents of the bundled world take their facts from the world's fact table (the ground
    truth); any other document gets the dates, numbers and names found in its text
    (``origin = "extracted"``), which is what the judges check truthfulness against there.
    """
    kept = set(documents["doc_id"])
    world = world_facts[world_facts["doc_id"].isin(kept)].assign(origin="world")
    world = world.astype({"kind": "str", "value": "str"}).fillna({"kind": ""})
    have = set(world["doc_id"])
    rows = []
    for doc in documents[~documents["doc_id"].isin(have)].itertuples(index=False):
        seen = set()
        for m in extract_mentions(doc.text):
            if (m["type"], m["surface"]) in seen:
                continue
            seen.add((m["type"], m["surface"]))
            rows.append({"fact_id": f"{doc.doc_id}/{m['type']}{len(seen)}", "doc_id": doc.doc_id,
                         "lang": doc.lang, "slot": m["type"], "kind": "", "value": m["surface"],
                         "surface": m["surface"], "origin": "extracted"})
    extracted = pd.DataFrame(rows, columns=list(world.columns))
    facts = pd.concat([world, extracted], ignore_index=True)
    log.info("build_facts: %d world facts, %d extracted", len(world), len(extracted))
    return facts


# --------------------------------------------------------------------------- prompts
def build_prompts(documents: pd.DataFrame, facts: pd.DataFrame, doc_splits: pd.DataFrame,
                  params: dict) -> pd.DataFrame:
    """Write prompts for the three tasks and sample ``per_task`` of each with a Tatar quota.

    Each prompt keeps what a judge needs: the QA answer and its key string, the fact ids it
    rests on, the message replied to, and the reference answer.

    Raises:
        ValueError: when the corpus cannot supply the requested number of prompts.
    """
    p = IngestionParams.of(params)
    rng = random.Random(p.seed)
    facts_by_doc = {k: g.to_dict("records") for k, g in facts.groupby("doc_id", sort=False)}
    split = dict(zip(doc_splits["doc_id"], doc_splits["split"]))
    pools: dict[tuple[str, str], list[dict]] = {}
    for doc in documents.itertuples(index=False):
        items = document_items(doc.doc_id, doc.lang, doc.title, doc.text, doc.qas,
                               facts_by_doc.get(doc.doc_id, []))
        for task, task_items in items.items():
            cap = p.prompts.max_items_per_doc.get(task, len(task_items))
            chosen = rng.sample(task_items, min(cap, len(task_items)))
            for it in chosen:
                pools.setdefault((task, doc.lang), []).append({
                    "prompt_id": f"{doc.doc_id}/{task}/{it['item_key']}",
                    "doc_id": doc.doc_id, "task_type": task, "lang": doc.lang,
                    "split": split[doc.doc_id],
                    "prompt": format_prompt(task, doc.lang, doc.text, it["input"]),
                    "input": it["input"], "reference": it["reference"],
                    "answer": it["answer"], "answer_key": it["answer_key"],
                    "fact_ids": list(it["fact_ids"]),
                })
    rows = []
    for task in TASKS:
        tt_pool, ru_pool = pools.get((task, "tt"), []), pools.get((task, "ru"), [])
        n = p.prompts.per_task
        n_tt = min(len(tt_pool), max(math.ceil(n * p.prompts.min_tatar_share), n - len(ru_pool)))
        n_ru = n - n_tt
        if n_ru > len(ru_pool):
            log.warning("build_prompts: only %d %s prompts available (asked for %d)",
                        len(ru_pool) + len(tt_pool), task, n)
            n_ru = len(ru_pool)
        rows += rng.sample(tt_pool, n_tt) + rng.sample(ru_pool, n_ru)
    prompts = pd.DataFrame(rows).sort_values("prompt_id").reset_index(drop=True)
    prompts = PROMPT_SCHEMA.validate(prompts)
    log.info("build_prompts: %d prompts, by task %s, Tatar share %.3f", len(prompts),
             prompts["task_type"].value_counts().to_dict(), (prompts["lang"] == "tt").mean())
    return prompts


# --------------------------------------------------------------------------- demonstrations
_NUMBER_IN_TEXT = re.compile(r"\d+")


def _wrong_fact(reference: str, lang: str, rng: random.Random) -> tuple[str, str] | None:
    """Change one number (or, failing that, one place name) in the reference; None if neither."""
    numbers = list(_NUMBER_IN_TEXT.finditer(reference))
    if numbers:
        m = rng.choice(numbers)
        old = int(m.group(0))
        new = old
        while new == old:
            new = max(1, old + rng.choice([-1, 1]) * rng.randint(1, max(2, old // 3)))
        return reference[:m.start()] + str(new) + reference[m.end():], f"number {old} -> {new}"
    forms = [pl["ru_prep"] if lang == "ru" else pl["tt_loc"] for pl in lx.PLACES.values()]
    present = [f for f in forms if f in reference]
    if present:
        old = present[0]
        new = rng.choice([f for f in forms if f != old])
        return reference.replace(old, new, 1), f"place {old} -> {new}"
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def make_variant(variant: str, reference: str, lang: str, rng: random.Random) -> tuple[str, str] | None:
    """Write one lower-quality variant of a reference answer; returns (response, what was done)."""
    if variant == "hedge":
        h = rng.choice(phrases.HEDGES[lang])
        return f"{h} {_lower_first(reference)}", f"hedge prefix «{h}»"
    if variant == "flattery":
        f = rng.choice(phrases.FLATTERY[lang])
        return f"{f} {reference}", f"flattery prefix «{f}»"
    if variant == "refusal":
        r = rng.choice(phrases.REFUSALS[lang])
        return r, "refusal instead of an answer"
    if variant == "rude":
        r = rng.choice(phrases.RUDE[lang])
        return f"{reference} {r}", f"rude suffix «{r}»"
    if variant == "wrong_fact":
        return _wrong_fact(reference, lang, rng)
    raise ValueError(f"unknown demonstration variant {variant!r}")


def build_demonstrations(prompts: pd.DataFrame, params: dict) -> pd.DataFrame:
    """SFT demonstrations: the reference answer for every prompt, plus labelled worse variants.

    Each variant (hedge, flattery, refusal, wrong_fact, rude) is added to a prompt with its
    configured rate; ``variant`` and ``detail`` say what was done to the reference.
    """
    p = IngestionParams.of(params)
    rng = random.Random(p.seed + 1)
    rows = []
    for pr in prompts.itertuples(index=False):
        base = {"prompt_id": pr.prompt_id, "doc_id": pr.doc_id, "task_type": pr.task_type,
                "lang": pr.lang, "split": pr.split, "prompt": pr.prompt}
        rows.append({**base, "demo_id": f"{pr.prompt_id}#reference", "variant": "reference",
                     "response": pr.reference, "detail": ""})
        for variant, rate in p.demonstrations.rates.items():
            if rng.random() < rate:
                made = make_variant(variant, pr.reference, pr.lang, rng)
                if made is not None:
                    rows.append({**base, "demo_id": f"{pr.prompt_id}#{variant}", "variant": variant,
                                 "response": made[0], "detail": made[1]})
    demos = DEMONSTRATION_SCHEMA.validate(pd.DataFrame(rows))
    log.info("build_demonstrations: %d rows, by variant %s", len(demos),
             demos["variant"].value_counts().to_dict())
    return demos


# --------------------------------------------------------------------------- summary
def ids_normalised(raw_corpus: pd.DataFrame) -> int:
    """How many rows the readers changed the id of (NFC, surrounding white space; ``id_normalised``)."""
    if "id_normalised" not in raw_corpus.columns:
        return 0
    return int(raw_corpus["id_normalised"].eq(True).sum())


def summarise_ingestion(raw_corpus: pd.DataFrame, documents: pd.DataFrame, quarantine: pd.DataFrame,
                        doc_splits: pd.DataFrame, prompts: pd.DataFrame,
                        demonstrations: pd.DataFrame) -> dict:
    """Counts of the run for ``08_reporting/ingestion_summary.json`` (and the log).

    ``documents.ids_normalised`` is how many rows' ``doc_id`` the readers NFC-normalised or
    stripped of surrounding white space (the readers' ``id_normalised`` column).
    """
    def counts(s: pd.Series) -> dict:
        return {str(k): int(v) for k, v in s.value_counts().sort_index().items()}

    splits_per_doc = prompts.groupby("doc_id")["split"].nunique()
    summary = {
        "documents": {
            "read": len(raw_corpus), "kept": len(documents), "quarantined": len(quarantine),
            "ids_normalised": ids_normalised(raw_corpus),
            "read_by_source": counts(raw_corpus["source"].fillna("unknown")),
            "kept_by_source": counts(documents["source"]),
            "kept_by_lang": counts(documents["lang"]),
            "by_split": counts(doc_splits["split"]),
            "quarantine_by_rule": counts(quarantine["rule"].map(_rule_family)) if len(quarantine) else {},
        },
        "prompts": {
            "total": len(prompts),
            "by_task": counts(prompts["task_type"]),
            "by_lang": counts(prompts["lang"]),
            "by_split": counts(prompts["split"]),
            "by_task_and_lang": {f"{t}/{lang}": int(n) for (t, lang), n in
                                 prompts.groupby(["task_type", "lang"]).size().items()},
            "tatar_share": round(float((prompts["lang"] == "tt").mean()), 4) if len(prompts) else 0.0,
            "documents_in_two_splits": int((splits_per_doc > 1).sum()),
        },
        "demonstrations": {"total": len(demonstrations), "by_variant": counts(demonstrations["variant"])},
    }
    log.info("ingestion summary: %s", summary)
    return summary


def plot_ingestion(summary: dict):
    """Documents kept and quarantined per source, and prompts per task and language (for kedro-viz)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs, prompts = summary["documents"], summary["prompts"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    read = docs.get("read_by_source", {})
    kept = docs.get("kept_by_source", {})
    sources = sorted(read)
    a.bar(sources, [kept.get(s, 0) for s in sources], label="kept")
    a.bar(sources, [read[s] - kept.get(s, 0) for s in sources], bottom=[kept.get(s, 0) for s in sources],
          label="quarantined")
    a.set_title(f"documents: {docs['kept']} kept, {docs['quarantined']} quarantined")
    a.set_xlabel("source")
    a.set_ylabel("documents")
    a.legend(fontsize=8)
    a.tick_params(axis="x", labelrotation=20, labelsize=7)
    cells = prompts.get("by_task_and_lang", {})
    labels = sorted(cells)
    b.barh(range(len(labels)), [cells[k] for k in labels])
    b.set_yticks(range(len(labels)), labels, fontsize=7)
    b.set_title(f"prompts: {prompts['total']} (Tatar share {prompts.get('tatar_share', 0):.2f})")
    b.set_xlabel("prompts")
    b.set_ylabel("task / language")
    fig.tight_layout()
    return fig
