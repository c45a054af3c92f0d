"""The bundled world: a deterministic, seeded generator of Russian and Tatar news and its facts."""

from ru_rlhf.world.generator import (
    corpus_jsonl,
    date_surface,
    facts_csv,
    generate_world,
    quantity_surface,
    ru_plural,
)

__all__ = ["corpus_jsonl", "date_surface", "facts_csv", "generate_world", "quantity_surface", "ru_plural"]
