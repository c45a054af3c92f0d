"""Project hooks."""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)


class MissingInputsError(RuntimeError):
    """A stage was asked to run on a checkout whose earlier stages have not produced its inputs."""


class MissingInputsHook:
    """Before a run, check that every input the selected pipelines read (and do not produce)
    exists; if one does not, stop at once naming the pipeline that writes it."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        missing = []
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters":
                continue
            try:
                exists = catalog.exists(name)
            except Exception:  # a dataset that cannot even say: let the run report it
                continue
            if not exists:
                producers = [p for p, pl in _all_pipelines().items() if name in pl.all_outputs()]
                missing.append((name, producers))
        if missing:
            lines = [f"  {name}: run `kedro run --pipelines {','.join(prod) or '?'}` first" for name, prod in missing]
            from ru_rlhf.pipeline_registry import ORDER

            rank = {name: i for i, name in enumerate(ORDER)}  # in data-flow order, the order they must run in
            first = sorted({p for _, prod in missing for p in prod}, key=lambda p: (rank.get(p, len(ORDER)), p))
            raise MissingInputsError(
                "inputs of this run are missing (earlier stages have not run in this env):\n" + "\n".join(lines)
                + (f"\nrun first: kedro run --pipelines {','.join(first)}" if first else ""))


def _all_pipelines() -> dict:
    """Every stage's pipeline, in data-flow order (a ``--pipelines`` run loads only the ones it asks for)."""
    import importlib

    from ru_rlhf.pipeline_registry import ORDER

    return {name: importlib.import_module(f"ru_rlhf.pipelines.{name}").create_pipeline() for name in ORDER}


class CarbonHook:
    """CodeCarbon's offline tracker around every node tagged ``training``.

    Each training node's energy (kWh), CO₂ (kg), wall time and the method it trained are written
    to the ``training_emissions`` dataset (one row per node; a rerun replaces its row) and, when a
    run is tracked, to MLflow. The country (for the grid's carbon intensity) is the parameter
    ``carbon.country_iso_code``; ``carbon.enabled: false`` switches it off. CodeCarbon measures
    the CPU through RAPL where the machine exposes it and otherwise estimates from the CPU's TDP
    (it says which in its log); either way the figures are estimates, not metered energy.
    """

    def __init__(self) -> None:
        self._params: dict = {}
        self._catalog = None
        self._trackers: dict = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            self._params = dict(context.params.get("carbon") or {})
        except Exception:  # noqa: BLE001 — no parameters: carbon tracking stays off
            self._params = {}

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    def _enabled(self, node) -> bool:
        return bool(self._params.get("enabled")) and "training" in node.tags

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async) -> None:
        if not self._enabled(node):
            return
        import time

        from codecarbon import OfflineEmissionsTracker

        tracker = OfflineEmissionsTracker(
            country_iso_code=self._params.get("country_iso_code", "RUS"), save_to_file=False, log_level="error",
            measure_power_secs=int(self._params.get("measure_power_secs", 15)), tracking_mode="process",
            project_name=node.name)
        tracker.start()
        self._trackers[node.name] = (tracker, time.perf_counter())

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async) -> None:
        self._finish(node, "ok")

    @hook_impl
    def on_node_error(self, error, node, catalog, inputs, is_async) -> None:
        self._finish(node, f"failed: {type(error).__name__}")

    def _finish(self, node, status: str) -> None:
        import time

        entry = self._trackers.pop(node.name, None)
        if entry is None:
            return
        tracker, start = entry
        co2 = tracker.stop()
        data = tracker.final_emissions_data
        row = {"node": node.name, "method": _method_of(node.name), "status": status,
               "seconds": round(time.perf_counter() - start, 2),
               "energy_kwh": float(getattr(data, "energy_consumed", 0.0) or 0.0),
               "co2_kg": float(co2 or 0.0), "country": self._params.get("country_iso_code", "RUS"),
               "cpu_model": getattr(data, "cpu_model", None), "cpu_power_w": getattr(data, "cpu_power", None),
               "estimate": "codecarbon offline tracker (RAPL where available, else the CPU's TDP)"}
        log.info("carbon: %s", row)
        if self._catalog is not None:
            try:
                import pandas as pd

                ds = self._catalog.get("training_emissions")
                old = ds.load()
                ds.save(pd.concat([old[old["node"] != node.name], pd.DataFrame([row])], ignore_index=True))
            except Exception as err:  # noqa: BLE001 — cost accounting never fails a training node
                log.warning("carbon: could not record %s: %s", node.name, err)
        import mlflow  # a dependency (kedro-mlflow): the run's cost goes to the active MLflow run too

        if mlflow.active_run() is not None:
            mlflow.log_metrics({f"carbon.{row['method']}.energy_kwh": row["energy_kwh"],
                                f"carbon.{row['method']}.co2_kg": row["co2_kg"],
                                f"carbon.{row['method']}.seconds": row["seconds"]})


def _method_of(node_name: str) -> str:
    """``alignment.ppo.train`` → ``ppo``; other training nodes keep their name."""
    parts = node_name.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "alignment" else node_name
