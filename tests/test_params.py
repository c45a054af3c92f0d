"""Typed parameters: every env's parameters pass their stage's model, and a typo or an out-of-range value is an
error naming the parameter's path (checked before a run by ru_rlhf.hooks.ParametersHook)."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from ru_rlhf.hooks import check_stage_parameters, stage_parameter_models
from ru_rlhf.params import ParameterError
from tests.params_helpers import env_parameters

ENVS = ["base", "smoke", "full", "external", "hub", "local_models", "ru_detox", "custom"]
MISSING = object()  # a BAD value: the key is left out


@pytest.mark.parametrize("env", ENVS)
def test_every_env_passes_its_parameter_models(env):
    params = env_parameters(env)
    stages = set(stage_parameter_models())
    assert stages <= set(params), stages - set(params)  # every stage has its parameters in every env
    check_stage_parameters(params, stages)  # raises on any unknown key or bad value


def test_the_full_env_is_base_with_its_studies_switched_on():
    """`full` differs from base only in the reward-model comparisons (on) and the CoH, DPO and IPO grids (4, 3 and 3
    settings, base's one among them): the default run's other figures are the same run's."""
    import json

    base, full = env_parameters("base"), env_parameters("full")
    rm, coh = full["reward_modeling"], full["alignment"]["coh"]["train"]
    assert [rm[k] for k in ("compare_backbone", "distributional", "cross_lingual")] == [True] * 3
    assert [base["reward_modeling"][k] for k in ("compare_backbone", "distributional", "cross_lingual")] == [False] * 3
    grid = base["alignment"]["coh"]["train"]["grid"]
    assert len(coh["grid"]) == 4 and len(grid) == 1 and grid[0] in coh["grid"]
    for k in ("compare_backbone", "distributional", "cross_lingual"):
        rm[k] = base["reward_modeling"][k]
    coh["grid"] = grid
    for method, size in (("dpo", 3), ("ipo", 3)):
        full_grid, base_grid = full["alignment"][method]["train"]["grid"], base["alignment"][method]["train"]["grid"]
        assert len(full_grid) == size and len(base_grid) == 1 and base_grid[0] in full_grid
        full["alignment"][method]["train"]["grid"] = base_grid
    # paths under the env's own data root (data/full/ against data/, or each under RU_RLHF_DATA_PARENT)
    assert json.loads(json.dumps(full).replace("data/full/", "data/")) == base


def _models_of(annotation) -> list[tuple[str, type[BaseModel]]]:
    """The parameter models in a field's type, each with how a value holds it ("": itself, "*": a dict's values,
    "[]": a list's items)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is dict:
        return [("*", m) for _, m in _models_of(args[1])]
    if origin is list:
        return [("[]", m) for _, m in _models_of(args[0])]
    return [found for a in args for found in _models_of(a)]  # a union, Annotated


def _field_uses(model: type[BaseModel], value, uses: dict) -> None:
    """For each field under ``model``, keyed by the model that declares it: whether ``value`` (the YAML) sets it, at
    every place it is used."""
    value = value if isinstance(value, dict) else {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        owner = next(c for c in model.__mro__ if name in getattr(c, "__annotations__", {}))
        uses.setdefault((owner, name), []).append(key in value)
        for how, sub in _models_of(field.annotation):
            inner = value.get(key)
            items = {"": [inner], "*": list((inner or {}).values()) if isinstance(inner, dict) else [],
                     "[]": inner if isinstance(inner, list) else []}[how]
            for item in items:
                _field_uses(sub, item, uses)


def test_the_yaml_holds_every_default_it_sets():
    """One source of defaults: a stage's model (``pipelines/<stage>/params.py``, ``rl/params.py``) has no default
    for a key that conf/base sets wherever the model is used, so the two cannot drift."""
    params, uses = env_parameters("base"), {}
    for stage, model in stage_parameter_models().items():
        _field_uses(model, params[stage], uses)
    doubled = sorted(f"{model.__module__}.{model.__name__}.{name}" for (model, name), set_at in uses.items()
                     if all(set_at) and model.__module__.startswith("ru_rlhf.") and model.__module__.endswith(".params")
                     and model.__module__ != "ru_rlhf.params" and not model.model_fields[name].is_required())
    assert not doubled, doubled
    assert any(model.__module__ == "ru_rlhf.rl.params" for model, _ in uses)  # it reached the shared RL model


BAD = [
    ("alignment", ["dpo", "train", "btach_size"], -8, "alignment.dpo.train.btach_size: Extra inputs are not permitted"),
    ("alignment", ["dpo", "train", "batch_size"], 0, "alignment.dpo.train.batch_size: Input should be greater than 0"),
    ("alignment", ["dpo", "train", "grid"], [0.0], "alignment.dpo.train.grid.0: Input should be greater than 0"),
    ("alignment", ["ppo", "train", "target_kl"], -1, "alignment.ppo.train.target_kl: Input should be greater than 0"),
    ("alignment", ["dpo", "train", "method"], "dpoo", "alignment.dpo.train.method: Input should be 'dpo' or 'ipo'"),
    ("alignment", ["ipo", "train", "method"], "dpo", "a section's method must be its name ('ipo')"),
    ("alignment", ["cem", "train", "batch_size"], 0, "alignment.cem.train.batch_size: Input should be greater than 0"),
    ("alignment", ["dpo", "train", "max_pairs"], MISSING, "alignment.dpo.train.max_pairs: Field required"),
    ("alignment", ["reinforce", "train", "baseline_decay"], MISSING, "alignment.reinforce.train: Value error, "
     "reinforce needs baseline_decay"),
    ("sft", ["sft", "batch_size"], 0, "sft.sft.batch_size: Input should be greater than 0"),
    ("sft", ["seed"], MISSING, "sft.seed: Field required"),
    ("reward_modeling", ["train", "learning_rate"], -1.0, "reward_modeling.train.learning_rate"),
    ("reward_modeling", ["cross_lingual"], "sometimes", "reward_modeling.cross_lingual: Input should be a valid boolean"),
    ("reward_modeling", ["distributional"], "sometimes", "reward_modeling.distributional: Input should be a valid boolean"),
    ("user_pairs", ["dpo", "beta"], 0, "user_pairs.dpo.beta: Input should be greater than 0"),
    ("user_pairs", ["rl", "minibatch_size"], MISSING, "user_pairs.rl: Value error, ppo needs minibatch_size"),
    ("alignment", ["ppo", "train", "minibatch_size"], 8, "alignment.ppo.train: Value error, minibatch_size 8 is larger "
     "than batch_size 4"),
    ("ingestion", ["prompts", "per_tsk"], 3, "ingestion.prompts.per_tsk: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("stage, path, value, message", BAD, ids=[".".join([b[0], *b[1]]) for b in BAD])
def test_a_bad_parameter_names_its_path(stage, path, value, message):
    params = env_parameters("smoke")
    node = params[stage]
    for key in path[:-1]:
        node = node[key]
    if value is MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    with pytest.raises(ParameterError) as err:
        check_stage_parameters(params, {stage})
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith("bad parameters; nothing has run:")


@pytest.mark.e2e
def test_kedro_run_stops_on_a_bad_parameter_before_any_node(project_root):
    from tests.conftest import run_kedro

    bad = {"alignment.dpo.train.btach_size=-8": "alignment.dpo.train.btach_size: Extra inputs are not permitted",
           "alignment.dpo.train.batch_size=0": "alignment.dpo.train.batch_size: Input should be greater than 0 (got 0)",
           "alignment.dpo.train.grid=[0.0]": "alignment.dpo.train.grid.0: Input should be greater than 0 (got 0.0)",
           "alignment.ppo.train.target_kl=-1": "alignment.ppo.train.target_kl: Input should be greater than 0 (got -1)",
           "alignment.ipo.train.method=dpoo": "alignment.ipo.train.method: Input should be 'dpo' or 'ipo' (got 'dpoo')"}
    res = run_kedro(["run", "--env", "smoke", "--params", ",".join(bad)])
    assert res.returncode != 0
    for message in bad.values():
        assert message in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr  # the message alone: it already says what to fix
    assert "Running node" not in res.stdout + res.stderr and "Completed node" not in res.stdout + res.stderr
