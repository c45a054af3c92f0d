"""Build the kedro-viz site and save a screenshot of the full pipeline (docs/kedro_viz.png).

Runs `kedro viz build` (it writes ./build), serves the folder on a local port, opens it in Debian's
Chromium (Playwright, headless) and saves the ``__default__`` flowchart. Prints the pipelines the page
lists and how many nodes each one draws. Not a test: the test is ``tests/publication/test_viz.py``,
whose helpers this reuses.

    .venv/bin/python benchmarks/viz_screenshot.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.publication.test_viz import (  # noqa: E402
    build_viz,
    listed_pipelines,
    registered_pipelines,
    select_pipeline,
    serve,
    viz_page,
)


def main() -> None:
    expected = registered_pipelines()
    site = build_viz()
    out = ROOT / "docs" / "kedro_viz.png"
    with serve(site) as url, viz_page(url, width=1920, height=1200) as (page, _):
        page.screenshot(path=str(out))
        listed = listed_pipelines(page)
        others = [name for name in listed if name != "__default__"]  # __default__ is shown first: it comes last
        drawn = {name: select_pipeline(page, name)[0] for name in [*others, "__default__"]}
    print("pipelines listed by the page:", listed)
    print("registered but not listed:", sorted(expected - set(listed)) or "none")
    print("nodes drawn per pipeline:", drawn)
    print("screenshot:", out.relative_to(ROOT))


if __name__ == "__main__":
    main()
