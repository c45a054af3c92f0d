"""Typed parameters: every env's parameters pass their stage's model, and a typo or an out-of-range value is an
error naming the parameter's path (checked before a run by ru_rlhf.hooks.ParametersHook)."""

from __future__ import annotations

import copy

import pytest

from ru_rlhf.hooks import check_stage_parameters, stage_parameter_models
from ru_rlhf.params import ParameterError
from tests.conftest import PROJECT_ROOT

ENVS = ["base", "smoke", "external", "hub", "local_models", "ru_detox", "custom"]


def env_parameters(env: str) -> dict:
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env=None if env == "base" else env,
                               **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


@pytest.mark.parametrize("env", ENVS)
def test_every_env_passes_its_parameter_models(env):
    params = env_parameters(env)
    stages = set(stage_parameter_models())
    assert stages <= set(params), stages - set(params)  # every stage has its parameters in every env
    check_stage_parameters(params, stages)  # raises on any unknown key or bad value


BAD = [
    ("alignment", ["dpo", "train", "btach_size"], -8, "alignment.dpo.train.btach_size: Extra inputs are not permitted"),
    ("alignment", ["dpo", "train", "grid"], [0.0], "alignment.dpo.train.grid.0: Input should be greater than 0"),
    ("alignment", ["ppo", "train", "target_kl"], -1, "alignment.ppo.train.target_kl: Input should be greater than 0"),
    ("alignment", ["dpo", "train", "method"], "dpoo", "alignment.dpo.train.method: Input should be 'dpo' or 'ipo'"),
    ("alignment", ["ipo", "train", "method"], "dpo", "a section's method must be its name ('ipo')"),
    ("alignment", ["cem", "train", "batch_size"], 0, "alignment.cem.train.batch_size: Input should be greater than 0"),
    ("sft", ["sft", "batch_size"], 0, "sft.sft.batch_size: Input should be greater than 0"),
    ("reward_modeling", ["train", "learning_rate"], -1.0, "reward_modeling.train.learning_rate"),
    ("user_pairs", ["dpo", "beta"], 0, "user_pairs.dpo.beta: Input should be greater than 0"),
    ("ingestion", ["prompts", "per_tsk"], 3, "ingestion.prompts.per_tsk: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("stage, path, value, message", BAD, ids=[".".join([b[0], *b[1]]) for b in BAD])
def test_a_bad_parameter_names_its_path(stage, path, value, message):
    params = copy.deepcopy(env_parameters("smoke"))
    node = params[stage]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParameterError) as err:
        check_stage_parameters(params, {stage})
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith("bad parameters; nothing has run:")


@pytest.mark.e2e
def test_kedro_run_stops_on_a_bad_parameter_before_any_node(project_root):
    from tests.conftest import run_kedro

    res = run_kedro(["run", "--env", "smoke", "--pipelines", "alignment", "--params",
                     "alignment.dpo.train.btach_size=-8,alignment.ppo.train.target_kl=-1"])
    assert res.returncode != 0
    assert "alignment.dpo.train.btach_size: Extra inputs are not permitted" in res.stderr
    assert "alignment.ppo.train.target_kl: Input should be greater than 0 (got -1)" in res.stderr
    assert "Traceback" not in res.stderr  # the message alone: it already says what to fix
    assert "Running node" not in res.stdout + res.stderr and "Completed node" not in res.stdout + res.stderr
