"""A Kedro session whose environment may choose which pipelines a plain ``kedro run`` runs.

Kedro's ``--env`` changes configuration, not the pipeline: ``kedro run --env ru_detox`` would run ``__default__``,
the whole loop on the bundled world. An environment that brings its own data names its stages instead, in its
parameters::

    run:
      pipelines: [ingestion, sft, own_data]

A ``--pipelines`` (or ``--pipeline``) on the command line still wins; an environment that names none runs
``__default__`` as before. The names are checked against the registered pipelines before anything runs.
"""

from __future__ import annotations

from typing import Any

from kedro.framework.session import KedroSession


class EnvPipelinesSession(KedroSession):
    """:class:`KedroSession` that reads ``run.pipelines`` from the environment's parameters when no pipeline
    is named."""

    def env_pipelines(self) -> list[str] | None:
        """The pipelines the environment's parameters name under ``run.pipelines`` (None: not set)."""
        params = self._get_config_loader()["parameters"]
        run = params.get("run") or {}
        if not isinstance(run, dict) or set(run) - {"pipelines"}:
            raise ValueError(f"parameter 'run' takes only 'pipelines' (a list of pipeline names), got {run!r}")
        names = run.get("pipelines")
        if names is None:
            return None
        if isinstance(names, str) or not all(isinstance(n, str) for n in names) or not names:
            raise ValueError(f"parameter 'run.pipelines' must be a non-empty list of pipeline names, got {names!r}")
        return list(names)

    def run(self, pipeline_name: str | None = None, pipeline_names: list[str] | None = None,
            **kwargs: Any) -> dict[str, Any]:
        if not pipeline_name and not pipeline_names:
            names = self.env_pipelines()
            if names:
                self._logger.info("Running the pipelines the environment names (run.pipelines): %s", names)
                pipeline_names = names
        return super().run(pipeline_name=pipeline_name, pipeline_names=pipeline_names, **kwargs)
