"""Toloka exports as Toloka writes them (the three real MERA ruDetox pools in ../shared/data): item identity
from the INPUT:* fields, categorical outputs mapped by parameters, control rows from GOLDEN:*, .gz, and
Krippendorff's α with a bootstrap interval checked against ``krippendorff.alpha`` on a matrix built here."""

from __future__ import annotations

import gzip
import shutil

import krippendorff
import numpy as np
import pandas as pd
import pytest

from ru_rlhf.agreement import alpha_interval
from ru_rlhf.io.annotations import AnnotationReadError, control_accuracy, read_toloka_export, toloka_item_id

POOLS = {
    "assignments_from_pool_41793133__17-10-2023.tsv":
        {"OUTPUT:toxic": {"criterion": "toxicity", "level": "nominal", "categories": ["false", "true"]}},
    "assignments_from_pool_41793355__21-10-2023.tsv":
        {"OUTPUT:is_match": {"criterion": "meaning_match", "level": "nominal", "categories": ["false", "true"]}},
    "assignments_from_pool_41793535__21-10-2023.tsv":
        {"OUTPUT:fluent": {"criterion": "fluency", "level": "ordinal", "categories": ["no", "partly", "fluent"]}},
}


@pytest.fixture(scope="module")
def pools(shared_data):
    out = {}
    for name, outputs in POOLS.items():
        out[name] = read_toloka_export(shared_data / "MERA-ruDetox" / name, outputs)
    return out


@pytest.mark.shared_data
def test_every_assignment_is_a_label_or_a_control_answer(pools, shared_data):
    for name, (labels, control, rejected) in pools.items():
        raw = pd.read_csv(shared_data / "MERA-ruDetox" / name, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        golden = [c for c in raw.columns if c.startswith("GOLDEN:")][0]
        assert len(labels) + len(control) + len(rejected) == len(raw) == 6000, name
        assert len(control) == int((raw[golden] != "").sum()) == 2000 and rejected.empty
        assert labels["read_error"].isna().all(), labels["read_error"].value_counts()
        inputs = [c for c in raw.columns if c.startswith("INPUT:")]
        # an item is its INPUT:* values: as many items as distinct INPUT tuples (841, 841, 874)
        items = {toloka_item_id(list(v)) for v in raw[inputs].itertuples(index=False)}
        assert set(labels["item_id"]) | set(control["item_id"]) == items
        assert len(items) == raw[inputs].drop_duplicates().shape[0]
        assert labels["annotator_id"].nunique() > 100
        acc = control_accuracy(control)
        assert acc["control_accuracy"].between(0, 1).all() and acc["control_answers"].sum() == 2000


@pytest.mark.shared_data
def test_alpha_per_pool_equals_krippendorff_on_the_same_matrix(pools, shared_data):
    """The reader's α and interval against krippendorff.alpha on a raters × units matrix built here from the
    raw file (items keyed by their INPUT:* values, answers coded by hand), to 4 decimals."""
    for name, outputs in POOLS.items():
        labels, _, _ = pools[name]
        (col, spec), = outputs.items()
        raw = pd.read_csv(shared_data / "MERA-ruDetox" / name, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        golden = "GOLDEN:" + col.split(":", 1)[1]
        raw = raw[raw[golden] == ""]
        inputs = [c for c in raw.columns if c.startswith("INPUT:")]
        code = {c: i + 1 for i, c in enumerate(spec["categories"])}
        raw = raw.assign(unit=raw[inputs].astype(str).agg("\x1f".join, axis=1), value=raw[col].str.lower().map(code))
        matrix = raw.pivot_table(index="ASSIGNMENT:worker_id", columns="unit", values="value", aggfunc="first")
        m = matrix.to_numpy(dtype=float)
        m = m[:, (~np.isnan(m)).sum(axis=0) >= 2]
        expected = krippendorff.alpha(reliability_data=m, level_of_measurement=spec["level"])
        got = alpha_interval(labels, spec["level"], n_boot=200, seed=0)
        assert round(got["alpha"], 4) == round(float(expected), 4), (name, got, expected)
        assert got["ci_low"] <= got["alpha"] <= got["ci_high"] and got["ci_high"] - got["ci_low"] > 0.001, got
        assert got["units"] == m.shape[1]


def test_unmapped_and_unknown_outputs_are_named(tmp_path):
    path = tmp_path / "pool.tsv"
    path.write_text("INPUT:text\tOUTPUT:fluent\tOUTPUT:extra\tGOLDEN:fluent\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
                    "a\tfluent\tx\t\tw1\tAPPROVED\n", encoding="utf-8")
    spec = {"OUTPUT:fluent": {"criterion": "fluency", "level": "ordinal", "categories": ["no", "partly", "fluent"]}}
    with pytest.raises(AnnotationReadError, match=r"pool.tsv: output column\(s\) \['OUTPUT:extra'\].*unmapped_output"):
        read_toloka_export(path, spec)
    path.write_text("INPUT:text\tOUTPUT:fluent\tGOLDEN:fluent\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
                    "a\tFluent \t\tw1\tAPPROVED\nb\tmaybe\t\tw1\tsubmitted\nc\tno\t\tw2\t rejected\n"
                    "d\tpartly\tno\tw2\tAPPROVED\n", encoding="utf-8")
    labels, control, rejected = read_toloka_export(path, spec)
    assert labels["score"].tolist()[0] == 3.0 and labels["read_error"].tolist()[1].startswith("unknown_category ('maybe'")
    assert rejected["rule"].tolist() == ["rejected_assignment"] and rejected["source_row"].tolist() == [4]
    assert control[["golden", "correct"]].values.tolist() == [["no", False]]
    with pytest.raises(AnnotationReadError, match="missing column"):
        read_toloka_export(path, spec, item_columns=["INPUT:item_id"])


def test_gz_and_comma_exports_read_alike(shared_data, tmp_path):
    name = "assignments_from_pool_41793535__21-10-2023.tsv"
    src = shared_data / "MERA-ruDetox" / name
    gz = tmp_path / (name + ".gz")
    with open(src, "rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    plain, _, _ = read_toloka_export(src, POOLS[name])
    packed, _, _ = read_toloka_export(gz, POOLS[name])
    assert packed.drop(columns="source_file").equals(plain.drop(columns="source_file"))
    raw = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False, quoting=3).head(50)
    csv_path = tmp_path / "pool.csv"
    raw.to_csv(csv_path, index=False)
    from_csv, control, _ = read_toloka_export(csv_path, POOLS[name])  # comma: from the extension
    assert len(from_csv) + len(control) == 50
    keys = ["item_id", "annotator_id", "criterion", "score"]
    first = plain[plain["source_row"] <= 51][keys].reset_index(drop=True)  # line 1 is the header
    assert from_csv[keys].reset_index(drop=True).equals(first)
