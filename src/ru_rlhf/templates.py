"""Markdown (model and dataset cards, the Ethics Appendix) from Jinja2 templates kept beside the code that fills
them: ``<package>/templates/<name>.md.j2``, shipped in the wheel as package data."""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def _environment(package: str) -> jinja2.Environment:
    # markdown, not HTML: nothing is escaped; a name the template uses but is not given is an error
    return jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"), autoescape=False,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                              lstrip_blocks=True)


def render(package: str, name: str, **context) -> str:
    """The template ``name`` of ``package`` (its ``templates/`` folder) filled with ``context``."""
    return _environment(package).get_template(name).render(**context)
