"""Export the votes for publication: a Hugging Face dataset saved as parquet (pairs and ratings)."""

from __future__ import annotations

from pathlib import Path

from ru_rlhf.feedback import long_to_pairs, votes_to_long
from ru_rlhf.io.feedback_store import FeedbackStore


def export_votes(store_path: str | Path, out_dir: str | Path) -> dict:
    """Write ``ratings.parquet`` (the long table) and ``pairs.parquet`` (TRL format) under ``out_dir``,
    each readable with ``datasets.load_dataset("parquet", data_files=...)``. Model ids are kept: the
    export is for analysis, not for the annotators. Both files have a ``comment`` column: the voter's
    comment exactly as typed (not HTML-escaped).

    Raises:
        StoreError: no store at ``store_path`` (it is opened read-only: a typo never creates one).
    """
    import datasets

    store = FeedbackStore(store_path, read_only=True)
    try:
        votes = store.votes()
    finally:
        store.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    long = votes_to_long(votes)
    pairs, counts = long_to_pairs(long)
    datasets.Dataset.from_pandas(long, preserve_index=False).to_parquet(str(out / "ratings.parquet"))
    datasets.Dataset.from_pandas(pairs, preserve_index=False).to_parquet(str(out / "pairs.parquet"))
    return {"votes": len(votes), "ratings_rows": len(long), "pairs": len(pairs),
            "dropped_identical_texts": counts["dropped_identical_texts"], "out": str(out)}
