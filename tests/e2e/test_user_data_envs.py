"""End to end on a user's own data: the ru_detox env reads MERA ruDetox in place (three Toloka pools as Toloka
exported them, 800 pairs as MERA ships them), with no file converted by hand.

At test sizes: the agreement-only mode on the real pools (α checked against ``krippendorff.alpha`` on a matrix built
here from the raw files), and the pairs stage on the smoke run's small policy. The full run (``kedro run --env
ru_detox``) is measured in docs/benchmarks.md, not here."""

from __future__ import annotations

import json
import shutil

import krippendorff
import pandas as pd
import pytest

from tests.conftest import TEST_DATA, run_kedro

POOLS = {"toxicity": ("assignments_from_pool_41793133__17-10-2023.tsv", "OUTPUT:toxic", ["false", "true"], "nominal"),
         "meaning": ("assignments_from_pool_41793355__21-10-2023.tsv", "OUTPUT:is_match", ["false", "true"], "nominal"),
         "fluency": ("assignments_from_pool_41793535__21-10-2023.tsv", "OUTPUT:fluent", ["no", "partly", "fluent"],
                     "ordinal")}
RU_DETOX = TEST_DATA / "data" / "ru_detox"


def _direct_alpha(path, output: str, categories: list[str], level: str) -> float:
    """α computed here from the raw export with pandas and krippendorff alone: non-control rows, an item is its
    INPUT:* values, a worker a row of the raters x units matrix."""
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    golden = "GOLDEN:" + output.split(":", 1)[1]
    raw = raw[(raw[golden].str.strip() == "") & (raw["ASSIGNMENT:status"].str.upper() != "REJECTED")]
    inputs = [c for c in raw.columns if c.startswith("INPUT:")]
    raw = raw.assign(item=raw[inputs].agg("\x1f".join, axis=1),
                     value=raw[output].str.strip().str.lower().map({c: i + 1 for i, c in enumerate(categories)}))
    matrix = raw.pivot_table(index="ASSIGNMENT:worker_id", columns="item", values="value", aggfunc="first")
    return float(krippendorff.alpha(reliability_data=matrix.to_numpy(dtype=float), level_of_measurement=level))


@pytest.mark.e2e
@pytest.mark.shared_data
def test_agreement_only_mode_on_the_real_toloka_pools(project_root, shared_data):
    res = run_kedro(["run", "--env", "ru_detox", "--pipelines", "user_ratings",
                     "--params", "user_ratings.max_drop=1,user_ratings.bootstrap=200"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((RU_DETOX / "08_reporting" / "user_data" / "rating_agreement.json").read_text("utf-8"))
    by_pool = {e["pool"]: e for e in report["pools"]}
    assert set(by_pool) == set(POOLS)
    for pool, (name, output, cats, level) in POOLS.items():
        e = by_pool[pool]
        assert (e["items"], e["labels"], e["labels_per_item"]) == (800, 4000, 5.0)
        assert round(e["alpha"], 4) == round(_direct_alpha(shared_data / "MERA-ruDetox" / name, output, cats, level), 4)
        assert e["ci_low"] < e["alpha"] < e["ci_high"] and e["bootstrap"] == 200
        assert e["control_answers"] == 2000 and not e["passes"]  # real crowd labels: α well below 0.667
        assert len(e["dropped_by_alpha"]) <= 1
    for a in report["accounting"]:  # 6 000 assignments = 4 000 labels + 2 000 control answers, none rejected
        assert a["labels_read"] + a["control_answers"] + a["lines_without_labels"] == 6000
    md = (RU_DETOX / "08_reporting" / "user_data" / "rating_agreement.md").read_text("utf-8")
    assert "95 % bootstrap interval" in md and "| toxicity | toxicity | nominal | 800 |" in md
    summary = (RU_DETOX / "08_reporting" / "run_summary.md").read_text("utf-8")
    assert summary.startswith("# Run summary: user_ratings@ru_detox") and "- **user_ratings**: Krippendorff" in summary


@pytest.mark.e2e
@pytest.mark.shared_data
def test_pairs_stage_on_the_real_rudetox_pairs(project_root, shared_data, smoke_run, tmp_path):
    """The user_pairs stage reads the 800 pairs from the CSV MERA ships, on the smoke run's SFT policy (copied into a
    scratch data root), with short training: the plumbing and the harmlessness scorer's acceptance numbers."""
    models = smoke_run.root / "06_models"
    root = tmp_path / "ru_detox"
    for name in ("sft_policy", "reference_policy", "tokenizer"):
        shutil.copytree(models / name, root / "06_models" / name)
    res = run_kedro(["run", "--env", "ru_detox", "--pipelines", "user_pairs", "--params",
                     "user_pairs.reward_model.epochs=1,user_pairs.dpo.max_steps=3,user_pairs.ipo.max_steps=3,user_pairs.evaluation.prompts=8,"
                     "user_pairs.evaluation.max_new_tokens=8,user_pairs.rl.steps=2,user_pairs.rl.eval_every=1,"
                     "user_pairs.rl.probe_prompts=4,user_pairs.rl.max_new_tokens=8,user_pairs.audit.rm_pairs=40,"
                     "user_pairs.audit.policy_pairs=4,user_pairs.audit.max_new_tokens=6"], data_root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = root / "08_reporting" / "user_data"
    pairs = pd.read_parquet(root / "03_primary" / "user_data" / "preference_pairs.parquet")
    quarantine = pd.read_parquet(root / "03_primary" / "user_data" / "pairs_quarantine.parquet")
    assert len(pairs) + len(quarantine) == 800 and set(quarantine["rule"]) == {"identical_chosen_rejected"}
    assert pairs["split"].value_counts()["test"] == round(0.2 * pairs["prompt_id"].nunique())
    harm = json.loads((out / "harm_classifier.json").read_text("utf-8"))
    # the bar: at least 80 % of held-out toxic comments flagged, at most 5 % of their detoxified versions
    assert harm["held_out_rejected"]["flagged"] >= 0.80 and harm["held_out_chosen"]["flagged"] <= 0.05
    acc = json.loads((out / "reward_accuracy.json").read_text("utf-8"))
    assert acc["test_pairs"] == (pairs["split"] == "test").sum() and acc["tfidf_baseline"]["harmlessness"] >= 0.9
    assert set(acc["reward_model"]) == {"harmlessness"}  # the head the pairs train, and only it (one epoch here)
    summary = json.loads((out / "user_pairs_summary.json").read_text("utf-8"))
    assert summary["methods"]["dpo"]["gold"] == "not available (no gold judge)"
    md = (out / "user_pairs.md").read_text("utf-8")
    assert "| harmlessness |" in md and "TF-IDF baseline" in md
    audit = json.loads((out / "audit.json").read_text("utf-8"))
    assert audit["bias_source"] == "rubia" and audit["rm_pairs"] == 40  # RuBia read in place from ../shared/data


def test_an_env_names_the_pipelines_a_plain_run_runs(project_root):
    from kedro.framework.startup import bootstrap_project

    from ru_rlhf.session import EnvPipelinesSession

    bootstrap_project(project_root)
    with EnvPipelinesSession.create(project_path=project_root, env="ru_detox") as s:
        assert s.env_pipelines() == ["ingestion", "sft", "user_ratings", "user_pairs"]
    with EnvPipelinesSession.create(project_path=project_root, env="smoke") as s:
        assert s.env_pipelines() is None  # __default__, as before
    with EnvPipelinesSession.create(project_path=project_root, env="ru_detox",
                                    runtime_params={"run": {"pipeline": ["sft"]}}) as s:
        with pytest.raises(ValueError, match="parameter 'run' takes only 'pipelines'"):
            s.env_pipelines()


@pytest.mark.e2e
def test_undeclared_user_data_names_the_catalog_to_edit(project_root):
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "user_ratings"])
    assert res.returncode != 0
    assert "user_ratings_raw: no stage writes it; it is your data: declare it in conf/<env>/catalog.yml" in res.stderr
