"""The lineage as published by kedro-viz: `kedro viz build` makes the static site, a real browser
(Playwright driving Debian's Chromium) opens it, and every registered pipeline is listed and drawn.

The helpers here are shared with ``benchmarks/viz_screenshot.py`` (which saves docs/kedro_viz.png).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import inspect
import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, run_kedro

# kedro-viz 12.5's `kedro viz build` has no output option: it always writes ./build (ignored by .gitignore's
# `build/`). The build needs the code and conf/ only, no data outputs (no --include-previews).
BUILD = PROJECT_ROOT / "build"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SELECTOR = '[data-test="kedro-pipeline-selector"]'  # the pipeline dropdown at the top of the sidebar
GRAPH_NODES = "svg g.pipeline-node"  # the drawn nodes of the flowchart
# kedro-viz's saved UI state (localStorage "KedroViz"): its defaults, less the first-visit feature tour
# (it covers the graph) and the minimap
VIZ_SETTINGS = {
    "node": {"disabled": {}}, "nodeType": {"disabled": {"parameters": True, "task": False, "data": False}},
    "pipeline": {"active": "__default__"}, "layer": {"visible": True}, "tag": {"enabled": {}}, "textLabels": True,
    "visible": {"code": False, "graph": True, "miniMap": False, "sidebar": True, "slicing": True, "traceback": False},
    "theme": "dark", "isPrettyName": False, "showFeatureHints": False, "showDatasetPreviews": True,
    "flags": {"sizewarning": True}, "expandAllPipelines": False, "orientation": "vertical", "featureHintStep": 0,
}


def registered_pipelines() -> set[str]:
    """The names the project registers (``register_pipelines``), plus the data-flow ORDER they must include."""
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    from ru_rlhf.pipeline_registry import ORDER, register_pipelines

    return set(register_pipelines()) | set(ORDER) | {"__default__"}


def build_viz(timeout: int = 300) -> Path:
    """Run `kedro viz build` in a subprocess from the project root; return the site's folder."""
    shutil.rmtree(BUILD / "api", ignore_errors=True)  # a stale build must not pass for this one
    started = time.time()
    res = run_kedro(["viz", "build"], timeout=timeout)
    out = res.stdout + res.stderr
    main = BUILD / "api" / "main"
    # kedro-viz reports a failed build on the console but still exits 0: check what it wrote too
    assert res.returncode == 0 and "Success!" in out and main.is_file() and main.stat().st_mtime >= started - 1, (
        f"`kedro viz build` failed (exit {res.returncode}):\n{out[-4000:]}")
    assert (BUILD / "index.html").is_file()
    return BUILD


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free local port (a thread); yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no access log on stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def require_chromium() -> None:
    """Skip without Debian's Chromium, unless this run requires the browser tests (CI)."""
    if not CHROMIUM.exists():
        if os.environ.get("RU_RLHF_REQUIRE_BROWSER"):
            pytest.fail("/usr/bin/chromium is missing but this run requires the browser tests")
        pytest.skip("needs Debian's chromium (`make browser` or .ci/run installs it with apt)")


@contextlib.contextmanager
def viz_page(url: str, width: int = 1600, height: int = 1000):
    """A headless Chromium page on the kedro-viz site at ``url``, the full pipeline drawn.

    Yields ``(page, responses)``: ``responses`` maps every ``/api/...`` path the page fetched to its status.
    """
    from playwright.sync_api import sync_playwright

    responses: dict[str, int] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.add_init_script(f"localStorage.setItem('KedroViz', {json.dumps(json.dumps(VIZ_SETTINGS))})")
            page.on("response", lambda r: responses.__setitem__(r.url.removeprefix(url), r.status)
                    if r.url.startswith(f"{url}/api/") else None)
            page.goto(url)
            page.locator(SELECTOR).wait_for(timeout=30000)
            wait_for_graph(page)
            yield page, responses
        finally:
            browser.close()


def wait_for_graph(page, timeout: float = 30, settle: float = 0.5) -> int:
    """Wait until the page is not loading, the flowchart shows nodes and their number has not changed for
    ``settle`` seconds (a switched pipeline's old nodes leave, and the new layout arrives, asynchronously);
    return that number."""
    page.locator(".pipeline-loading-icon--visible").wait_for(state="detached", timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = page.locator(GRAPH_NODES).count()
        if n != last:
            last, since = n, time.monotonic()
        elif n > 0 and time.monotonic() - since >= settle:
            return n
        page.wait_for_timeout(100)
    raise AssertionError(f"the flowchart did not settle in {timeout} s (last count {last})")


def expected_drawn(pipeline: dict) -> tuple[int, int]:
    """The least and most nodes kedro-viz should draw for a pipeline's API payload: parameters are hidden
    by default and each namespace (modular pipeline) is drawn collapsed, as one node standing for its nodes."""
    kinds = Counter(n["type"] for n in pipeline["nodes"])
    shown = kinds["task"] + kinds["data"]
    if set(pipeline["modular_pipelines"]) <= {"__root__"}:  # no namespaces: exactly its tasks and datasets
        return shown, shown
    return 1, shown + kinds["modularPipeline"]


def listed_pipelines(page) -> list[str]:
    """Open the pipeline dropdown and read the names it shows."""
    page.locator(f"{SELECTOR} .dropdown__label").click()
    options = page.locator(f"{SELECTOR} .dropdown__options .menu-option__content")
    options.first.wait_for(state="visible", timeout=10000)
    names = [t.strip() for t in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return names


def select_pipeline(page, name: str) -> tuple[int, dict]:
    """Pick ``name`` in the dropdown; wait until the page has fetched its flowchart and drawn it as expected.

    Returns how many nodes the page draws and the pipeline's payload as the page fetched it. ``name`` must not
    be the pipeline already shown (the page fetches nothing then).
    """
    shown = page.evaluate("new URLSearchParams(location.search).get('pid')")
    assert shown != name, f"{name} is already shown"
    page.locator(f"{SELECTOR} .dropdown__label").click()
    option = page.locator(f'{SELECTOR} .dropdown__options .menu-option__content[title="{name}"]')
    with page.expect_response(lambda r: r.url.endswith(f"/api/pipelines/{name}"), timeout=15000) as response:
        option.click()
    assert response.value.status == 200, (name, response.value.status)
    payload = response.value.json()
    page.wait_for_function(f"new URLSearchParams(location.search).get('pid') === {name!r}", timeout=15000)
    page.locator(f"{SELECTOR} .dropdown__label").filter(has_text=name).wait_for(timeout=15000)
    low, high = expected_drawn(payload)
    # wait for a count in range: the previous pipeline's nodes may still be leaving, and can hold still
    # long enough to pass for settled (seen once: the full graph's 195 nodes counted for `alignment`)
    with contextlib.suppress(Exception):
        page.wait_for_function(f"(n => n >= {low} && n <= {high})(document.querySelectorAll('{GRAPH_NODES}').length)",
                               timeout=30000)
    return wait_for_graph(page), payload


@pytest.mark.e2e
def test_every_registered_pipeline_is_shown_by_kedro_viz(tmp_path):
    """Runs `kedro viz build` (a subprocess) and opens the built site in headless Chromium."""
    require_chromium()
    expected = registered_pipelines()
    assert {"ingestion", "evaluation", "__default__"} <= expected
    site = build_viz()
    # layers: kedro-viz sends none (and disables its layer control) when the catalog's layers form a cycle
    assert json.loads((site / "api" / "main").read_text(encoding="utf-8"))["layers"], "kedro-viz found no layer order"
    with serve(site) as url, viz_page(url) as (page, responses):
        assert responses.get("/api/main") == 200, responses  # the site loaded the project's graph
        layers_button = page.locator('[data-test^="sidebar-flowchart-layers-btn"]')
        layers_button.wait_for(timeout=15000)
        assert layers_button.is_enabled(), "kedro-viz's layer control is disabled in the default view"
        page.screenshot(path=str(tmp_path / "kedro_viz.png"))  # the full (__default__) pipeline
        listed = listed_pipelines(page)
        assert sorted(listed) == sorted(expected), f"the page lists {listed}, the project registers {sorted(expected)}"
        assert len(listed) == len(set(listed))
        drawn = {}
        for name in sorted(expected - {"__default__"}) + ["__default__"]:  # every pipeline, then back to all
            count, payload = select_pipeline(page, name)
            low, high = expected_drawn(payload)
            assert payload["selected_pipeline"] == name and low <= count <= high, (name, count, low, high)
            drawn[name] = count
    assert all(drawn[n] < drawn["__default__"] for n in expected - {"__default__"}), drawn
    assert (tmp_path / "kedro_viz.png").stat().st_size > 20_000


def test_plot_datasets_can_be_previewed_in_viz(project_root):
    """Every matplotlib dataset keeps kedro-viz's image preview: not switched off (``preview: false``) and no
    ``preview_args`` (``MatplotlibDataset.preview`` takes none; extra arguments make the preview fail)."""
    from kedro.framework.project import pipelines, settings
    from kedro.framework.startup import bootstrap_project
    from kedro_datasets.matplotlib import MatplotlibDataset

    bootstrap_project(project_root)
    # the catalog as the project's settings build it (as kedro-viz does), without a session's hooks
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(project_root / settings.CONF_SOURCE), env="base",
                                          **settings.CONFIG_LOADER_ARGS)
    catalog = settings.DATA_CATALOG_CLASS.from_config(loader["catalog"])
    names = sorted(pipelines["__default__"].datasets())
    plots = {n: ds for n in names if isinstance(ds := catalog.get(n), MatplotlibDataset)}  # factory patterns too
    assert len(plots) >= 10, sorted(plots)
    for name, ds in plots.items():
        viz = (ds.metadata or {}).get("kedro-viz") or {}
        assert viz.get("preview", True) is not False, f"{name}: kedro-viz preview is switched off"
        assert "preview_args" not in viz, f"{name}: MatplotlibDataset.preview() takes no preview_args"
        assert not inspect.signature(ds.preview).parameters, name  # kedro-viz calls preview() bare
