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
                exists = catalog.exists(name)
            except Exception:  # a dataset that cannot even say: let the run report it
                continue
            if not exists:
                producers = [p for p, pl in _all_pipelines().items() if name in pl.all_outputs()]
                missing.append((name, producers))
        if missing:
            lines = [f"  {name}: run `kedro run --pipelines {','.join(prod) or '?'}` first" for name, prod in missing]
            first = sorted({p for _, prod in missing for p in prod})
            raise MissingInputsError(
                "inputs of this run are missing (earlier stages have not run in this env):\n" + "\n".join(lines)
                + (f"\nrun first: kedro run --pipelines {','.join(first)}" if first else ""))


def _all_pipelines() -> dict:
    """Every stage's pipeline, in data-flow order (a ``--pipelines`` run loads only the ones it asks for)."""
    import importlib

    from ru_rlhf.pipeline_registry import ORDER

    return {name: importlib.import_module(f"ru_rlhf.pipelines.{name}").create_pipeline() for name in ORDER}
