"""End to end: every env loads; `kedro run` in smoke (the session's one whole run, the ``smoke_run`` fixture, and
runs of single stages into their own data roots) and on the real corpora (external)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import EXTERNAL, run_kedro


@pytest.mark.parametrize("env", ["base", "smoke", "full", "external", "hub", "local_models", "ru_detox", "custom"])
def test_every_env_loads(project_root, env):
    bootstrap_project(project_root)
    with KedroSession.create(project_path=project_root, env=env) as session:
        ctx = session.load_context()
        params = ctx.params
        assert params["ingestion"]["seed"] == 2024  # base values survive the env's soft merge
        assert "raw_corpus" in ctx.catalog
        if env == "smoke":
            assert params["ingestion"]["prompts"]["per_task"] == 30
            assert params["ingestion"]["prompts"]["max_items_per_doc"]["qa"] == 3
        comparisons = [params["reward_modeling"][k] for k in ("compare_backbone", "distributional", "cross_lingual")]
        # the reward-model comparisons and CoH's guard grid: out of the default run (#28), in the full env
        assert comparisons == ([True] * 3 if env == "full" else [False] * 3), comparisons
        assert len(params["alignment"]["coh"]["train"]["grid"]) == (4 if env == "full" else 1)
        if env == "full":
            assert "/data/full/" in str(ctx.catalog.get("documents")._filepath)
        if env == "hub":  # the pipelines' own keys name the hub models (loaded by the same loaders)
            assert params["sft"]["policy"]["name_or_path"] == "ai-forever/rugpt3small_based_on_gpt2"
            assert params["sft"]["policy"]["device"] == "auto" and params["sft"]["policy"]["dtype"] == "auto"
            assert params["reward_modeling"]["encoder"]["name_or_path"] == "DeepPavlov/rubert-base-cased"
            assert params["sft"]["seed"] == 2024 and "pretrain" in params["sft"]  # base kept
            assert "/data/hub/02_intermediate/" in str(ctx.catalog.get("documents")._filepath)
        if env in ("ru_detox", "custom"):  # a user's data comes in through the catalog, read in place
            assert {"user_pairs_raw", "user_ratings_raw"} <= set(ctx.catalog.keys())
            assert params["run"]["pipelines"][-1] == "user_pairs"
        if env in ("hub", "local_models"):  # saved models load back onto the GPU when there is one
            assert ctx.catalog.get("sft_policy")._load_args == {"device": "auto", "dtype": "auto"}
        if env == "local_models":  # model folders, not hub ids (scripts/make_local_models.py writes them)
            assert params["sft"]["policy"]["name_or_path"].endswith("data/local_models/01_raw/models/qwen2")
            assert params["reward_modeling"]["encoder"]["name_or_path"].endswith("data/local_models/01_raw/models/bert")


def test_telemetry_is_off(project_root):
    assert (project_root / ".telemetry").read_text().strip() == "consent: false"


@pytest.mark.e2e
def test_smoke_run_of_ingestion(project_root, tmp_path):
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "ingestion"], data_root=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "08_reporting" / "ingestion_summary.json").read_text(encoding="utf-8"))
    assert summary["prompts"]["by_task"] == {"dialogue": 30, "qa": 30, "summarization": 30}
    d = summary["documents"]
    assert d["read"] == d["kept"] + d["quarantined"] == 1250
    prompts = pd.read_parquet(tmp_path / "03_primary" / "prompts.parquet")
    assert prompts.groupby("doc_id")["split"].nunique().max() == 1


@pytest.mark.e2e
def test_the_older_pipeline_flag_still_works(project_root, tmp_path):
    res = run_kedro(["run", "--env", "smoke", "--pipeline", "ingestion", "--nodes", "ingestion.normalise_documents"],
                    data_root=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.shared_data
def test_external_env_ingests_the_real_corpora(project_root, shared_data):
    out = EXTERNAL / "08_reporting" / "ingestion_summary.json"
    out.unlink(missing_ok=True)
    res = run_kedro(["run", "--env", "external", "--pipelines", "ingestion"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    d = json.loads(out.read_text(encoding="utf-8"))["documents"]
    # 240 XQuAD paragraphs, 255 factRuEval news files, 148 UD Tatar sentences
    assert d["read_by_source"] == {"UD_Tatar-NMCTT": 148, "factRuEval-2016": 255, "xquad": 240}
    assert d["read"] == d["kept"] + d["quarantined"] == 643
    q = pd.read_parquet(EXTERNAL / "02_intermediate" / "document_quarantine.parquet")
    # every quarantined row names its file, row and rule
    assert q[["source_file", "source_row", "rule"]].notna().all().all()
    docs = pd.read_parquet(EXTERNAL / "02_intermediate" / "documents.parquet")
    assert not docs["text"].str.startswith("\ufeff").any()  # XQuAD's BOMs are normalised away


@pytest.mark.e2e
def test_smoke_run_of_the_whole_default_pipeline(smoke_run):
    """`kedro run --env smoke`: every built stage runs end to end at toy sizes and writes its report."""
    root, res = smoke_run.root, smoke_run.result
    reports = root / "08_reporting"
    outputs = [reports / "ingestion_summary.json", reports / "sft_summary.json", reports / "agreement.json",
               reports / "curation_summary.json", reports / "reward_model" / "metrics.json",
               reports / "reward_model" / "reliability.png", reports / "reward_model" / "umap.png",
               reports / "alignment_summary.json", reports / "evaluation" / "comparison.md",
               reports / "evaluation" / "summary.json", reports / "ethics_appendix.md",
               reports / "ethics" / "overoptimisation.png", reports / "alignment" / "reward_kl_frontier.png",
               reports / "alignment" / "reward_kl_frontier.parquet", reports / "training_emissions.jsonl",
               root / "09_publish" / "manifest.parquet",
               *[root / "07_model_output" / f"{m}.parquet"
                 for m in ("sft", "dpo", "ipo", "coh", "ppo", "reinforce", "grpo", "rloo", "cem")]]
    for out in outputs:
        assert out.exists(), out
    # the run ends with its summary: each stage's headline and where its report is
    summary = (reports / "run_summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Run summary: __default__@smoke")
    for stage in ("ingestion", "sft", "preference_curation", "reward_modeling", "alignment", "evaluation",
                  "ethics_audit", "publish"):
        assert f"- **{stage}**: " in summary, stage
    assert res.stdout.rstrip().endswith(f"(saved as {reports / 'run_summary.md'})") or \
        res.stdout.rstrip().endswith("08_reporting/run_summary.md)"), res.stdout[-1500:]
    assert summary.rstrip() in res.stdout
    sft = json.loads((reports / "sft_summary.json").read_text(encoding="utf-8"))
    assert sft["candidates"]["pairs"] == 90 * 6
    assert {"qa_answer_rate", "sft_validation_perplexity", "pretrained_validation_perplexity"} <= set(sft)
    cand = pd.read_json(root / "03_primary" / "candidates.jsonl", lines=True)
    assert len(cand) == 90 and cand["responses"].map(len).eq(6).all()
    metrics = json.loads((reports / "reward_model" / "metrics.json").read_text(encoding="utf-8"))
    assert {"multi_head", "calibration"} <= set(metrics)
    # the comparison models are out of the default graph's run (base's switches; the full env trains them)
    assert "distributional" not in metrics and len(metrics["not_trained"]) == 3, metrics.get("not_trained")
    summary = json.loads((reports / "alignment_summary.json").read_text(encoding="utf-8"))
    for method in ("dpo", "ipo", "coh", "ppo", "reinforce", "grpo", "rloo", "cem"):
        assert {"gold_gain", "kl"} <= set(summary[method])
        assert (root / "06_models" / "policies" / method / "config.json").exists()
    comparison = pd.read_parquet(reports / "evaluation" / "comparison.parquet")
    assert set(comparison["model"]) == {"sft", "dpo", "ipo", "coh", "ppo", "reinforce", "grpo", "rloo", "cem"}
    # the smoke run writes its appendix under its own data root, never the base docs'
    assert (root / "docs" / "ethics_appendix.md").exists()


@pytest.mark.e2e
def test_one_alignment_method_runs_alone(smoke_run, tmp_path):
    """`--namespaces alignment.dpo` runs DPO only, on a copy of the smoke run's data root (its inputs)."""
    root = smoke_run.copy_to(tmp_path / "smoke")
    info = root / "08_reporting" / "alignment" / "dpo_info.json"
    other = root / "08_reporting" / "alignment" / "ppo_info.json"
    before = {f: f.stat().st_mtime_ns for f in (info, other)}  # the copy keeps the smoke run's times
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "alignment", "--namespaces", "alignment.dpo"],
                    data_root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert info.stat().st_mtime_ns > before[info]  # DPO wrote its report again
    assert other.stat().st_mtime_ns == before[other]  # PPO did not run
    assert "alignment.ppo" not in res.stdout + res.stderr
