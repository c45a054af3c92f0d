"""A stage run on a checkout whose earlier stages have not run stops at once, naming them."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset

from ru_rlhf.hooks import MissingInputsError, MissingInputsHook
from ru_rlhf.pipelines.preference_curation import create_pipeline as curation
from ru_rlhf.pipelines.reward_modeling import create_pipeline as reward


def test_missing_inputs_name_the_pipeline_to_run_first():
    catalog = DataCatalog({"prompts": MemoryDataset(pd.DataFrame()), "facts": MemoryDataset(pd.DataFrame()),
                           "documents": MemoryDataset(pd.DataFrame()), "candidates": MemoryDataset()})
    with pytest.raises(MissingInputsError, match=r"candidates: run `kedro run --pipelines sft` first"):
        MissingInputsHook().before_pipeline_run({}, curation(), catalog)


def test_several_missing_stages_are_all_named():
    with pytest.raises(MissingInputsError) as err:
        MissingInputsHook().before_pipeline_run({}, reward(), DataCatalog({"documents": MemoryDataset()}))
    msg = str(err.value)
    assert "preference_pairs: run `kedro run --pipelines preference_curation` first" in msg
    assert "documents: run `kedro run --pipelines ingestion` first" in msg
    assert "sft_policy: run `kedro run --pipelines sft` first" in msg  # the reward model's backbone
    assert msg.endswith("run first: kedro run --pipelines ingestion,sft,preference_curation")  # data-flow order


def test_present_inputs_pass():
    names = ("prompts", "facts", "documents", "candidates", "app_feedback", "human_labels")
    catalog = DataCatalog({n: MemoryDataset(pd.DataFrame()) for n in names})
    assert MissingInputsHook().before_pipeline_run({}, curation(), catalog) is None  # every input there: no error
    # the same check with one input gone names it
    without_facts = DataCatalog({n: MemoryDataset(pd.DataFrame()) for n in names if n != "facts"})
    with pytest.raises(MissingInputsError, match="facts: run `kedro run --pipelines ingestion` first"):
        MissingInputsHook().before_pipeline_run({}, curation(), without_facts)


def test_alignment_on_a_fresh_checkout_names_the_stages_to_run_first():
    from ru_rlhf.pipelines.alignment import create_pipeline as alignment

    with pytest.raises(MissingInputsError) as err:
        MissingInputsHook().before_pipeline_run({}, alignment(), DataCatalog({}))
    msg = str(err.value)
    assert "sft_policy: run `kedro run --pipelines sft` first" in msg
    assert "reward_model: run `kedro run --pipelines reward_modeling` first" in msg
    assert "preference_pairs: run `kedro run --pipelines preference_curation` first" in msg


def test_curation_metrics_include_label_quality_per_criterion():
    from ru_rlhf.tracking import metrics_of

    summary = {"pairs": 10, "quarantined_ratings": 2, "biases": {"by_criterion": {
        "helpfulness": {"pairs": 4, "gold_tied_share": 0.25, "panel_agrees_with_gold_on_untied": 0.6667},
        "truthfulness": {"pairs": 2, "gold_tied_share": 1.0, "panel_agrees_with_gold_on_untied": None}}}}
    assert metrics_of("curation_summary", summary) == {
        "curation.pairs": 10.0, "curation.quarantined_ratings": 2.0, "curation.helpfulness.gold_tied_share": 0.25,
        "curation.helpfulness.panel_agrees_with_gold": 0.6667, "curation.truthfulness.gold_tied_share": 1.0}


# --------------------------------------------------------------------------- the cost of every node
def _sleep(x):
    import time

    time.sleep(0.4)
    return x


def _spin(x):
    import time

    end = time.process_time() + 0.4  # 0.4 s of this thread's CPU
    while time.process_time() < end:
        pass
    return x


def _allocate(x):
    block = bytearray(300 * 2**20)  # 300 MB, every page touched
    block[::4096] = b"\x01" * len(block[::4096])
    return x + len(block) * 0


def _fail(x):
    raise ValueError("no")


def _timed_run(funcs):
    """Run one node per function in a chain, with the hook called as a Kedro session calls it; the timings."""
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner

    from ru_rlhf.hooks import NodeTimingHook

    manager = _create_hook_manager()
    hook = NodeTimingHook()
    manager.register(hook)
    timings = MemoryDataset()
    catalog = DataCatalog({"x0": MemoryDataset(1), "node_timings": timings})
    pipe = Pipeline([node(f, f"x{i}", f"x{i + 1}", name=f.__name__.strip("_")) for i, f in enumerate(funcs)])
    hook.before_pipeline_run({}, pipe, catalog)  # the session's calls around the runner's
    try:
        SequentialRunner().run(pipe, catalog, hook_manager=manager)
    except Exception:
        hook.on_pipeline_error(None, {}, pipe, catalog)
        return timings.load().set_index("node")
    hook.after_pipeline_run({}, pipe, catalog)
    return timings.load().set_index("node")


def test_node_timings_hold_wall_and_cpu_time_and_peak_memory_of_each_node():
    t = _timed_run([_sleep, _spin, _allocate])
    assert list(t.index) == ["sleep", "spin", "allocate"] and list(t["order"]) == [1, 2, 3]
    assert (t["status"] == "ok").all() and (t["stage"] == "?").all()  # not a stage of this project
    assert t.loc["sleep", "seconds"] >= 0.4 and t.loc["sleep", "compute_seconds"] >= 0.4
    assert t.loc["sleep", "cpu_seconds"] < 0.15  # asleep: wall time without CPU time
    assert t.loc["spin", "cpu_seconds"] >= 0.4 and t.loc["spin", "cores_busy"] > 0.7  # busy: CPU time ≈ wall time
    assert (t["seconds"] >= t["compute_seconds"] + t["io_seconds"] - 1e-3).all()  # the parts within the whole
    if not (t["peak_rss_scope"] == "node").all():
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert t.loc["allocate", "peak_rss_gb"] - t.loc["spin", "peak_rss_gb"] > 0.25  # the 300 MB block


def test_a_failed_node_is_recorded_as_failed_after_the_nodes_before_it():
    t = _timed_run([_sleep, _fail])
    assert list(t.index) == ["sleep", "fail"]
    assert t.loc["sleep", "status"] == "ok" and t.loc["fail", "status"] == "failed: ValueError"


# --------------------------------------------------------------------------- MLflow parameters, once per run
def test_the_mlflow_hook_is_registered_with_its_own_methods():
    """Kedro's hook manager calls the project's overrides, not kedro-mlflow's (an override without its own
    ``@hook_impl`` marker would not be a hook at all)."""
    from kedro.framework.hooks.manager import _create_hook_manager

    from ru_rlhf.tracking import _mlflow_hook_class, project_mlflow_hook

    manager = _create_hook_manager()
    hook = project_mlflow_hook()
    manager.register(hook)
    cls = _mlflow_hook_class()
    for name in ("after_context_created", "before_pipeline_run", "before_node_run", "after_pipeline_run",
                 "on_pipeline_error"):
        impls = [i for i in getattr(manager.hook, name).get_hookimpls() if i.plugin is hook]
        assert len(impls) == 1, name
    assert [i.function.__qualname__ for i in manager.hook.before_node_run.get_hookimpls() if i.plugin is hook] == \
        [cls.before_node_run.__qualname__]  # ours, not the parent's
    assert "ProjectMlflowHook" in cls.before_pipeline_run.__qualname__


def test_the_mlflow_hook_logs_each_parameter_once_in_one_batch_per_node(monkeypatch):
    import mlflow

    from ru_rlhf.tracking import project_mlflow_hook

    batches, singles = [], []
    monkeypatch.setattr(mlflow, "log_params", lambda d: batches.append(dict(d)))
    monkeypatch.setattr(mlflow, "log_param", lambda k, v: singles.append(k))
    monkeypatch.setattr(mlflow, "set_tag", lambda k, v: singles.append(k))
    hook = project_mlflow_hook()
    hook.run_id, hook._is_mlflow_enabled = None, True
    hook.flatten, hook.recursive, hook.sep, hook.long_params_strategy = True, True, ".", "truncate"
    stage = {"seed": 1, "train": {"lr": 0.1, "steps": 3}}
    hook.before_node_run(None, None, {"params:sft": stage, "data": [1]}, False)
    hook.before_node_run(None, None, {"params:sft": stage}, False)  # the same stage's next node: nothing new
    hook.before_node_run(None, None, {"params:sft": stage, "params:rm": {"seed": 2, "note": "x" * 7000}}, False)
    assert batches == [{"sft.seed": 1, "sft.train.lr": 0.1, "sft.train.steps": 3}, {"rm.seed": 2}]
    assert singles == ["rm.note"]  # too long for MLflow: kedro-mlflow's strategy (truncated) for that one


@pytest.mark.parametrize("ending", ["after_pipeline_run", "on_pipeline_error"])
def test_objects_alive_at_the_start_of_a_run_are_frozen_until_its_end(ending):
    import gc

    from ru_rlhf.hooks import GcFreezeHook

    hook, catalog = GcFreezeHook(), DataCatalog({})
    assert gc.get_freeze_count() == 0
    hook.before_pipeline_run({}, None, catalog)
    try:
        assert gc.get_freeze_count() > 1000  # the imported libraries' objects, out of every collection's walk
        made_during_the_run = [[]]
        made_during_the_run[0].append(made_during_the_run)  # a cycle: only the collector can free it
        del made_during_the_run
        assert gc.collect() >= 2  # objects made during the run are still collected
    finally:
        if ending == "after_pipeline_run":
            hook.after_pipeline_run({}, None, None, catalog)
        else:
            hook.on_pipeline_error(RuntimeError("x"), {}, None, catalog)
    assert gc.get_freeze_count() == 0
