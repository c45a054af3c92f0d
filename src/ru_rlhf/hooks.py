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
                # a read-only view of a saved dataset (`metadata.view_of`: sft_policy_folder) comes from its writer
                base = (getattr(catalog.get(name), "metadata", None) or {}).get("view_of", name)
                exists = base in pipeline.all_outputs() or catalog.exists(name)  # a view of what this run writes
            except Exception:  # a dataset that cannot even say: let the run report it
                continue
            if not exists:
                producers = [p for p, pl in _all_pipelines().items() if base in pl.all_outputs()]
                missing.append((name, producers))
        if missing:
            lines = [f"  {name}: run `kedro run --pipelines {','.join(prod)}` first" if prod else
                     f"  {name}: no stage writes it; it is your data: declare it in conf/<env>/catalog.yml "
                     "(see conf/custom/README.md)" for name, prod in missing]
            from ru_rlhf.pipeline_registry import ORDER

            rank = {name: i for i, name in enumerate(ORDER)}  # in data-flow order, the order they must run in
            first = sorted({p for _, prod in missing for p in prod}, key=lambda p: (rank.get(p, len(ORDER)), p))
            _fail_tracked_run()
            _message_only(MissingInputsError)
            raise MissingInputsError(
                "inputs of this run are missing (earlier stages have not run in this env):\n" + "\n".join(lines)
                + (f"\nrun first: kedro run --pipelines {','.join(first)}" if first else ""))


def stage_parameter_models() -> dict:
    """Each stage's top-level parameter key and the model that types it (``pipelines/<stage>/params.py``; imported
    here, above the pipelines)."""
    from ru_rlhf.pipelines.alignment.params import AlignmentParams
    from ru_rlhf.pipelines.ethics_audit.params import AuditParams
    from ru_rlhf.pipelines.evaluation.params import EvaluationParams
    from ru_rlhf.pipelines.ingestion.params import IngestionParams
    from ru_rlhf.pipelines.preference_curation.params import CurationParams
    from ru_rlhf.pipelines.publish.params import PublishParams
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams
    from ru_rlhf.pipelines.sft.params import SftParams
    from ru_rlhf.pipelines.user_pairs.params import UserPairsParams
    from ru_rlhf.pipelines.user_ratings.params import RatingsParams

    return {"ingestion": IngestionParams, "sft": SftParams, "preference_curation": CurationParams,
            "reward_modeling": RewardParams, "alignment": AlignmentParams, "evaluation": EvaluationParams,
            "ethics_audit": AuditParams, "publish": PublishParams, "user_ratings": RatingsParams,
            "user_pairs": UserPairsParams}


def check_stage_parameters(params: dict, stages) -> None:
    """Validate the parameters of ``stages`` (every error of every stage in one :class:`ParameterError`)."""
    from ru_rlhf.params import ParameterError, check

    models = stage_parameter_models()
    errors: list[str] = []
    for stage in sorted(set(stages) & set(models)):
        try:
            check(models[stage], params.get(stage), stage)
        except ParameterError as err:
            errors += err.lines
    if errors:
        raise ParameterError("bad parameters; nothing has run:\n" + "\n".join(errors), errors)


class ParametersHook:
    """Before a run, validate the parameters of every stage it runs against the stage's model, so that a typo or a
    value out of range stops the run before any node (and any model load), naming the parameter's path."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        from ru_rlhf.params import ParameterError

        stages = {name.split(":", 1)[1].split(".")[0] for name in pipeline.inputs() if name.startswith("params:")}
        params = {s: catalog.load(f"params:{s}") for s in stages if f"params:{s}" in catalog}
        try:
            check_stage_parameters(params, stages)
        except ParameterError:
            _fail_tracked_run()
            _message_only(ParameterError)
            raise


def _fail_tracked_run() -> None:
    """Mark the open MLflow run FAILED: an error in a ``before_pipeline_run`` hook never reaches kedro-mlflow's
    ``on_pipeline_error``, and the run would otherwise be closed as FINISHED at exit."""
    try:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
    except Exception as err:  # tracking must not hide the real error
        log.warning("mlflow: could not mark the run FAILED: %s", err)


def _message_only(error: type[BaseException]) -> None:
    """If ``error`` reaches the top of the program uncaught (``kedro run`` on the command line), print its
    message alone, as the last thing, without the traceback: the message already says what to do. Any other
    exception, and ``error`` caught by a caller (a notebook, a test), is untouched."""
    import sys

    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, error):
            print(f"\n{kind.__name__}: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


def _all_pipelines() -> dict:
    """Every stage's pipeline, in data-flow order (a ``--pipelines`` run loads only the ones it asks for)."""
    import importlib

    from ru_rlhf.pipeline_registry import ORDER, _stage

    return {name: _stage(name, importlib.import_module(f"ru_rlhf.pipelines.{name}").create_pipeline())
            for name in ORDER}


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
        name = _stage_free(node.name)
        row = {"node": name, "method": _method_of(name), "status": status,
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
                ds.save(pd.concat([old[old["node"] != name], pd.DataFrame([row])], ignore_index=True))
            except Exception as err:  # noqa: BLE001 — cost accounting never fails a training node
                log.warning("carbon: could not record %s: %s", node.name, err)
        import mlflow  # a dependency (kedro-mlflow): the run's cost goes to the active MLflow run too

        if mlflow.active_run() is not None:
            mlflow.log_metrics({f"carbon.{row['method']}.energy_kwh": row["energy_kwh"],
                                f"carbon.{row['method']}.co2_kg": row["co2_kg"],
                                f"carbon.{row['method']}.seconds": row["seconds"]})


def _stage_free(node_name: str) -> str:
    """A node's name without the stage namespace ``__default__`` gives it (``sft.sft_policy`` → ``sft_policy``),
    so a default run and a ``--pipelines sft`` run record the same node under one name."""
    from ru_rlhf.pipeline_registry import ORDER

    stage, _, rest = node_name.partition(".")
    return rest if rest and stage in ORDER and stage != "alignment" else node_name


def _method_of(node_name: str) -> str:
    """``alignment.ppo.train`` → ``ppo``; other training nodes keep their name."""
    parts = node_name.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "alignment" else node_name


# --------------------------------------------------------------------------- the end of a run
def _fmt(v, nd: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if f != f else f"{f:.{nd}f}"


def _headline(name: str, d) -> str | None:
    """One line of the stage's headline figures from its report ``name`` (None when there is nothing to say)."""
    if name == "ingestion_summary":
        docs, prompts = d.get("documents", {}), d.get("prompts", {})
        return (f"documents {docs.get('kept')} kept, {docs.get('quarantined')} quarantined; prompts "
                f"{prompts.get('total')} (Tatar share {_fmt(prompts.get('tatar_share'), 2)})")
    if name == "sft_summary":
        return (f"QA answer rate {_fmt(d.get('qa_answer_rate'))}; validation perplexity "
                f"{_fmt(d.get('sft_validation_perplexity'), 1)} (pre-trained {_fmt(d.get('pretrained_validation_perplexity'), 1)})")
    if name == "agreement":
        after = ", ".join(f"{c} {_fmt(v)}" for c, v in d.get("after", {}).items())
        return f"Krippendorff's α after the gate: {after}; gate {'passed' if d.get('passed') else 'FAILED'}"
    if name == "reward_metrics":
        from ru_rlhf.vocabulary import HEADS

        mh, base = d.get("multi_head", {}), d.get("baseline", {})
        heads = [h for h in HEADS if h in mh]
        return "test pair accuracy " + ", ".join(
            f"{h} {_fmt(mh[h].get('test', {}).get('accuracy'))} (TF-IDF {_fmt((base.get(h) or {}).get('test', {}).get('accuracy'))})"
            for h in heads)
    if name == "alignment_summary":
        parts = []
        for m, v in d.items():
            if m.startswith("_") or m in ("sft", "frontier", "audit_runs") or not isinstance(v, dict):
                continue
            ci = v.get("gold_gain_ci95") or [None, None]
            verdict = "beats SFT" if v.get("beats_sft") else "worse than SFT" if v.get("worse_than_sft") else "≈ SFT"
            parts.append(f"{m} {_fmt(v.get('gold_gain'))} [{_fmt(ci[0])}, {_fmt(ci[1])}] {verdict}")
        return "gold gain over SFT, 95 % CI, Holm-corrected test: " + "; ".join(parts)
    if name == "evaluation_summary":
        models = d.get("models", {})
        return "win rate vs SFT (SIMULATED experts): " + ", ".join(
            f"{m} {_fmt(v.get('win_rate_vs_sft'))}" for m, v in models.items() if m != "sft")
    if name == "bias_summary":
        return f"counterfactual bias: {int(d['flag'].sum())} of {len(d)} tests flagged after correction"
    if name == "reward_hacking_table":
        return f"reward-hacking probes: {int(d['flag'].sum())} of {len(d)} flagged"
    if name == "publish_manifest":
        return f"publish: {d['bundle'].nunique()} bundles, {len(d)} files"
    if name == "rating_agreement":
        conf = int(round(100 * d.get("confidence", 0.95)))
        return f"Krippendorff's α ({conf} % bootstrap interval): " + "; ".join(
            f"{e['pool']}/{e['criterion']} {_fmt(e['alpha'], 4)} [{_fmt(e['ci_low'], 4)}, {_fmt(e['ci_high'], 4)}]"
            f"{'' if e['passes'] else ' below ' + str(d.get('threshold'))}" for e in d.get("pools", []))
    if name == "user_pairs_summary":
        rm = d.get("reward_model", {})
        acc = ", ".join(f"{c} {_fmt(v)} (TF-IDF {_fmt(rm.get('tfidf_baseline', {}).get(c))})"
                        for c, v in rm.get("reward_model", {}).items())
        wins = ", ".join(f"{m} {_fmt(v.get('rm_win_rate_vs_sft'))}" for m, v in d.get("methods", {}).items()
                         if m != "sft")
        return (f"held-out pair accuracy ({rm.get('test_pairs')} pairs): {acc}; RM win rate vs SFT: {wins or 'n/a'}; "
                f"gold {d.get('gold')}")
    return None


# the report each stage's headline comes from, in data-flow order
HEADLINES = {"ingestion": "ingestion_summary", "sft": "sft_summary", "preference_curation": "agreement",
             "reward_modeling": "reward_metrics", "alignment": "alignment_summary", "evaluation": "evaluation_summary",
             "ethics_audit": ["bias_summary", "reward_hacking_table"], "publish": "publish_manifest",
             "user_ratings": "rating_agreement", "user_pairs": "user_pairs_summary"}


def stage_headlines(pipeline_outputs: set[str] | None, catalog) -> list[dict]:
    """For each stage report in ``catalog`` (only those in ``pipeline_outputs`` when given): the stage, the report's
    dataset name, its file and its headline (``None`` when the report cannot be read)."""
    rows = []
    for stage, names in HEADLINES.items():
        for name in [names] if isinstance(names, str) else names:
            if (pipeline_outputs is not None and name not in pipeline_outputs) or name not in catalog:
                continue
            try:
                data = catalog.load(name)
                text = _headline(name, data)
            except Exception as err:  # a summary line must never fail the run it summarises
                text = f"(could not read: {err})"
            path = getattr(catalog.get(name), "_filepath", None)
            rows.append({"stage": stage, "report": name, "path": str(path) if path else None, "headline": text})
    return rows


def run_summary(pipeline_outputs: set[str], catalog, title: str) -> str:
    """The summary of a run: for each stage whose report this run wrote, its headline figures and where the
    report is (markdown)."""
    return summary_markdown(stage_headlines(pipeline_outputs, catalog), title)


def summary_markdown(rows: list[dict], title: str) -> str:
    """The run summary's markdown from :func:`stage_headlines` rows."""
    lines = [f"# Run summary: {title}", ""]
    for r in rows:
        lines.append(f"- **{r['stage']}**: {r['headline']}" + (f"  \n  report: `{r['path']}`" if r["path"] else ""))
    if len(lines) == 2:
        lines.append("- no stage report was written by this run")
    return "\n".join(lines) + "\n"


def source_revision(root=None) -> dict:
    """The git commit the code ran from, and whether the working tree had uncommitted changes (``None``s outside
    a git checkout, e.g. from an installed wheel)."""
    import subprocess
    from pathlib import Path

    cwd = Path(root) if root else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


class RunSummaryHook:
    """At the end of a run: the headline figure of each stage that ran and where its report is, printed and
    saved as ``run_summary`` (``08_reporting/run_summary.md``). Also names the MLflow run ``<pipelines>@<env>``
    (kedro-mlflow names every run after the pipeline only)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        from datetime import datetime, timezone

        self._title = f"{','.join(run_params.get('pipeline_names') or ['__default__'])}@{run_params.get('env') or 'local'}"
        self._started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.set_tag("mlflow.runName", self._title)
        except Exception as err:  # tracking must not stop a run
            log.warning("mlflow: could not name the run: %s", err)

    @hook_impl
    def after_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        from datetime import datetime, timezone

        if "run_summary" not in catalog:
            return
        title = getattr(self, "_title", "run")
        rows = stage_headlines(set(pipeline.all_outputs()), catalog)
        text = summary_markdown(rows, title)
        catalog.save("run_summary", text)
        if "run_record" in catalog:  # the same, with provenance, for scripts/results_table.py
            catalog.save("run_record", {
                "title": title, "env": run_params.get("env") or "local",
                "pipelines": run_params.get("pipeline_names") or ["__default__"],
                **source_revision(), "started": getattr(self, "_started", None),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "stages": rows})
        # printed, not logged: the last thing on the screen, unwrapped, whatever the log level
        print(f"\n{text.rstrip()}\n\n(saved as {getattr(catalog.get('run_summary'), '_filepath', 'run_summary')})",
              flush=True)


# --------------------------------------------------------------------------- cost of every node
def _peak_rss_reset() -> bool:
    """Reset this process's peak resident set size (Linux: ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM``), so
    the next read of the peak is the peak since now. False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_gb() -> float:
    """This process's peak resident set size (``VmHWM``) in GB (2**30 bytes), or the lifetime peak from
    ``getrusage`` where ``/proc`` is not there."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class GcFreezeHook:
    """Moves every object alive when the run starts (the imported libraries' modules, classes and functions: about
    580 000 objects once torch, transformers, TRL and the pipelines are imported) out of the garbage collector's
    reach (``gc.freeze``), and lets them back when the run ends.

    Each full collection walks every tracked object. The libraries call ``gc.collect()`` themselves (accelerate's
    ``free_memory``, at every Trainer's start and end: about 0.1 s each on the 2-core target, 1.7 s of a smoke run),
    and Python's own oldest-generation collections walk them too. Objects made during the run are collected as
    before; only what existed before the first node is left alone, and it is referenced by the modules anyway.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        import gc

        gc.collect()
        gc.freeze()

    @hook_impl
    def after_pipeline_run(self, run_params: dict, run_result, pipeline, catalog) -> None:
        import gc

        gc.unfreeze()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict, pipeline, catalog) -> None:
        import gc

        gc.unfreeze()


class NodeTimingHook:
    """The cost of every node of a run, saved as ``node_timings`` (``08_reporting/node_timings.csv``, one row per node
    of the latest run, rewritten as each node ends) and logged one line per node:

    - ``seconds``: wall time from the start of loading the node's first input to the end of saving its last output
      (the start of the next node; Kedro's sequential runner runs one node at a time);
    - ``compute_seconds``: the node's function alone; ``io_seconds``: loading its inputs and saving its outputs;
    - ``cpu_seconds``: CPU time of every thread of the process, and of any child process that ended, in that span;
      ``cores_busy`` is ``cpu_seconds / seconds`` (2.0 on this project's 2-core target is all of it);
    - ``peak_rss_gb``: the process's peak resident memory in that span (Linux's ``VmHWM``, reset as the node
      starts); where the kernel does not allow the reset it is the run's peak so far and ``peak_rss_scope`` says so.

    ``benchmarks/bench_e2e.py`` builds the per-stage table that opens ``docs/benchmarks.md`` from this file; a tracked
    run also gets the file as an MLflow artifact. The rows assume one node at a time: under the parallel or thread
    runner, or with ``--async`` loading, the hook records nothing and says so.

    The hook's own calls are ordered around the other hooks' (pluggy runs the last registered first): it starts a
    node's function clock after their ``before_node_run`` (CodeCarbon's tracker start) and stops it before their
    ``after_node_run``, and it closes the last row before the other hooks' end of the run (the run summary, MLflow's
    ``end_run``), so ``compute_seconds`` is the node's function and the run's end is not charged to its last node.
    """

    COLUMNS = ["order", "node", "stage", "status", "seconds", "compute_seconds", "io_seconds", "cpu_seconds",
               "cores_busy", "peak_rss_gb", "peak_rss_scope"]

    def __init__(self) -> None:
        self._rows: list[dict] = []
        self._current: dict | None = None
        self._catalog = None
        self._stages: dict | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        self._rows, self._current, self._catalog = [], None, catalog
        runner = str(run_params.get("runner") or "")
        self._off = "Parallel" in runner or "Thread" in runner
        if self._off:
            log.info("cost: node timings need one node at a time; not recorded under %s", runner)

    def _begin(self, node) -> dict | None:
        """The open row of ``node``, opened now if it is not the node being timed (closing the previous one)."""
        import resource
        import time

        if getattr(self, "_off", False):
            return None
        if self._current is not None and self._current["node"] == node.name:
            return self._current
        self._close()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._current = {"node": node.name, "status": "running", "wall0": time.perf_counter(),
                         "cpu0": time.process_time(), "child0": children.ru_utime + children.ru_stime,
                         "reset": _peak_rss_reset(), "compute": 0.0, "io": 0.0, "t": None}
        return self._current

    def _close(self) -> None:
        """Close the open row: its wall and CPU time up to now and its peak memory; save the table."""
        import resource
        import time

        cur, self._current = self._current, None
        if cur is None:
            return
        wall = time.perf_counter() - cur["wall0"]
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - cur["cpu0"] + (children.ru_utime + children.ru_stime - cur["child0"])
        row = {"order": len(self._rows) + 1, "node": cur["node"], "stage": self._stage(cur["node"]),
               "status": cur["status"], "seconds": round(wall, 3), "compute_seconds": round(cur["compute"], 3),
               "io_seconds": round(cur["io"], 3), "cpu_seconds": round(cpu, 3),
               "cores_busy": round(cpu / wall, 2) if wall > 0 else None, "peak_rss_gb": round(_peak_rss_gb(), 3),
               "peak_rss_scope": "node" if cur["reset"] else "run so far"}
        self._rows.append(row)
        log.info("cost: %s %.1f s wall (%.1f s in the function), %.1f s CPU, peak RSS %.2f GB", row["node"], wall,
                 row["compute_seconds"], cpu, row["peak_rss_gb"])
        if self._catalog is not None and "node_timings" in self._catalog:
            try:
                import pandas as pd

                self._catalog.save("node_timings", pd.DataFrame(self._rows, columns=self.COLUMNS))
            except Exception as err:  # noqa: BLE001 — cost accounting never fails a run
                log.warning("cost: could not record %s: %s", row["node"], err)

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node) -> None:
        import time

        cur = self._begin(node)  # first: it may close the previous node, which takes time of its own
        if cur is not None:
            cur["t"] = time.perf_counter()

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data, node) -> None:
        self._add_io(node)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data, node) -> None:
        import time

        if self._current is not None and self._current["node"] == node.name:
            self._current["t"] = time.perf_counter()

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        self._add_io(node)

    def _add_io(self, node) -> None:
        import time

        cur = self._current
        if cur is not None and cur["node"] == node.name and cur["t"] is not None:
            cur["io"] += time.perf_counter() - cur["t"]
            cur["t"] = None

    @hook_impl(trylast=True)
    def before_node_run(self, node, catalog, inputs, is_async) -> None:
        import time

        if is_async and not getattr(self, "_off", False):
            self._off, self._current = True, None
            log.info("cost: node timings need one load at a time; not recorded with --async")
        cur = self._begin(node)
        if cur is not None:
            cur["c"] = time.perf_counter()

    @hook_impl(tryfirst=True)
    def after_node_run(self, node, catalog, inputs, outputs, is_async) -> None:
        self._end_compute(node, "ok")

    @hook_impl(tryfirst=True)
    def on_node_error(self, error, node, catalog, inputs, is_async) -> None:
        self._end_compute(node, f"failed: {type(error).__name__}")
        self._close()

    def _end_compute(self, node, status: str) -> None:
        import time

        cur = self._current
        if cur is not None and cur["node"] == node.name and "c" in cur:
            cur["compute"] += time.perf_counter() - cur.pop("c")
            cur["status"] = status

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        self._close()
        self._log_artifact()

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error, run_params: dict, pipeline, catalog) -> None:
        if self._current is not None:  # the node whose input or output failed to load or save
            self._current["status"] = f"failed: {type(error).__name__}"
        self._close()
        self._log_artifact()

    def _log_artifact(self) -> None:
        """The table to the active MLflow run, if any (it is saved outside the runner, so the report tracking hook
        does not see it)."""
        if not self._rows or self._catalog is None or "node_timings" not in self._catalog:
            return
        try:
            import mlflow

            path = getattr(self._catalog.get("node_timings"), "_filepath", None)
            if mlflow.active_run() is not None and path is not None:
                mlflow.log_artifact(str(path), artifact_path="08_reporting")
        except Exception as err:  # noqa: BLE001 — tracking never fails a run
            log.warning("cost: could not log node_timings to MLflow: %s", err)

    def _stage(self, name: str) -> str:
        from ru_rlhf.pipeline_registry import ORDER

        head = name.split(".")[0]
        if head in ORDER:
            return head
        if self._stages is None:  # the alignment stage's shared nodes have no stage prefix: look them up once
            try:
                self._stages = {n.name: stage for stage, pl in _all_pipelines().items() for n in pl.nodes}
                self._stages.update({_stage_free(k): v for k, v in list(self._stages.items())})
            except Exception:  # noqa: BLE001 — a cost row never fails a run
                self._stages = {}
        return self._stages.get(name, "?")
