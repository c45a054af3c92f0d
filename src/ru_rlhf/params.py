"""Typed parameters: the base every stage's parameter model derives from, and the check that runs them.

pydantic ignores unknown keys by default, so a typo (``btach_size``) would run with the default; every parameter
model here forbids them. :func:`check` validates a stage's parameters and turns pydantic's errors into one message
naming each parameter's path (``alignment.dpo.train.btach_size: Extra inputs are not permitted``);
:class:`ru_rlhf.hooks.ParametersHook` runs it for every stage of a run before any node runs, so a bad value stops the
run before a model loads.

Each stage's models live in ``pipelines/<stage>/params.py``, and a node reads its parameters with
``<Model>.of(params)``. The values live in ``conf/base``: a model has no default for a key the base YAML sets (so the
two cannot drift; ``tests/test_params.py`` checks it), only for keys no base file sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from typing_extensions import Self


class Params(BaseModel):
    """A parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, params: Any) -> Self:
        """``params`` (the dict a node is given, or this model already) as this model: the one way a node reads
        its parameters."""
        return params if isinstance(params, cls) else cls.model_validate({} if params is None else params)


class ParameterError(ValueError):
    """Parameters that fail their model (names every bad parameter's path and the rule); ``lines`` holds one
    ``<path>: <rule>`` per error."""

    def __init__(self, message: str, lines: list[str] | None = None):
        super().__init__(message)
        self.lines = list(lines or [])


def check(model: type[BaseModel], value: Any, path: str) -> BaseModel:
    """``model.model_validate(value)``, or :class:`ParameterError` listing each error as ``<path>.<key>: <rule>``."""
    try:
        return model.model_validate({} if value is None else value)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join([path, *(str(x) for x in e["loc"])])
            shown = e["type"] not in ("missing", "extra_forbidden") and not isinstance(e.get("input"), (dict, list))
            got = f" (got {e.get('input')!r})" if shown else ""
            lines.append(f"  {where}: {e['msg']}{got}")
        raise ParameterError(f"bad parameters ({len(lines)}):\n" + "\n".join(lines), lines) from None
