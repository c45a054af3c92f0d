"""Experiment tracking: the run's metrics and report files go to the MLflow run kedro-mlflow opens.

kedro-mlflow (configured in ``conf/base/mlflow.yml``) makes every ``kedro run`` an MLflow run in
the project's local store and logs the parameters (flattened). This module adds what it cannot
know: which numbers in our reports are the run's metrics. :class:`ReportTrackingHook` watches the
datasets as they are saved; for a report named in :data:`METRICS` it logs the extracted metrics,
and every file saved under the reporting layer is logged as an artifact. With tracking switched
off (``disable_tracking`` in ``mlflow.yml``) there is no active run and the hook does nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _agreement(d: dict) -> dict:
    out = {f"alpha_before.{c}": v for c, v in d.get("before", {}).items()}
    out.update({f"alpha.{c}": v for c, v in d.get("after", {}).items()})
    out["agreement_gate_passed"] = float(bool(d.get("passed")))
    return out


def _reward(d: dict) -> dict:
    out = {}
    for kind in ("multi_head", "distributional"):
        for head, splits in d.get(kind, {}).items():
            if head == "scalar_spearman_gold":
                continue
            for split in ("validation", "test"):
                m = splits.get(split, {})
                for key in ("accuracy", "auc", "accuracy_annotators"):
                    out[f"rm.{kind}.{head}.{split}.{key}"] = m.get(key)
    for head, m in d.get("baseline", {}).items():
        if isinstance(m, dict) and isinstance(m.get("test"), dict):
            out[f"rm.tfidf_baseline.{head}.test.accuracy"] = m["test"].get("accuracy")
    for split, v in d.get("multi_head", {}).get("scalar_spearman_gold", {}).items():
        out[f"rm.multi_head.scalar_spearman_gold.{split}"] = v
    cal = d.get("calibration", {})
    out["rm.ece_before"], out["rm.ece_after"] = cal.get("ece_before"), cal.get("ece_after")
    return out


def _alignment(d: dict) -> dict:
    out = {}
    for method, m in d.items():
        if isinstance(m, dict) and method not in ("sft", "frontier"):
            for key in ("gold_gain", "gold_gain_se", "kl", "gold", "seconds"):
                out[f"{method}.{key}"] = m.get(key)
    out["sft.gold"] = d.get("sft", {}).get("gold")
    for curve, fit in (d.get("frontier") or {}).items():  # Gao et al.'s fit of each over-optimisation curve
        if isinstance(fit, dict):
            for key in ("alpha", "beta", "peak_kl"):
                out[f"frontier.{curve}.{key}"] = fit.get(key)
    return out


def _evaluation(d: dict) -> dict:
    out = {}
    for model, m in d.get("models", {}).items():
        for key in ("win_rate_vs_sft", "gold", "likert_mean", "bertscore_f1", "mauve", "trigger_rate"):
            out[f"eval.{model}.{key}"] = m.get(key)
    return out


def _sft(d: dict) -> dict:
    return {"sft.qa_answer_rate": d.get("qa_answer_rate"),
            "sft.validation_perplexity": d.get("sft_validation_perplexity"),
            "sft.identical_candidates_share": d.get("candidates", {}).get("share_prompts_all_identical")}


def _ingestion(d: dict) -> dict:
    docs = d.get("documents", {})
    out = {f"ingestion.{k}": docs.get(k) for k in ("read", "kept", "quarantined")}
    out["ingestion.prompts"] = d.get("prompts", {}).get("total")
    return out


def _curation(d: dict) -> dict:
    out = {"curation.pairs": d.get("pairs"), "curation.quarantined_ratings": d.get("quarantined_ratings")}
    for crit, q in d.get("biases", {}).get("by_criterion", {}).items():  # label quality against gold
        out[f"curation.{crit}.gold_tied_share"] = q.get("gold_tied_share")
        out[f"curation.{crit}.panel_agrees_with_gold"] = q.get("panel_agrees_with_gold_on_untied")
    return out


# dataset name → the metrics in it (names as logged to MLflow)
METRICS: dict[str, Callable[[Any], dict]] = {
    "ingestion_summary": _ingestion,
    "sft_summary": _sft,
    "agreement": _agreement,
    "curation_summary": _curation,
    "reward_metrics": _reward,
    "alignment_summary": _alignment,
    "evaluation_summary": _evaluation,
}


def metrics_of(dataset_name: str, data: Any) -> dict[str, float]:
    """The finite metrics a report holds (``{}`` for a dataset that is not a tracked report)."""
    fn = METRICS.get(dataset_name)
    if fn is None or not isinstance(data, dict):
        return {}
    return {k: f for k, v in fn(data).items() if (f := _num(v)) is not None}


class ReportTrackingHook:
    """Log tracked reports' metrics and every reporting-layer file to the active MLflow run."""

    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        try:
            import mlflow
        except ImportError:  # tracking is optional at run time
            return
        if mlflow.active_run() is None:
            return
        metrics = metrics_of(dataset_name, data)
        if metrics:
            mlflow.log_metrics(metrics)
            log.info("mlflow: %d metrics from %s", len(metrics), dataset_name)
        path = self._file_of(dataset_name)
        if path is not None and "08_reporting" in path.parts and path.is_file():
            mlflow.log_artifact(str(path), artifact_path=str(Path(*path.parts[path.parts.index("08_reporting"):]).parent))

    def _file_of(self, dataset_name: str) -> Path | None:
        if self._catalog is None:
            return None
        try:
            ds = self._catalog.get(dataset_name)
        except Exception:  # noqa: BLE001 — a dataset the catalog cannot resolve is simply not logged
            return None
        fp = getattr(ds, "_filepath", None)
        return Path(str(fp)) if fp is not None else None


def _mlflow_hook_class():
    """:class:`ProjectMlflowHook`'s class, built on kedro-mlflow's (imported here, so that this module imports
    without kedro-mlflow)."""
    from kedro_mlflow.framework.hooks.mlflow_hook import MAX_PARAM_VAL_LENGTH, MlflowHook, _flatten_dict

    class ProjectMlflowHook(MlflowHook):
        """kedro-mlflow's hook with its per-node cost cut. Ours because kedro-mlflow has no setting for it.

        kedro-mlflow reopens the run (an SQL read) and logs every leaf of every parameter input one SQL write at
        a time before every node. A stage's parameters are the input of each of its nodes, so the same values
        were written again for every node: about 70 ms a node, a tenth of the smoke run. This hook reopens the
        run only when it is not the active one already, and logs each parameter once per run, all of a node's
        new ones in one batch (``mlflow.log_params``). What ends up in MLflow is the same.
        """

        # an override is a hook only with the marker of its own (pluggy reads it from the subclass's function)
        @hook_impl
        def before_pipeline_run(self, run_params, pipeline, catalog):  # noqa: D102 — kedro-mlflow's, plus a reset
            self._logged_params: dict = {}
            return super().before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)

        @hook_impl
        def before_node_run(self, node, catalog, inputs, is_async):  # noqa: D102 — see the class
            import mlflow

            if self.run_id is not None:
                active = mlflow.active_run()
                if active is None or active.info.run_id != self.run_id:
                    mlflow.start_run(run_id=self.run_id, nested=self.mlflow_config.tracking.run.nested)
            if not self._is_mlflow_enabled:
                return
            params = {k[7:]: v for k, v in inputs.items() if k.startswith("params:")}
            if "parameters" in inputs:
                params["parameters"] = inputs["parameters"]
            if self.flatten:
                params = _flatten_dict(d=params, recursive=self.recursive, sep=self.sep)
            params = {self.sanitize_param_name(k): v for k, v in params.items()}
            logged = getattr(self, "_logged_params", None)
            if logged is None:
                logged = self._logged_params = {}
            new = {k: v for k, v in params.items() if k not in logged}
            short = {k: v for k, v in new.items() if len(str(v)) <= MAX_PARAM_VAL_LENGTH}
            if short:
                mlflow.log_params(short)
            for k, v in new.items():
                if k not in short:  # too long for MLflow: the configured strategy (truncate, tag or fail)
                    self._log_param(k, v)
            logged.update(new)

    return ProjectMlflowHook


def project_mlflow_hook():
    """The MLflow hook ``settings.py`` registers (kedro-mlflow's own entry-point hook is disabled there)."""
    return _mlflow_hook_class()()
