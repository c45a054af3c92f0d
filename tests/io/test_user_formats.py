"""A user's files as they have them: CSV/TSV pairs through a column mapping (with a prompt template), wide annotator
tables, every one of them gzipped too, and the two catalog datasets that read them; the real MERA ruDetox pairs."""

from __future__ import annotations

import gzip
import shutil

import krippendorff
import numpy as np
import pandas as pd
import pytest

from ru_rlhf.agreement import alpha, reliability_matrix
from ru_rlhf.io.annotations import AnnotationReadError, read_wide_table
from ru_rlhf.io.datasets import PairsDataset, RatingsDataset
from ru_rlhf.io.pairs import PairsReadError, read_pairs, validate_pairs

MAPPING = {"prompt": "instruction", "chosen": "good", "rejected": "bad"}


def _gz(path):
    out = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@pytest.fixture
def csv_pairs(tmp_path):
    df = pd.DataFrame({"instruction": ['Перепишите вежливо: "{comment}"', 'Перепишите вежливо: "{comment}"',
                                       "Без шаблона"],
                       "comment": ["ты дурак, иди отсюда", "сам такой", "x"],
                       "good": ["Вы не правы, уйдите, пожалуйста", "Вы тоже", "y"],
                       "bad": ["ты дурак, иди отсюда", "сам такой", "z"]})
    path = tmp_path / "pairs.csv"
    df.to_csv(path, index=False)
    return path


def test_csv_pairs_fill_the_prompt_template_from_the_row(csv_pairs):
    df = read_pairs(csv_pairs, columns=MAPPING, prompt_placeholders={"comment": "comment"})
    assert list(df["source_row"]) == [2, 3, 4]
    assert df.loc[0, "prompt"] == 'Перепишите вежливо: "ты дурак, иди отсюда"'
    assert df.loc[0, "chosen"] == "Вы не правы, уйдите, пожалуйста" and df.loc[0, "rejected"] == "ты дурак, иди отсюда"
    # a row whose prompt has no {comment} is not filled elsewhere: it is quarantined with the rule
    assert df.loc[2, "read_error"] == "missing_placeholder:comment"
    kept, quarantined = validate_pairs(df)
    assert len(kept) == 2 and list(quarantined["rule"]) == ["missing_placeholder:comment"]


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz", ".csv.gz"])
def test_tsv_and_gzipped_pairs_read_the_same_rows(csv_pairs, tmp_path, suffix):
    base = read_pairs(csv_pairs, columns=MAPPING)
    df = pd.read_csv(csv_pairs)
    if suffix.startswith(".tsv"):
        path = tmp_path / "pairs.tsv"  # a TSV has no quoting at all: written by hand, quotes stay quotes
        path.write_text("\n".join("\t".join(map(str, r)) for r in [df.columns, *df.to_numpy()]) + "\n",
                        encoding="utf-8")
    else:
        path = csv_pairs
    if suffix.endswith(".gz"):
        path = _gz(path)
    got = read_pairs(path, columns=MAPPING)
    pd.testing.assert_frame_equal(got[["prompt", "chosen", "rejected", "source_row"]],
                                  base[["prompt", "chosen", "rejected", "source_row"]])


def test_a_tsv_is_never_parsed_as_comma_csv(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("instruction\tgood\tbad\nа, б\tв, г\tд\n", encoding="utf-8")
    df = read_pairs(path, columns=MAPPING)
    assert df.loc[0, "prompt"] == "а, б" and df.loc[0, "chosen"] == "в, г"
    # and the delimiter can be named when the extension says nothing
    other = tmp_path / "p.txt"
    other.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert read_pairs(other, format="csv", columns=MAPPING, delimiter="tab").loc[0, "chosen"] == "в, г"


def test_pair_file_errors_name_the_file_and_rule(csv_pairs, tmp_path):
    with pytest.raises(PairsReadError, match=r"pairs.csv: missing column\(s\) \['nope'\].*rule: missing_column"):
        read_pairs(csv_pairs, columns={**MAPPING, "chosen": "nope"})
    with pytest.raises(PairsReadError, match="rule: missing_mapping"):
        read_pairs(csv_pairs)
    with pytest.raises(PairsReadError, match="rule: unknown_format"):
        read_pairs(tmp_path / "x.parquet", columns=MAPPING)
    bad = tmp_path / "bad.csv"
    bad.write_text("instruction,good,bad\na,b,c\na,b,c,d\n", encoding="utf-8")
    df = read_pairs(bad, columns=MAPPING)
    assert list(df["read_error"].fillna("")) == ["", "wrong_field_count"]  # the row is kept, with its rule


# --------------------------------------------------------------------------- wide annotator tables
@pytest.fixture
def wide(tmp_path):
    df = pd.DataFrame({"item": ["a", "b", "c", "d"],
                       "annotator1": ["good", "bad", "good", ""], "annotator1_id": ["w1", "w1", "w1", ""],
                       "annotator2": ["good", "bad", "ok", ""], "annotator2_id": ["w2", "w3", "w2", ""],
                       "annotator3": ["ok", "", "great", ""], "annotator3_id": ["w3", "", "w3", ""]})
    path = tmp_path / "wide.tsv"
    df.to_csv(path, sep="\t", index=False, quoting=3)
    return path


PATTERN = {"value": "annotator{n}", "id": "annotator{n}_id"}


@pytest.mark.parametrize("gz", [False, True])
def test_wide_table_melts_to_the_long_layout(wide, gz):
    path = _gz(wide) if gz else wide
    long = read_wide_table(path, "item", PATTERN, "quality", level="ordinal", categories=["bad", "ok", "good"])
    good = long[long["read_error"].isna()]
    assert len(good) == 7 and set(good["annotator_id"]) == {"w1", "w2", "w3"}
    assert good.set_index(["item_id", "annotator_id"]).loc[("a", "w3"), "score"] == 2.0  # "ok" = 2nd category
    errors = long[long["read_error"].notna()]
    assert sorted(errors["read_error"].str.split(" ").str[0]) == ["no_labels", "unknown_category"]
    assert set(long["source_row"]) == {2, 3, 4, 5}  # every data row accounted for


def test_wide_table_alpha_equals_krippendorff_on_the_same_matrix(tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.integers(1, 6, 40)
    df = pd.DataFrame({"item": [f"i{k}" for k in range(40)]})
    for n in range(1, 5):
        noisy = np.clip(truth + rng.integers(-1, 2, 40), 1, 5).astype(str)
        noisy[rng.random(40) < 0.2] = ""
        df[f"r{n}"] = noisy
    path = tmp_path / "scores.csv"
    df.to_csv(path, index=False)
    long = read_wide_table(path, "item", [{"value": f"r{n}"} for n in range(1, 5)], "score", level="interval")
    assert set(long["annotator_id"].dropna()) == {"r1", "r2", "r3", "r4"}  # no id column: the column is the rater
    matrix = df.set_index("item")[[f"r{n}" for n in range(1, 5)]].replace("", np.nan).astype(float).T.to_numpy()
    direct = krippendorff.alpha(reliability_data=matrix, level_of_measurement="interval")
    ours = alpha(long[long["read_error"].isna()], "interval")
    assert round(ours, 4) == round(direct, 4)
    assert reliability_matrix(long[long["read_error"].isna()]).shape == (4, 40)


def test_wide_table_errors(wide):
    with pytest.raises(AnnotationReadError, match=r"wide.tsv: missing column\(s\) \['nope'\]"):
        read_wide_table(wide, "nope", PATTERN, "quality", categories=["bad", "ok", "good"])
    with pytest.raises(AnnotationReadError, match="no annotator column matches"):
        read_wide_table(wide, "item", {"value": "rater{n}"}, "quality")
    long = read_wide_table(wide, "item", PATTERN, "quality")  # no categories: numbers expected
    assert long["read_error"].dropna().str.startswith(("score_not_a_number", "no_labels")).all()


# --------------------------------------------------------------------------- catalog datasets
def test_pairs_and_ratings_datasets(csv_pairs, wide, tmp_path):
    ds = PairsDataset(files=[{"path": str(csv_pairs), "columns": MAPPING, "prompt_placeholders": {"comment": "comment"},
                              "criterion": "harmlessness", "lang": "ru"}])
    df = ds.load()
    assert len(df) == 3 and set(df["criterion"]) == {"harmlessness"} and set(df["source"]) == {"user"}
    from kedro.io import DatasetError

    with pytest.raises(DatasetError, match="unknown key"):
        PairsDataset(files=[{"path": "x.csv", "colums": MAPPING, "criterion": "helpfulness"}])
    with pytest.raises(DatasetError, match="or criterion"):
        PairsDataset(files=[{"path": "x.csv", "columns": MAPPING}])
    ratings = RatingsDataset(pools=[{"name": "q", "format": "wide", "path": str(wide), "item_column": "item",
                                     "annotators": PATTERN, "criterion": "quality", "level": "ordinal",
                                     "categories": ["bad", "ok", "good"]}]).load()
    assert set(ratings) == {"labels", "control", "rejected", "levels"}
    assert (ratings["labels"]["pool"] == "q").all() and ratings["levels"].to_dict("records") == [
        {"pool": "q", "criterion": "quality", "level": "ordinal"}]
    with pytest.raises(DatasetError, match="distinct name"):
        RatingsDataset(pools=[{"name": "a", "format": "wide", "path": "x"}, {"name": "a", "format": "wide", "path": "y"}])


# --------------------------------------------------------------------------- the real ruDetox pairs
@pytest.mark.shared_data
def test_rudetox_pairs_read_as_mera_ships_them(shared_data):
    path = shared_data / "MERA-ruDetox" / "dataset.csv"
    df = read_pairs(path, columns={"prompt": "instruction", "chosen": "outputs", "rejected": "inputs"},
                    prompt_placeholders={"toxic_comment": "inputs"})
    raw = pd.read_csv(path)
    assert len(df) == len(raw) == 800
    assert df["read_error"].isna().all()
    assert all(t in p and "{toxic_comment}" not in p for p, t in zip(df["prompt"], raw["inputs"]))
    kept, quarantined = validate_pairs(df)
    # three rows whose "detoxified" answer is the toxic comment itself
    assert len(kept) + len(quarantined) == 800 and set(quarantined["rule"]) == {"identical_chosen_rejected"}
    from ru_rlhf.text import same_text

    assert len(quarantined) == sum(same_text(a, b) for a, b in zip(raw["inputs"], raw["outputs"])) == 3
