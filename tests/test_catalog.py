"""The catalog is the only door: in every env, every catalog entry is written by a node, or is an input a node
reads (raw data, a hook's ledger), or a read-only view of a dataset a node writes, or a hook's own output; every
dataset factory serves some node; and the split base catalog (``conf/base/catalog_<stage>.yml``) is what Kedro
loads."""

from __future__ import annotations

import importlib

import pytest
from kedro.pipeline import Pipeline

ENVS = ["base", "smoke", "full", "external", "hub", "local_models", "ru_detox", "custom"]


@pytest.fixture(scope="module")
def graph(project_root) -> Pipeline:
    """Every node of every pipeline of the project."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_root)
    return sum(pipelines.values(), Pipeline([]))


def _catalog_config(project_root, env: str) -> dict:
    from kedro.framework.project import settings

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(project_root / settings.CONF_SOURCE), env=env,
                                          **settings.CONFIG_LOADER_ARGS)
    return dict(loader["catalog"])


@pytest.mark.parametrize("env", ENVS)
def test_every_catalog_entry_is_written_by_a_node_or_declared_as_an_input(project_root, graph, env):
    from kedro.framework.project import settings

    config = _catalog_config(project_root, env)
    written, read = graph.all_outputs(), graph.inputs()
    hooks = {f"{type(h).__module__}.{type(h).__name__}" for h in settings.HOOKS}
    for name, entry in config.items():
        if "{" in name or name in written:
            continue
        meta = entry.get("metadata") or {}
        if "written_by" in meta:  # a hook's ledger or report
            assert meta["written_by"] in hooks, f"{env}: {name} is written by {meta['written_by']}, not a hook"
        elif "view_of" in meta:  # a read-only view of a saved dataset (publish's folders)
            assert meta["view_of"] in written and name in read, f"{env}: {name} views {meta['view_of']}"
        else:  # raw data: a node reads it, and it says it is raw
            assert name in read, f"{env}: {name} is neither written nor read by any node"
            assert (meta.get("kedro-viz") or {}).get("layer") == "raw", f"{env}: the input {name} is not in layer raw"


@pytest.mark.parametrize("env", ENVS)
def test_every_dataset_factory_serves_a_node(project_root, graph, env):
    """A factory that matches no dataset of any pipeline is dead configuration (a renamed dataset would silently
    fall back to memory while its factory waits for a name that never comes)."""
    from kedro.io import DataCatalog

    config = _catalog_config(project_root, env)
    resolver = DataCatalog.from_config(config).config_resolver
    matched = {p: [] for p in config if "{" in p}
    for name in graph.datasets():
        pattern = resolver.match_dataset_pattern(name)
        if name not in config and pattern in matched:
            matched[pattern].append(name)
    assert all(matched.values()), [p for p, names in matched.items() if not names]


def test_the_base_catalog_is_split_by_stage(project_root, graph):
    """One file per stage (and one for what the hooks write), each holding the datasets its stage writes."""
    from kedro.framework.project import pipelines

    files = {p.name for p in (project_root / "conf" / "base").glob("catalog*.yml")}
    stages = {name for name in pipelines if name != "__default__"}
    assert files == {f"catalog_{s}.yml" for s in stages} | {"catalog_run.yml"}, files
    import yaml

    for stage in stages:
        stage_outputs = pipelines[stage].all_outputs()
        text = (project_root / "conf" / "base" / f"catalog_{stage}.yml").read_text(encoding="utf-8")
        for name in yaml.safe_load(text):
            if not name.startswith("_") and "{" not in name and name in graph.all_outputs():
                assert name in stage_outputs, f"catalog_{stage}.yml declares {name}, which {stage} does not write"


def test_the_alignment_checkpoints_reach_the_curves_and_the_curves_reach_the_audit_through_the_catalog(graph):
    """PPO's, REINFORCE's, GRPO's and RLOO's saved states are an output of their training node and an input of the
    over-optimisation node (an edge Kedro sees), never a folder a node finds on its own; the curves and the
    reward–KL frontier are outputs of the alignment pipeline and inputs of the audit, which runs none of their
    nodes."""
    from kedro.framework.project import pipelines

    nodes = {n.name: n for n in graph.nodes}
    rl = ("ppo", "reinforce", "grpo", "rloo")
    for method in rl:
        assert f"alignment.{method}.checkpoints" in nodes[f"alignment.{method}.train"].outputs
    curves = nodes["overoptimisation"]
    assert {f"alignment.{m}.checkpoints" for m in rl} <= set(curves.inputs)
    assert curves in pipelines["alignment"].nodes and "params:alignment.frontier" in curves.inputs
    made = {"overoptimisation_curves", "overoptimisation_spearman", "reward_kl_frontier", "reward_kl_frontier_fits"}
    assert made <= pipelines["alignment"].all_outputs()
    audit = pipelines["ethics_audit"]
    assert made <= audit.inputs() and not made & audit.all_outputs()
    assert not any(i.startswith("params:alignment") or i.endswith(".checkpoints") for i in audit.inputs())


def test_no_node_reads_a_file_path_from_its_parameters():
    """The file lists that were parameters are catalog entries now (human labels, RuBia, publish sources)."""
    for stage, keys in {"preference_curation": ["long_tables", "toloka"], "ethics_audit": ["rubia_path"],
                        "user_pairs": ["rubia_path"], "publish": ["publish_root"]}.items():
        params = importlib.import_module(f"ru_rlhf.pipelines.{stage}.params")
        fields = {f for model in vars(params).values() if isinstance(model, type) and hasattr(model, "model_fields")
                  for f in model.model_fields}
        assert not fields & set(keys), (stage, fields & set(keys))
