"""After the smoke run (tests/e2e/test_envs_and_runs.py runs it first):

* the run is recorded in MLflow with the metrics the reports hold (read back with the client);
* a second smoke run from scratch (checkpoints removed), inside a network namespace with no
  network at all (``unshare -n``, as root), succeeds and writes identical metrics files.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_kedro

SMOKE = Path(__file__).resolve().parents[2] / "data" / "smoke"
# keys whose values are wall-clock measurements, not results: excluded from the comparison
TIMING = re.compile(r"(seconds|runtime|per_second|_per_s$|elapsed|timestamp|^time$)")


def _last_run(project_root: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project_root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ru_rlhf")
    assert exp is not None, "no MLflow experiment: was the smoke run tracked?"
    runs = client.search_runs([exp.experiment_id], filter_string="tags.env = 'smoke' and attributes.run_name = '__default__'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs, "no smoke run in the MLflow store"
    return client, runs[0]


@pytest.mark.e2e
def test_the_smoke_run_is_recorded_in_mlflow(project_root):
    client, run = _last_run(project_root)
    assert run.info.status == "FINISHED"
    m, params = run.data.metrics, run.data.params
    for c in ("helpfulness", "truthfulness", "harmlessness"):
        assert f"alpha.{c}" in m  # Krippendorff's α per criterion
        assert f"rm.multi_head.{c}.validation.accuracy_annotators" in m
    assert "rm.ece_before" in m and "rm.ece_after" in m
    summary = json.loads((SMOKE / "08_reporting" / "alignment_summary.json").read_text(encoding="utf-8"))
    for method in ("dpo", "ipo", "coh", "ppo", "reinforce", "cem"):
        assert m[f"{method}.gold_gain"] == pytest.approx(summary[method]["gold_gain"])  # this run's numbers
        assert f"{method}.kl" in m and f"eval.{method}.win_rate_vs_sft" in m
        assert f"carbon.{method}.energy_kwh" in m and f"carbon.{method}.co2_kg" in m
    assert "ingestion.read" in m
    assert params.get("sft.seed") is not None and "reward_modeling.seed" in params  # flattened parameters
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "08_reporting")}
    assert "08_reporting/alignment_summary.json" in arts


@pytest.mark.e2e
def test_cards_carry_this_runs_numbers_and_the_dry_run_lists_every_file(project_root):
    import subprocess
    import sys

    pub = SMOKE / "09_publish"
    agreement = json.loads((SMOKE / "08_reporting" / "agreement.json").read_text(encoding="utf-8"))
    summary = json.loads((SMOKE / "08_reporting" / "alignment_summary.json").read_text(encoding="utf-8"))
    metrics = json.loads((SMOKE / "08_reporting" / "reward_model" / "metrics.json").read_text(encoding="utf-8"))
    ds_card = (pub / "preference-pairs" / "README.md").read_text(encoding="utf-8")
    assert ds_card.startswith("---\n") and "license: mit" in ds_card and "SIMULATED annotators" in ds_card
    for c in ("helpfulness", "truthfulness", "harmlessness"):
        assert f"| {c} | {agreement['before'][c]:.3f} | {agreement['after'][c]:.3f} |" in ds_card
    rm_card = (pub / "reward-model" / "README.md").read_text(encoding="utf-8")
    assert f"{metrics['calibration']['ece_before']:.3f}" in rm_card and "Reward-hacking probes" in rm_card
    for m in ("dpo", "ipo", "coh", "ppo", "reinforce", "cem"):
        card = (pub / f"policy-{m}" / "README.md").read_text(encoding="utf-8")
        assert f"gain over SFT {summary[m]['gold_gain']:.3f}" in card
        assert "synthetic bundled corpus" in card and "Sycophancy" in card
        assert (pub / f"policy-{m}" / "model.safetensors").exists() and (pub / f"policy-{m}" / "tokenizer.json").exists()
    assert not list(pub.rglob("checkpoint-*"))
    # the dry run, with no network at all where we can take it away
    cmd = [sys.executable, "-m", "ru_rlhf.publish", "--env", "smoke", "--dry-run"]
    if os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "-n", "--", *cmd]
    res = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RU_RLHF_MLFLOW": "off"})
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = pd.read_parquet(pub / "manifest.parquet")
    assert f"would upload 9 repos, {len(manifest)} files" in res.stdout  # dataset, reward model, 7 policies
    for f in manifest.itertuples(index=False):
        assert f.bytes == (pub / f.bundle / f.file).stat().st_size
        assert f"      {f.file}  {f.bytes:,} B" in res.stdout
    assert "dataset your-hf-user/ru-rlhf-preference-pairs" in res.stdout and "dry run: nothing uploaded" in res.stdout


def _metric_files(root: Path) -> dict[str, object]:
    out = {}
    for f in sorted((root / "08_reporting").rglob("*.json")):
        out[str(f.relative_to(root))] = json.loads(f.read_text(encoding="utf-8"))
    for f in sorted((root / "08_reporting").rglob("*.parquet")):
        df = pd.read_parquet(f)
        out[str(f.relative_to(root))] = df[[c for c in df.columns if not TIMING.search(c)]]
    return out


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys differ {sorted(set(a) ^ set(b))}"]
        return [d for k in a if not TIMING.search(str(k)) for d in _diff(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths differ"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)
        except AssertionError as err:
            return [f"{path}: {str(err)[:300]}"]
        return []
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.e2e
def test_a_second_smoke_run_offline_gives_identical_metrics(project_root, tmp_path):
    first = tmp_path / "first"
    shutil.copytree(SMOKE / "08_reporting", first / "08_reporting")
    before = _metric_files(first)
    assert len(before) > 20
    shutil.rmtree(SMOKE / "06_models" / "checkpoints", ignore_errors=True)  # recompute, do not resume
    cmd = ["run", "--env", "smoke"]
    offline = os.geteuid() == 0 and shutil.which("unshare")
    if offline:
        import subprocess
        import sys

        kedro = str(Path(sys.executable).with_name("kedro"))
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
        env.pop("HF_HUB_OFFLINE", None)  # no offline switch: the network namespace is the proof
        res = subprocess.run(["unshare", "-n", "--", kedro, *cmd], cwd=project_root, env=env, capture_output=True,
                             text=True, timeout=900)
    else:
        res = run_kedro(cmd, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = _metric_files(SMOKE)
    assert set(before) == set(after)
    diffs = [d for k in before for d in _diff(before[k], after[k], k)]
    assert not diffs, "\n".join(diffs[:30])
    if not offline:
        pytest.skip("the run repeated identically, but the no-network proof needs root and unshare")
