"""Where the app finds what the pipelines saved: the project's catalog in the env it is started with.

The app reads the same catalog entries a ``kedro run --env <env>`` writes (``conf/base`` merged with
``conf/<env>``), so a policy, the tokenizer, the prompts, the vote store and the reward model's report are where
that env's catalog says, not at paths the app spells out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ru_rlhf.vocabulary import METHODS

# the app's policy ids -> the catalog entries it serves them from
POLICIES = {"sft": "sft_policy", **{m: f"alignment.{m}.policy" for m in METHODS}}


@contextmanager
def _data_root(data_root: str | None) -> Iterator[None]:
    """``RU_RLHF_DATA_ROOT`` set to ``data_root`` (when given) while the configuration resolves: what
    ``${globals:data_root}`` becomes, as for a run (``ru_rlhf.settings``)."""
    if data_root is None:
        yield
        return
    before = os.environ.get("RU_RLHF_DATA_ROOT")
    os.environ["RU_RLHF_DATA_ROOT"] = str(data_root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RU_RLHF_DATA_ROOT", None)
        else:
            os.environ["RU_RLHF_DATA_ROOT"] = before


def env_config(key: str, env: str = "base", data_root: str | None = None, conf_source: str = "conf") -> dict:
    """One kind of configuration of ``env`` (``"catalog"``, ``"globals"``), resolved as a run resolves it, with
    ``data_root`` in place of the env's data root when given."""
    from kedro.config import OmegaConfigLoader

    from ru_rlhf.settings import CONFIG_LOADER_ARGS

    with _data_root(data_root):
        return dict(OmegaConfigLoader(conf_source, env=env, **CONFIG_LOADER_ARGS)[key])


def env_catalog(env: str = "base", data_root: str | None = None, conf_source: str = "conf"):
    """The Kedro ``DataCatalog`` of ``env``, its outputs under ``data_root`` when given (``--data-root``)."""
    from kedro.io import DataCatalog

    return DataCatalog.from_config(env_config("catalog", env, data_root, conf_source))
