"""Write the bundled corpus and fact table.

    python -m ru_rlhf.world --out data/01_raw            # the committed defaults
    python -m ru_rlhf.world --out /tmp/w --seed 7 --n-ru 50 --n-tt 10

With the default arguments the files are byte-identical to the committed ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ru_rlhf.world.generator import corpus_jsonl, facts_csv, generate_world


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/01_raw"))
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--n-ru", type=int, default=1000)
    parser.add_argument("--n-tt", type=int, default=250)
    args = parser.parse_args(argv)
    docs, facts = generate_world(args.seed, args.n_ru, args.n_tt)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "world_corpus.jsonl").write_text(corpus_jsonl(docs), encoding="utf-8")
    (args.out / "world_facts.csv").write_text(facts_csv(facts), encoding="utf-8")
    print(f"wrote {len(docs)} documents and {len(facts)} facts to {args.out}")


if __name__ == "__main__":
    main()
