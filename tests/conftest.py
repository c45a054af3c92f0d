"""Shared fixtures: the project root, the real data beside the checkout, a small bundled world."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
# Every env's outputs go under one temporary folder for the session, never the checkout's data/: the data-root
# resolver (settings.py) puts <env default> under RU_RLHF_DATA_PARENT, here and in every kedro subprocess.
_OWN_DATA = not os.environ.get("RU_RLHF_DATA_PARENT")
TEST_DATA = Path(os.environ.get("RU_RLHF_DATA_PARENT") or tempfile.mkdtemp(prefix="ru_rlhf-tests-"))
os.environ["RU_RLHF_DATA_PARENT"] = str(TEST_DATA)
EXTERNAL = TEST_DATA / "data" / "external"

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every process it starts (`kedro run`,
# `accelerate launch`), uses its share of the cores: torch's OpenMP threads spin while they wait, so two workers of
# two threads each on two cores would take turns instead of running side by side.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    if "torch" in sys.modules:  # a plugin imported it before this file: it has read its thread count already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Tests that share an expensive session fixture run on one worker, so the fixture is built once (`--dist loadgroup`);
# every other test runs on the worker its module is sent to, so a module's fixtures are built once too.
SHARED_FIXTURES = ("smoke_run", "app_data_root", "local_run", "local_models", "alignment_run", "world_tables")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks into the node ids
def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with its xdist group: the first shared session fixture it uses, else its module."""
    loadgroup = getattr(config.option, "loadgroup", False)  # set on xdist's workers under --dist loadgroup
    for item in items:
        group = next((f for f in SHARED_FIXTURES if f in getattr(item, "fixturenames", ())), None)
        group = group or item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup and "@" not in item.nodeid:
            # xdist 3.8 tells its scheduler the group by appending it to the test's id (``item._nodeid``), an
            # attribute pytest 9.2 no longer reads (its ids are NodeId objects): without this, the groups were
            # ignored, tests spread over both workers and each built the shared fixtures (two smoke runs, four
            # local-model runs). The same suffix, set where pytest 9.2 keeps the id.
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(f"{item.nodeid}@{group}")


def pytest_configure(config) -> None:
    """With several workers, create the project's MLflow store and experiment once, before any worker's `kedro run`
    does: two runs creating a fresh SQLite store (or the experiment) at the same moment race each other."""
    if getattr(config, "workerinput", None) is not None or not config.pluginmanager.hasplugin("xdist"):
        return
    if not config.getoption("numprocesses", None):
        return
    import mlflow
    import yaml

    conf = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text(encoding="utf-8"))
    uri = conf["server"]["mlflow_tracking_uri"].replace("sqlite:///", f"sqlite:///{PROJECT_ROOT}/", 1)
    experiment = conf["tracking"]["experiment"]
    (PROJECT_ROOT / "mlruns").mkdir(exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(experiment["name"]) is None:  # as kedro-mlflow creates it, paths from the root
        location = PROJECT_ROOT / experiment["create_experiment_kwargs"]["artifact_location"]
        client.create_experiment(experiment["name"], artifact_location=location.as_uri())


def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove the session's data folder (keep it with RU_RLHF_KEEP_TEST_DATA=1, or by setting
    RU_RLHF_DATA_PARENT yourself)."""
    if _OWN_DATA and not os.environ.get("RU_RLHF_KEEP_TEST_DATA"):
        shutil.rmtree(TEST_DATA, ignore_errors=True)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data in ../shared/data (CI provides it beside the checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the real data is expected at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small bundled world (60 Russian, 20 Tatar documents) as raw corpus and fact tables."""
    from ru_rlhf.io.readers import RECORD_FIELDS
    from ru_rlhf.world import generate_world

    docs, facts = generate_world(seed=11, n_ru=60, n_tt=20)
    raw = pd.DataFrame([{**{k: None for k in RECORD_FIELDS}, **d, "source_file": "mem.jsonl",
                         "source_row": i + 1} for i, d in enumerate(docs)], columns=list(RECORD_FIELDS))
    return raw, pd.DataFrame(facts).astype(str)


def run_kedro(args: list[str], cwd: Path = PROJECT_ROOT, timeout: int = 600,
              data_root: Path | None = None) -> subprocess.CompletedProcess:
    """Run the kedro CLI of this interpreter's environment in a subprocess.

    ``data_root``: the run reads and writes there instead of the env's data root (``RU_RLHF_DATA_ROOT``).
    """
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    if data_root is not None:
        env["RU_RLHF_DATA_ROOT"] = str(data_root)
    kedro = Path(sys.executable).with_name("kedro")
    return subprocess.run([str(kedro), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@dataclass(frozen=True)
class SmokeRun:
    """The session's one ``kedro run --env smoke``: its data root and the finished process."""

    root: Path
    result: subprocess.CompletedProcess

    def copy_to(self, dest: Path) -> Path:
        """A private copy of the run's data root, for a test that runs more stages on it (the original stays
        as the run left it for every other test)."""
        shutil.copytree(self.root, dest)
        return dest


@pytest.fixture(scope="session")
def smoke_run() -> SmokeRun:
    """``kedro run --env smoke`` (the whole default pipeline at toy sizes), once per session, into a fresh data root
    in the session's data folder. Tests read its outputs; a test that writes must work on
    ``smoke_run.copy_to(tmp_path / ...)``."""
    root = Path(tempfile.mkdtemp(prefix="smoke_run-", dir=TEST_DATA))
    res = run_kedro(["run", "--env", "smoke"], timeout=900, data_root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return SmokeRun(root, res)


@contextmanager
def env_context(env: str, data_root: Path, project_root: Path = PROJECT_ROOT) -> Iterator:
    """The Kedro context of ``env`` reading and writing ``data_root``. ``RU_RLHF_DATA_ROOT`` is set while the block
    runs (the context resolves its catalog and parameters on each access); MLflow is off unless asked for."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RU_RLHF_DATA_ROOT", str(data_root))
        mp.setenv("RU_RLHF_MLFLOW", os.environ.get("RU_RLHF_MLFLOW", "off"))
        bootstrap_project(project_root)
        with KedroSession.create(project_path=project_root, env=env) as session:
            yield session.load_context()


def keep_catalog(inputs: dict, keep: list[str]):
    """An in-memory DataCatalog with ``inputs`` and ``keep`` datasets the runner does not release.

    Kedro's runners release intermediate MemoryDatasets after their last consumer; a test that
    wants to read them afterwards registers them here.
    """
    from kedro.io import DataCatalog, MemoryDataset

    class _Kept(MemoryDataset):
        def _release(self) -> None:  # keep the data for the test to read
            pass

    datasets = {name: MemoryDataset(value) for name, value in inputs.items()}
    datasets.update({name: _Kept() for name in keep})
    return DataCatalog(datasets)


def no_votes() -> pd.DataFrame:
    """The app's vote table when nobody has voted yet (what ``FeedbackDataset`` reads from no store)."""
    from ru_rlhf.io.datasets import FeedbackDataset

    return FeedbackDataset("/nonexistent/votes.sqlite").load()


def bars(ax) -> int:
    """How many bars are drawn on a matplotlib axes (``bar``, ``barh``, pandas' bar plots)."""
    from matplotlib.patches import Rectangle

    return sum(type(p) is Rectangle for p in ax.patches)


def tick_labels(ax, axis: str = "x") -> list[str]:
    """The texts of an axes' tick labels on ``axis``."""
    return [t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels())]


TINY_SIZE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 256}


@pytest.fixture(scope="session")
def tiny_tokenizer(small_world):
    """A BPE tokenizer trained on the small world's text."""
    from ru_rlhf.models.policy import train_tokenizer

    raw, _ = small_world
    return train_tokenizer(raw["text"].tolist(), vocab_size=600, model_max_length=256)


@pytest.fixture()
def tiny_policy(tiny_tokenizer):
    """A fresh one-layer Llama-style policy (random weights, seeded)."""
    from ru_rlhf.models.policy import load_policy

    return load_policy(size=TINY_SIZE, tokenizer=tiny_tokenizer, seed=0)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def require_chromium() -> None:
    """Skip without Debian's Chromium, unless this run requires the browser tests (CI sets RU_RLHF_REQUIRE_BROWSER)."""
    if not CHROMIUM.exists():
        if os.environ.get("RU_RLHF_REQUIRE_BROWSER"):
            pytest.fail("/usr/bin/chromium is missing but this run requires the browser tests")
        pytest.skip("needs Debian's chromium (`make browser` or .ci/run installs it with apt)")


def launch_chromium(pw):
    """Debian's Chromium under Playwright, headless (never a downloaded browser)."""
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)

