"""Project settings. There is no need to edit this file unless you want to change values
from the Kedro defaults. For further information, including these default values, see
https://docs.kedro.org/en/stable/configure/configuration_basics/#configuration"""

# Instantiated project hooks (executed in Last-In-First-Out order).
import os
from pathlib import Path

from ru_rlhf.hooks import (  # noqa: E402
    CarbonHook,
    GcFreezeHook,
    MissingInputsHook,
    NodeTimingHook,
    ParametersHook,
    RunSummaryHook,
)
from ru_rlhf.logs import quiet_library_warnings  # noqa: E402
from ru_rlhf.tracking import ReportTrackingHook  # noqa: E402

quiet_library_warnings()
# pluggy runs the last registered first: ParametersHook runs first of these, so bad parameters stop a run before
# anything else looks at it (only the MLflow hook, appended below, runs before it, as kedro-mlflow's always did)
HOOKS = (GcFreezeHook(), MissingInputsHook(), ReportTrackingHook(), NodeTimingHook(), CarbonHook(), RunSummaryHook(),
         ParametersHook())

# MLflow tracking: kedro-mlflow's hook, as ru_rlhf.tracking.ProjectMlflowHook (the same records, each parameter
# logged once per run instead of before every node). kedro-mlflow's own entry-point hook is therefore always
# disabled (Kedro matches the distribution's name, `kedro_mlflow`). RU_RLHF_MLFLOW=off switches tracking off for a
# run (as does `disable_tracking` in conf/<env>/mlflow.yml).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")
if os.environ.get("RU_RLHF_MLFLOW", "on").lower() not in ("off", "0", "false"):
    from ru_rlhf.tracking import project_mlflow_hook  # noqa: E402

    HOOKS = (*HOOKS, project_mlflow_hook())  # last, so it runs first, as kedro-mlflow's entry point did
# the SQLite tracking store lives in mlruns/ under the project (git-ignored)
Path("mlruns").mkdir(exist_ok=True) if Path("pyproject.toml").exists() else None

# Class that manages the KedroSession: an environment may name the pipelines a plain `kedro run` runs
# (`run.pipelines` in its parameters; conf/ru_detox, conf/custom).
from ru_rlhf.session import EnvPipelinesSession  # noqa: E402

SESSION_CLASS = EnvPipelinesSession

# Class that manages storing KedroSession data.
# from kedro.framework.session.store import BaseSessionStore
# SESSION_STORE_CLASS = BaseSessionStore
# Keyword arguments to pass to the `SESSION_STORE_CLASS` constructor.
# SESSION_STORE_ARGS = {
#     "path": "./sessions"
# }

# Directory that holds configuration.
# CONF_SOURCE = "conf"

# Class that manages how configuration is loaded.
# from kedro.config import OmegaConfigLoader

# CONFIG_LOADER_CLASS = OmegaConfigLoader



def _data_root(default: str) -> str:
    """``${data_root:<env default>}`` in ``globals.yml``: the env's data root, or ``RU_RLHF_DATA_ROOT`` when set,
    or the default under ``RU_RLHF_DATA_PARENT`` when that is set (``/tmp/x`` + ``data/smoke``).

    Kedro does not allow ``runtime_params`` in globals; this lets a user who wants a scratch run send every
    catalog path, checkpoint and report of a run to another folder (``RU_RLHF_DATA_ROOT``), and the test suite
    send every env's outputs to its own temporary folder, never the checkout's ``data/``
    (``RU_RLHF_DATA_PARENT``, set by ``tests/conftest.py``; each env keeps its own sub-folder).
    """
    root = os.environ.get("RU_RLHF_DATA_ROOT")
    if root:
        return root
    parent = os.environ.get("RU_RLHF_DATA_PARENT")
    return str(Path(parent) / default) if parent else default


CONFIG_LOADER_ARGS = {
    "custom_resolvers": {"data_root": _data_root},
    "base_env": "base",
    "default_run_env": "local",
    # env files override only the parameter keys they name (smoke changes sizes, not everything)
    "merge_strategy": {"parameters": "soft"},
    # "config_patterns": {
    #     "spark" : ["spark*/"],
    #     "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
    # }
}

# Class that manages Kedro's library components.
# from kedro.framework.context import KedroContext
# CONTEXT_CLASS = KedroContext

# Class that manages the Data Catalog.
# from kedro.io import DataCatalog
# DATA_CATALOG_CLASS = DataCatalog
