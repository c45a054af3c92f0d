"""Compare two runs' data roots, wall-clock fields aside.

    python scripts/compare_runs.py BEFORE_ROOT AFTER_ROOT

Used to show that a refactoring changed no result: every file under the two roots (reports, logs, figures,
model weights) is compared byte for byte; a file that differs is compared again with its wall-clock fields
masked (JSON keys, parquet columns, JSON-lines fields and Markdown table columns whose name says time, speed,
energy or memory), and a TRL model card's front matter as a set of lines (TRL writes its tags from a set).
Exit status 0 when the runs are equal, 1 with one line per difference otherwise.
"""

from __future__ import annotations

import filecmp
import json
import re
import sys
from pathlib import Path

import pandas as pd

# Names of fields that measure the run rather than the result.
WALL_CLOCK = re.compile(
    r"(second|_s$|^s$|per_sec|wall|time|minutes|duration|date|started|finished|kwh|energy|co2|"
    r"\(wh\)|\(g\)|cpu_power|rss|memory|emission|commit|dirty)",
    re.IGNORECASE,
)
# An absolute path into a data root (``/work/main/data/smoke/08_reporting/x.json``) names the root the run wrote
# to, which differs between the two runs compared: only the part from the layer folder on is compared.
DATA_PATH = re.compile(r"(?:/[^\s`'\"/]+)+?/(?=0\d_[a-z_]+/)")


# A line that reports a run's cost (the cards' "Training cost (CodeCarbon estimate): 2 s, 0.01 Wh, …"): its numbers
# are wall-clock figures.
COST_LINE = re.compile(r"^.*CodeCarbon.*$", re.MULTILINE)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _unroot(text: str) -> str:
    text = COST_LINE.sub(lambda m: NUMBER.sub("*", m.group(0)), text)
    return DATA_PATH.sub("<root>/", text)


def _mask_json(value):
    if isinstance(value, dict):
        return {k: ("*" if WALL_CLOCK.search(str(k)) else _mask_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_json(v) for v in value]
    return _unroot(value) if isinstance(value, str) else value


def _mask_markdown(text: str) -> list[str]:
    """Table cells under wall-clock headers become '*'; a model card's front matter is sorted."""
    out: list[str] = []
    masked: set[int] = set()
    lines = _unroot(text).splitlines()
    if lines and lines[0] == "---" and "---" in lines[1:]:
        end = lines.index("---", 1)
        lines = ["---", *sorted(lines[1:end]), *lines[end:]]
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                out.append(line)
                continue
            if not masked and any(WALL_CLOCK.search(c) for c in cells):
                masked = {i for i, c in enumerate(cells) if WALL_CLOCK.search(c)}
                out.append(line)
                continue
            out.append("|".join("*" if i in masked else c for i, c in enumerate(cells)))
        else:
            masked = set()
            out.append(line)
    return out


def _differs(a: Path, b: Path) -> str | None:
    if filecmp.cmp(a, b, shallow=False):
        return None
    suffix = a.suffix
    if suffix == ".json":
        if _mask_json(json.loads(a.read_text())) == _mask_json(json.loads(b.read_text())):
            return None
        return "JSON differs outside wall-clock fields"
    if suffix == ".jsonl":
        rows = [
            sorted(json.dumps(_mask_json(json.loads(line)), sort_keys=True) for line in p.read_text().splitlines() if line)
            for p in (a, b)
        ]
        return None if rows[0] == rows[1] else "JSON lines differ outside wall-clock fields"
    if suffix == ".parquet":
        frames = [pd.read_parquet(p) for p in (a, b)]
        frames = [f.drop(columns=[c for c in f.columns if WALL_CLOCK.search(str(c))]) for f in frames]
        for f in frames:  # a publish manifest: a card's size and hash follow its text, compared (masked) on its own
            if {"file", "bytes", "sha256"} <= set(f.columns):
                card = f["file"].astype(str).str.endswith("README.md")
                f.loc[card, ["bytes", "sha256"]] = None
        try:
            pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
        except AssertionError as err:
            return "table differs: " + " ".join(str(err).split())[:200]
        return None
    if suffix == ".md":
        if _mask_markdown(a.read_text()) == _mask_markdown(b.read_text()):
            return None
        return "Markdown differs outside wall-clock columns"
    return "bytes differ"


def compare(before: Path, after: Path) -> list[str]:
    """Every difference between the two roots, one line each (empty when equal)."""
    files_a = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files_b = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    problems = [f"only in {before}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {after}: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        why = _differs(before / rel, after / rel)
        if why:
            problems.append(f"{rel}: {why}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    before, after = (Path(p) for p in argv)
    problems = compare(before, after)
    n_files = sum(1 for p in before.rglob("*") if p.is_file())
    for line in problems:
        print(line)
    print(f"{n_files} files under {before}; {len(problems)} differences (wall-clock fields aside)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
