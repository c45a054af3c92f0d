"""On the session's smoke run (the ``smoke_run`` fixture):

* the run is recorded in MLflow with the metrics the reports hold (read back with the client);
* a second smoke run from scratch (an empty data root), inside a network namespace with no
  network at all (``unshare -n``, as root), succeeds and writes identical metrics files.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

from ru_rlhf.vocabulary import METHODS
from tests.conftest import env_context, run_kedro

# keys whose values are wall-clock measurements, not results: excluded from the comparison
TIMING = re.compile(r"(seconds|runtime|per_second|_per_s$|elapsed|timestamp|(^|_)time$|^started$|^finished$)")


def _tracked_run(project_root: Path, run_name: str, data_root: Path):
    """The MLflow run named ``run_name`` that wrote under ``data_root`` (each run logs its parameters, and the
    checkpoint folder names the data root), the newest if several."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project_root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ru_rlhf")
    assert exp is not None, "no MLflow experiment: was the run tracked?"
    checkpoints = data_root / "06_models" / "checkpoints"
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.env = 'smoke' and attributes.run_name = "
                              f"'{run_name}' and params.`sft.checkpoint_dir` = '{checkpoints}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs, f"no run {run_name} of {data_root} in the MLflow store"
    return client, runs[0]


@pytest.mark.e2e
def test_the_smoke_run_is_recorded_in_mlflow(project_root, smoke_run):
    client, run = _tracked_run(project_root, "__default__@smoke", smoke_run.root)
    assert run.info.status == "FINISHED"
    m, params = run.data.metrics, run.data.params
    for c in ("helpfulness", "truthfulness", "harmlessness"):
        assert f"alpha.{c}" in m  # Krippendorff's α per criterion
        assert f"rm.multi_head.{c}.validation.accuracy_annotators" in m
    assert "rm.ece_before" in m and "rm.ece_after" in m
    summary = json.loads((smoke_run.root / "08_reporting" / "alignment_summary.json").read_text(encoding="utf-8"))
    for method in ("dpo", "ipo", "coh", "ppo", "reinforce", "grpo", "rloo", "cem"):
        assert m[f"{method}.gold_gain"] == pytest.approx(summary[method]["gold_gain"])  # this run's numbers
        assert f"{method}.kl" in m and f"eval.{method}.win_rate_vs_sft" in m
        assert f"carbon.{method}.energy_kwh" in m and f"carbon.{method}.co2_kg" in m
    assert "ingestion.read" in m
    assert params.get("sft.seed") is not None and "reward_modeling.seed" in params  # flattened parameters
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "08_reporting")}
    assert "08_reporting/alignment_summary.json" in arts


@pytest.mark.e2e
def test_cards_carry_this_runs_numbers_and_the_dry_run_lists_every_file(project_root, smoke_run):
    import subprocess
    import sys

    root = smoke_run.root
    pub = root / "09_publish"
    agreement = json.loads((root / "08_reporting" / "agreement.json").read_text(encoding="utf-8"))
    summary = json.loads((root / "08_reporting" / "alignment_summary.json").read_text(encoding="utf-8"))
    metrics = json.loads((root / "08_reporting" / "reward_model" / "metrics.json").read_text(encoding="utf-8"))
    ds_card = (pub / "preference-pairs" / "README.md").read_text(encoding="utf-8")
    assert ds_card.startswith("---\n") and "license: mit" in ds_card and "SIMULATED annotators" in ds_card
    for c in ("helpfulness", "truthfulness", "harmlessness"):
        assert f"| {c} | {agreement['before'][c]:.3f} | {agreement['after'][c]:.3f} |" in ds_card
    rm_card = (pub / "reward-model" / "README.md").read_text(encoding="utf-8")
    assert f"{metrics['calibration']['ece_before']:.3f}" in rm_card and "Reward-hacking probes" in rm_card
    for m in ("dpo", "ipo", "coh", "ppo", "reinforce", "grpo", "rloo", "cem"):
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
                         env={**os.environ, "RU_RLHF_MLFLOW": "off", "RU_RLHF_DATA_ROOT": str(root)})
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = pd.read_parquet(pub / "manifest.parquet")
    # the dataset, the reward model and every policy bundle (SFT and each method)
    assert manifest["bundle"].nunique() == 2 + 1 + len(METHODS)
    assert f"would upload {manifest['bundle'].nunique()} repos, {len(manifest)} files" in res.stdout
    for f in manifest.itertuples(index=False):
        assert f.bytes == (pub / f.bundle / f.file).stat().st_size
        assert f"      {f.file}  {f.bytes:,} B" in res.stdout
    assert "dataset your-hf-user/ru-rlhf-preference-pairs" in res.stdout and "dry run: nothing uploaded" in res.stdout


def _metric_files(root: Path) -> dict[str, object]:
    """Every JSON and parquet report under ``root``; the root's own path, which some reports name, reads
    ``<data root>`` (two runs into two roots compare)."""
    out = {}
    for f in sorted((root / "08_reporting").rglob("*.json")):
        out[str(f.relative_to(root))] = json.loads(f.read_text(encoding="utf-8").replace(str(root), "<data root>"))
    for f in sorted((root / "08_reporting").rglob("*.parquet")):
        df = pd.read_parquet(f)
        out[str(f.relative_to(root))] = pd.DataFrame({
            c: df[c].map(lambda v: v.replace(str(root), "<data root>") if isinstance(v, str) else v)
            for c in df.columns if not TIMING.search(c)})
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
def test_a_second_smoke_run_offline_gives_identical_metrics(project_root, smoke_run, tmp_path):
    before = _metric_files(smoke_run.root)
    assert len(before) > 20
    second = tmp_path / "second"  # an empty data root: everything recomputed, nothing resumed
    cmd = ["run", "--env", "smoke"]
    offline = os.geteuid() == 0 and shutil.which("unshare")
    if offline:
        import subprocess
        import sys

        kedro = str(Path(sys.executable).with_name("kedro"))
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "RU_RLHF_DATA_ROOT": str(second)}
        env.pop("HF_HUB_OFFLINE", None)  # no offline switch: the network namespace is the proof
        res = subprocess.run(["unshare", "-n", "--", kedro, *cmd], cwd=project_root, env=env, capture_output=True,
                             text=True, timeout=900)
    else:
        res = run_kedro(cmd, timeout=900, data_root=second)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = _metric_files(second)
    assert set(before) == set(after)
    diffs = [d for k in before for d in _diff(before[k], after[k], k)]
    assert not diffs, "\n".join(diffs[:30])
    if not offline:  # the repeat is proven above; only the no-network part could not be
        warnings.warn("the run repeated identically; the no-network proof needs root and unshare", stacklevel=1)


def _strict(text: str, where: str):
    def refuse(constant):
        raise ValueError(f"{where}: {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.e2e
def test_every_json_report_of_the_smoke_run_is_strict_json(smoke_run):
    """Reports parse with a strict parser (no bare NaN / Infinity, which JavaScript and jq reject)."""
    root = smoke_run.root
    files = sorted((root / "08_reporting").rglob("*.json")) + sorted((root / "09_publish").rglob("*.json"))
    assert len(files) > 10
    for f in files:
        _strict(f.read_text(encoding="utf-8"), str(f))
    for f in sorted((root / "08_reporting").rglob("*.jsonl")):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                _strict(line, f"{f}:{i + 1}")


@pytest.mark.e2e
def test_every_report_plot_of_the_smoke_run_is_readable(project_root, smoke_run):
    """Every plot node of the default pipeline, run again on the smoke run's saved inputs: labelled axes, no
    empty panel without its "no data: why", readable tick labels, rates on [0, 1] (ru_rlhf.figures)."""
    from kedro.framework.project import pipelines

    from ru_rlhf.figures import figure_problems

    problems, rendered = [], []
    with env_context("smoke", smoke_run.root, project_root) as context:
        catalog = context.catalog
        for node in pipelines["__default__"].nodes:
            plots = [o for o in node.outputs if o in catalog and type(catalog.get(o)).__name__ == "AtomicMatplotlibDataset"]
            if not plots:
                continue
            out = node.run({name: catalog.load(name) for name in node.inputs})
            for name in plots:
                figures = out[name].values() if isinstance(out[name], dict) else \
                    out[name] if isinstance(out[name], list) else [out[name]]
                for fig in figures:
                    rendered.append(name)
                    problems += figure_problems(fig, name)
                    assert any(ax.has_data() or ax.texts for ax in fig.axes), name  # something is drawn
    assert len(rendered) >= 19, rendered
    assert not problems, problems


@pytest.mark.e2e
def test_a_run_missing_its_inputs_ends_with_the_message_and_fails_in_mlflow(project_root, tmp_path):
    """No traceback: the message (what is missing, what to run first) is the last thing printed; the MLflow run
    is named `<pipelines>@<env>` and marked FAILED."""
    import time

    import mlflow

    started = int(time.time() * 1000)
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "reward_modeling"], data_root=tmp_path)
    assert res.returncode != 0
    err = res.stderr.rstrip()
    assert err.splitlines()[-1] == "run first: kedro run --pipelines ingestion,sft,preference_curation", err[-2000:]
    assert "MissingInputsError: inputs of this run are missing" in err
    assert "Traceback" not in err and "╭" not in err + res.stdout
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project_root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ru_rlhf")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'reward_modeling@smoke' "
                              f"and attributes.start_time >= {started}",
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs and runs[0].info.status == "FAILED", runs
