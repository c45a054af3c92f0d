"""The datasets that keep every file a node reads or writes in the catalog: human labels and bias probes read in
place, a trainer's checkpoints, a saved folder's path, publish's bundle folders."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import DatasetError

from ru_rlhf.io.datasets import (
    BiasProbesDataset,
    CheckpointsDataset,
    FolderDataset,
    HumanLabelsDataset,
    saved_checkpoints,
)

HEADER = "item_id,prompt_id,response_id,annotator_id,criterion,score\n"


def test_human_labels_load_each_file_by_its_reader(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + "r0,p,r0,h1,helpfulness,4\nr1,p,r1,h1,helpfulness,abc\n", encoding="utf-8")
    loaded = HumanLabelsDataset(long_tables=[str(path)]).load()
    assert list(loaded["long_tables"]) == [str(path)] and loaded["toloka"] == {}
    table = loaded["long_tables"][str(path)]
    assert table["read_error"].tolist() == [None, "score_not_a_number"]  # rows kept for the node to quarantine
    assert HumanLabelsDataset().load() == {"long_tables": {}, "toloka": {}}  # none by default
    assert HumanLabelsDataset()._exists() and not HumanLabelsDataset(toloka=[str(tmp_path / "no.tsv")])._exists()
    with pytest.raises(DatasetError, match="more than once"):
        HumanLabelsDataset(long_tables=[str(path), str(path)])
    with pytest.raises(DatasetError, match="read-only"):
        HumanLabelsDataset().save({})


def test_bias_probes_are_the_bundled_templates_unless_rubia_is_named():
    from ru_rlhf import audit

    loaded = BiasProbesDataset().load()
    assert loaded["source"] == "bundled"
    pd.testing.assert_frame_equal(loaded["pairs"], audit.bias_pairs())
    for bad in ({"source": "rubia"}, {"source": "bundled", "path": "x.tsv"}, {"source": "other"}):
        with pytest.raises(DatasetError, match="source must be one of"):
            BiasProbesDataset(**bad)
    assert not BiasProbesDataset("rubia", "/no/such/rubia.tsv")._exists()


def test_checkpoints_load_lazily_in_step_order_and_save_only_checks(tmp_path):
    from ru_rlhf.models.policy import load_policy, train_tokenizer

    tok = train_tokenizer(["один два три четыре пять"] * 20, vocab_size=120, model_max_length=64)
    size = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 64}
    for step in (4, 2):
        load_policy(size=size, tokenizer=tok, seed=step).save_pretrained(tmp_path / "ppo" / f"step-{step:04d}")
    (tmp_path / "ppo" / "step-0006").mkdir()  # a state cut short: no config.json
    (tmp_path / "ppo" / "resume").mkdir()
    ds = CheckpointsDataset(str(tmp_path / "ppo"), load_args={"device": "cpu", "dtype": "float32"})
    loaded = ds.load()
    assert list(loaded) == ["step-0002", "step-0004"] and all(callable(f) for f in loaded.values())
    assert loaded["step-0004"]().config.hidden_size == 16
    assert CheckpointsDataset(str(tmp_path / "none")).load() == {}
    ds.save(saved_checkpoints(tmp_path / "ppo"))  # the trainer's folders are the dataset's: nothing to write
    elsewhere = tmp_path / "other" / "step-0002"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text("{}")
    with pytest.raises(DatasetError, match="not saved here, where the catalog reads them"):
        ds.save({"step-0002": elsewhere})


def test_a_folder_dataset_loads_the_path_and_writes_nothing(tmp_path):
    ds = FolderDataset(str(tmp_path))
    assert ds.load() == tmp_path and ds._exists()
    with pytest.raises(DatasetError, match="no saved folder here"):
        FolderDataset(str(tmp_path / "missing")).load()
    with pytest.raises(DatasetError, match="read-only"):
        ds.save(tmp_path)


def test_a_saved_figure_is_checked_once_it_is_laid_out(tmp_path, caplog):
    """The figure check runs on the figure the save has drawn: its problems (overlapping tick labels, an unlabelled
    axis) are still found and named with the file, and a clean figure gives no warning."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ru_rlhf.io.datasets import AtomicMatplotlibDataset

    bad, ax = plt.subplots(figsize=(2, 2))
    ax.bar([f"a long category name {i}" for i in range(12)], range(12))  # 12 long labels on a 2-inch axis
    ax.set_ylabel("count")
    good, ax2 = plt.subplots(figsize=(6, 3))
    ax2.plot([0, 1, 2], [1, 0, 1])
    ax2.set_xlabel("step")
    ax2.set_ylabel("gold")
    with caplog.at_level(logging.WARNING, logger="ru_rlhf.io.datasets"):
        AtomicMatplotlibDataset(filepath=str(tmp_path / "bad.png"), save_args={"dpi": 110}).save(bad)
        AtomicMatplotlibDataset(filepath=str(tmp_path / "good.png"), save_args={"dpi": 110}).save(good)
    assert (tmp_path / "bad.png").stat().st_size > 0 and (tmp_path / "good.png").stat().st_size > 0
    warned = [r.getMessage() for r in caplog.records]
    assert any("bad.png" in w and "overlapping x tick labels" in w for w in warned), warned
    assert any("bad.png" in w and "the x axis has no label" in w for w in warned), warned
    assert not any("good.png" in w for w in warned)
