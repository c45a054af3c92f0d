"""The parameters tests give nodes: an env's parameters as a run loads them (``conf/<env>`` over ``conf/base``,
through Kedro's ``OmegaConfigLoader`` with the project's globals, resolvers and merge strategy), with a test's
overrides on top, so that no test re-types a value the YAML holds (a model has no default for it)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@cache
def _loaded(env: str) -> dict:
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env=None if env == "base" else env,
                               **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


def env_parameters(env: str = "base") -> dict:
    """Every parameter of ``env`` (``base``: conf/base alone), a fresh copy."""
    return copy.deepcopy(_loaded(env))


def merged(params: dict, overrides: dict) -> dict:
    """``params`` with ``overrides`` on top: a dict merges key by key (as an env's file does over base), any other
    value replaces."""
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def base_params(name: str, overrides: dict | None = None, env: str = "base") -> dict:
    """The parameters a node gets as ``params:<name>`` (``"sft"``, ``"alignment.dpo.train"``) in ``env``, with
    ``overrides`` merged in (:func:`merged`)."""
    params = env_parameters(env)
    for key in name.split("."):
        params = params[key]
    return merged(params, overrides or {})


def rl_config(section: str = "alignment.ppo.train", seed: int = 0, **overrides):
    """A PPO or REINFORCE config (``ru_rlhf.rl.ppo.PPOConfig`` / ``ru_rlhf.rl.reinforce.ReinforceConfig``) from the
    base YAML's ``section`` with ``overrides``: the configs have no defaults, the YAML holds the values."""
    from ru_rlhf.rl.params import RLParams

    params = base_params(section, overrides)
    params.pop("method", None)  # the alignment section's run name and reward, not RL controls
    params.pop("reward", None)
    return RLParams.of(params).config(seed)
