"""Library warnings that tell a user of this project nothing, silenced at their source.

Each entry was seen in every ``kedro run`` of this project and needs no action from the user. They are
Python warnings, so they are filtered with :func:`warnings.filterwarnings` (``settings.py`` calls
:func:`quiet_library_warnings` when Kedro loads the project); ``conf/logging.yml`` sets the levels of the
chatty loggers (the catalog's per-dataset load/save lines, CodeCarbon). Kedro's logging config cannot
attach a filter class of ours (it refuses the ``()`` factory key and modules outside its allow-list).
"""

from __future__ import annotations

import warnings

QUIET = {
    # transformers, once per trainer: the project turns gradient checkpointing off on purpose
    "gradient_checkpointing": (r".*gradient[_ ]checkpointing", FutureWarning),
    # omegaconf, through Kedro's config loader: a deprecation inside Kedro, not in this project
    "register_new_resolver": (r".*register_new_resolver\(\) is deprecated", UserWarning),
    # mlflow's pyfunc module, at import: about models this project never logs as pyfunc
    "mlflow_type_hints": (r".*Add type hints to the `predict` method", UserWarning),
    # Kedro: method variants are namespaced on purpose (alignment.dpo, ...; see pipelines/alignment)
    "dataset_dots": (r".*dataset names contain '\.' characters", UserWarning),
}


def quiet_library_warnings() -> None:
    """Ignore the warnings in :data:`QUIET` (every other warning still shows)."""
    for message, category in QUIET.values():
        warnings.filterwarnings("ignore", message=message, category=category)


__all__ = ["QUIET", "quiet_library_warnings"]
