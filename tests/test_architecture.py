"""The package's layers, checked on its source: shared code lives below the pipelines.

Every module under ``src/ru_rlhf`` is parsed with :mod:`ast`; every import counts, at module level and inside
functions. The rules:

* a pipeline package (``ru_rlhf.pipelines.<a>``) imports no other pipeline package and not the app;
* a library module (anything outside ``pipelines/``, ``app/`` and the project layer: ``hooks``,
  ``pipeline_registry``, ``settings``, ``session``, ``__main__``) imports neither the pipelines nor the app;
* the module import graph has no cycle;
* ``CRITERIA``, ``HEADS`` and ``METHODS`` are assigned in one module (``ru_rlhf.vocabulary``), and no other module
  spells the criteria or the methods out as a tuple or list;
* one ``def score_policy``.

Each rule is a function of the parsed modules, so that the tests also run it on a small package that breaks it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PROJECT_LAYER = {"ru_rlhf.hooks", "ru_rlhf.pipeline_registry", "ru_rlhf.settings", "ru_rlhf.session",
                 "ru_rlhf.__main__"}
VOCABULARY = "ru_rlhf.vocabulary"
NAMES = ("CRITERIA", "HEADS", "METHODS")


@dataclass(frozen=True)
class Module:
    name: str
    is_package: bool
    tree: ast.Module


def parse(sources: dict[str, str], packages: frozenset[str] = frozenset()) -> dict[str, Module]:
    """Modules from ``{dotted name: source}``; ``packages`` are the names that are packages (``__init__``)."""
    return {name: Module(name, name in packages, ast.parse(src)) for name, src in sources.items()}


def load_package(src: Path = SRC) -> dict[str, Module]:
    """Every module of ``src/ru_rlhf``."""
    sources, packages = {}, set()
    for path in sorted((src / "ru_rlhf").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return parse(sources, frozenset(packages))


def imports(module: Module, known: set[str]) -> set[str]:
    """The ``ru_rlhf`` modules ``module`` imports anywhere in its body: ``from a import b`` is ``a.b`` when that
    is a module, else ``a``; relative imports are resolved."""
    out = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m == "ru_rlhf" or m.startswith("ru_rlhf.")}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _pipeline_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["ru_rlhf", "pipelines"] else None


def is_library(name: str) -> bool:
    return not (_under(name, "ru_rlhf.pipelines") or _under(name, "ru_rlhf.app") or name in PROJECT_LAYER)


def graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: imports(m, known) for name, m in modules.items()}


def pipeline_violations(modules: dict[str, Module]) -> list[str]:
    """``a imports b`` for every pipeline module that imports another pipeline package or the app."""
    bad = []
    for name, targets in graph(modules).items():
        own = _pipeline_of(name)
        if own is None:
            continue
        bad += [f"{name} imports {t}" for t in sorted(targets)
                if _under(t, "ru_rlhf.app") or (_pipeline_of(t) is not None and _pipeline_of(t) != own)]
    return bad


def library_violations(modules: dict[str, Module]) -> list[str]:
    """``a imports b`` for every library module that imports the pipelines or the app."""
    return [f"{name} imports {t}" for name, targets in graph(modules).items() if is_library(name)
            for t in sorted(targets) if _under(t, "ru_rlhf.pipelines") or _under(t, "ru_rlhf.app")]


def find_cycle(modules: dict[str, Module]) -> list[str] | None:
    """One import cycle (``[a, b, …, a]``), or None."""
    edges = {name: sorted(t for t in targets if t in modules and t != name)
             for name, targets in graph(modules).items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def assigned_in(modules: dict[str, Module], name: str) -> set[str]:
    """The modules that assign ``name`` anywhere (module, class or function level)."""
    out = set()
    for mod, m in modules.items():
        for node in ast.walk(m.tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                out.add(mod)
    return out


def spelled_out(modules: dict[str, Module], words: set[str]) -> set[str]:
    """The modules besides the vocabulary with a tuple or list of exactly ``words`` (a type's ``Literal[...]``
    aside)."""
    out = set()
    for mod, m in modules.items():
        slices = {id(n.slice) for n in ast.walk(m.tree) if isinstance(n, ast.Subscript)}
        for node in ast.walk(m.tree):
            if isinstance(node, (ast.Tuple, ast.List)) and id(node) not in slices and node.elts \
                    and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts) \
                    and {e.value for e in node.elts} == words and mod != VOCABULARY:
                out.add(mod)
    return out


def defines(modules: dict[str, Module], function: str) -> list[str]:
    """``module.function`` for every ``def function`` (at any level)."""
    return [f"{mod}.{function}" for mod, m in sorted(modules.items()) for node in ast.walk(m.tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function]


# --------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    modules = load_package()
    assert {"ru_rlhf.pipelines.alignment.nodes", "ru_rlhf.app.service", VOCABULARY} <= set(modules)
    return modules


def test_no_pipeline_imports_another_pipeline_or_the_app(package):
    assert pipeline_violations(package) == []


def test_library_modules_import_neither_pipelines_nor_app(package):
    assert library_violations(package) == []


def test_no_import_cycle(package):
    cycle = find_cycle(package)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", NAMES)
def test_vocabulary_is_defined_once(package, name):
    assert assigned_in(package, name) == {VOCABULARY}


def test_criteria_and_methods_are_not_spelled_out_elsewhere(package):
    from ru_rlhf.vocabulary import CRITERIA, METHODS

    assert spelled_out(package, set(CRITERIA)) == set()
    assert spelled_out(package, set(METHODS)) == set()


def test_one_score_policy(package):
    assert defines(package, "score_policy") == ["ru_rlhf.scoring.score_policy"]


# --------------------------------------------------------------------------- each rule fails where it should
BAD = {
    "ru_rlhf.pipelines.a.nodes": "from ru_rlhf.pipelines.b import nodes\nfrom ru_rlhf.pipelines.a import params\n",
    "ru_rlhf.pipelines.a.params": "",
    "ru_rlhf.pipelines.b": "",
    "ru_rlhf.pipelines.b.nodes": "def f():\n    from ru_rlhf.app.store import Store\n",
    "ru_rlhf.app.store": "from ..lib import helper\nCRITERIA = ('helpfulness', 'truthfulness', 'harmlessness')\n",
    "ru_rlhf.lib": "def helper():\n    from .pipelines.a.nodes import x\n",
    "ru_rlhf.hooks": "from ru_rlhf.pipelines.a.params import P\n",
    "ru_rlhf.vocabulary": "CRITERIA = ('helpfulness', 'truthfulness', 'harmlessness')\nHEADS = CRITERIA\n"
                          "METHODS = {}\n",
    "ru_rlhf.scores": "def score_policy():\n    pass\nclass A:\n    HEADS: tuple = ()\n",
    "ru_rlhf.other_scores": "def outer():\n    def score_policy():\n        pass\n"
                            "x: Literal['helpfulness', 'truthfulness', 'harmlessness']\n",
}


@pytest.fixture(scope="module")
def bad() -> dict[str, Module]:
    return parse(BAD, frozenset({"ru_rlhf.pipelines.b"}))


def test_rules_catch_a_bad_package(bad):
    assert pipeline_violations(bad) == ["ru_rlhf.pipelines.a.nodes imports ru_rlhf.pipelines.b.nodes",
                                        "ru_rlhf.pipelines.b.nodes imports ru_rlhf.app.store"]
    # the project layer (hooks) may import a pipeline; a library module may not, even from inside a function
    assert library_violations(bad) == ["ru_rlhf.lib imports ru_rlhf.pipelines.a.nodes"]
    # the violations above close a cycle: the app's store -> a library module -> a pipeline -> another -> the app
    assert find_cycle(bad) == ["ru_rlhf.app.store", "ru_rlhf.lib", "ru_rlhf.pipelines.a.nodes",
                               "ru_rlhf.pipelines.b.nodes", "ru_rlhf.app.store"]
    assert assigned_in(bad, "CRITERIA") == {"ru_rlhf.app.store", VOCABULARY}
    assert assigned_in(bad, "HEADS") == {"ru_rlhf.scores", VOCABULARY}
    assert spelled_out(bad, {"helpfulness", "truthfulness", "harmlessness"}) == {"ru_rlhf.app.store"}
    assert defines(bad, "score_policy") == ["ru_rlhf.other_scores.score_policy", "ru_rlhf.scores.score_policy"]


def test_cycle_through_an_import_inside_a_function():
    modules = parse({"ru_rlhf.cyc_a": "from ru_rlhf import cyc_b\n",
                     "ru_rlhf.cyc_b": "def f():\n    import ru_rlhf.cyc_a\n", "ru_rlhf.leaf": ""})
    assert find_cycle(modules) == ["ru_rlhf.cyc_a", "ru_rlhf.cyc_b", "ru_rlhf.cyc_a"]
    assert find_cycle({k: m for k, m in modules.items() if k != "ru_rlhf.cyc_b"}) is None


def test_cycle_through_a_package_and_a_relative_import():
    modules = parse({"ru_rlhf.p": "from . import q\n", "ru_rlhf.p.q": "from .. import r\n",
                     "ru_rlhf.r": "import ru_rlhf.p\n"}, frozenset({"ru_rlhf.p"}))
    assert find_cycle(modules) == ["ru_rlhf.p", "ru_rlhf.p.q", "ru_rlhf.r", "ru_rlhf.p"]
