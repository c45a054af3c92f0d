"""Export the votes for publication: a Hugging Face dataset saved as parquet (pairs and ratings)."""

from __future__ import annotations

from pathlib import Path

from ru_rlhf.app.store import FeedbackStore, long_to_pairs, votes_to_long


def export_votes(store_path: str | Path, out_dir: str | Path) -> dict:
    """Write ``ratings.parquet`` (the long table) and ``pairs.parquet`` (TRL format) under ``out_dir``,
    each readable with ``datasets.load_dataset("parquet", data_files=...)``. Model ids are kept: the
    export is for analysis, not for the annotators."""
    import datasets

    votes = FeedbackStore(store_path).votes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    long = votes_to_long(votes)
    pairs = long_to_pairs(long)
    datasets.Dataset.from_pandas(long, preserve_index=False).to_parquet(str(out / "ratings.parquet"))
    datasets.Dataset.from_pandas(pairs, preserve_index=False).to_parquet(str(out / "pairs.parquet"))
    return {"votes": len(votes), "ratings_rows": len(long), "pairs": len(pairs), "out": str(out)}
