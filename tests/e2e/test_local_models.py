"""`kedro run --env local_models`: the whole loop on models of real Hugging Face architectures, loaded from
folders that scripts/make_local_models.py writes (a Qwen2 policy by default, a GPT-2 one by parameter,
a BERT encoder), as a hub model would be loaded."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import run_kedro

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("dpo", "ipo", "coh", "ppo", "reinforce", "grpo", "rloo", "cem")
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}
MODEL_KEYS = (("sft", "policy"), ("sft", "tokenizer"), ("reward_modeling", "encoder"))


def _params(env: str) -> dict:
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=env) as session:
        # paths differ by the env's data root only
        params = json.loads(json.dumps(session.load_context().params).replace(f"data/{env}/", "data/ENV/"))
    for pipeline, key in MODEL_KEYS:
        params[pipeline].pop(key, None)
    return params


def test_local_models_runs_at_the_smoke_sizes():
    """The env repeats conf/smoke's sizes (Kedro merges one env over base): they must not drift apart.
    Only the model keys differ (folders instead of sizes)."""
    assert _params("local_models") == _params("smoke")


def _make_models(out: Path) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("make_local_models", ROOT / "scripts" / "make_local_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(out, "smoke")


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def local_run(request, tmp_path_factory):
    """One `kedro run --env local_models` per policy architecture, into its own data root."""
    root = tmp_path_factory.mktemp(f"local_models_{request.param}")
    folders = _make_models(root / "01_raw" / "models")
    # the reward model on the BERT folder too (off in base for time, #28): the comparison runs a hub encoder's path
    params = ["reward_modeling.compare_backbone=true"]
    if request.param != "qwen2":
        params.append(f"sft.policy.name_or_path={folders[request.param]}")
    args = ["run", "--env", "local_models", "--params", ",".join(params)]
    res = run_kedro(args, timeout=900, data_root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return request.param, root


@pytest.mark.e2e
def test_every_policy_is_a_transformers_model_of_the_named_architecture(local_run):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch, root = local_run
    sft = json.loads((root / "08_reporting" / "sft_summary.json").read_text(encoding="utf-8"))
    assert sft["policy"]["architecture"] == ARCHITECTURES[arch] and sft["policy"]["base"].endswith(arch)
    sft_weights = load_file(root / "06_models" / "sft_policy" / "model.safetensors")
    changed = {}
    for m in METHODS:
        folder = root / "06_models" / "policies" / m
        assert {p.suffix for p in folder.iterdir() if p.is_file()} <= {".json", ".safetensors"}, list(folder.iterdir())
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        assert type(model).__name__ == ARCHITECTURES[arch]
        weights = load_file(folder / "model.safetensors")
        changed[m] = max(float((weights[k] - sft_weights[k]).abs().max()) for k in sft_weights)
        bundle = root / "09_publish" / f"policy-{m}"
        assert type(AutoTokenizer.from_pretrained(bundle)).__name__ in ("GPT2Tokenizer", "Qwen2Tokenizer")
        card = (bundle / "README.md").read_text(encoding="utf-8")
        assert f"`{ARCHITECTURES[arch]}`" in card and f"models/{arch}`" in card and "Llama-style" not in card
        assert f"- {arch}" in card  # the model type is a tag
        assert torch.equal(AutoModelForCausalLM.from_pretrained(bundle).lm_head.weight, model.lm_head.weight)
    # every method's updates moved the model away from SFT. PPO, REINFORCE, GRPO and RLOO return their best state on the
    # validation probe, which at these sizes may be step 0 (the SFT policy itself): then their log must show
    # the updates moved the policy (a KL other than 0: RLOO's first-order estimate may be negative), and the saved
    # weights must be SFT's exactly
    for m, diff in changed.items():
        info = json.loads((root / "08_reporting" / "alignment" / f"{m}_info.json").read_text(encoding="utf-8"))
        if m in ("ppo", "reinforce", "grpo", "rloo"):
            log = pd.read_parquet(root / "08_reporting" / "alignment" / f"{m}_log.parquet")
            assert log["kl"].dropna().iloc[-1] != 0, (m, log)
            assert (diff == 0) == (info["best_step"] == 0), (m, diff, info)
        else:
            assert diff > 0, (m, changed)


@pytest.mark.e2e
def test_reward_models_on_both_backbones_and_the_evaluation(local_run):
    arch, root = local_run
    rm_encoder = json.loads((root / "06_models" / "reward_model" / "encoder" / "config.json").read_text())
    assert rm_encoder["model_type"] == arch  # the default backbone: the SFT policy's own transformer
    other = json.loads((root / "06_models" / "other_backbone_reward_model" / "encoder" / "config.json").read_text())
    assert other["model_type"] == "bert"
    metrics = json.loads((root / "08_reporting" / "reward_model" / "metrics.json").read_text(encoding="utf-8"))
    assert {"multi_head", "multi_head_bert"} <= set(metrics)
    comparison = pd.read_parquet(root / "08_reporting" / "evaluation" / "comparison.parquet")
    assert set(comparison["model"]) == {"sft", *METHODS}
    assert (root / "08_reporting" / "ethics_appendix.md").exists()


@pytest.mark.e2e
def test_the_publish_dry_run_lists_the_local_architecture_bundles(local_run):
    arch, root = local_run
    res = subprocess.run([sys.executable, "-m", "ru_rlhf.publish", "--env", "local_models", "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RU_RLHF_MLFLOW": "off", "RU_RLHF_DATA_ROOT": str(root)})
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = pd.read_parquet(root / "09_publish" / "manifest.parquet")
    assert manifest["bundle"].nunique() == 2 + 1 + len(METHODS)  # the dataset, the RM, SFT and every method
    assert f"would upload {manifest['bundle'].nunique()} repos, {len(manifest)} files" in res.stdout
    assert "dry run: nothing uploaded" in res.stdout
    assert {"tokenizer.json", "tokenizer_config.json", "model.safetensors", "README.md"} <= \
        set(manifest.loc[manifest["bundle"] == "policy-ppo", "file"])
