"""notebooks/explore.ipynb runs top to bottom (nbclient, this venv's ipykernel) on the smoke run's outputs:
it shows the comparison table, a row per model, and redraws the reward-vs-KL plot from it."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore.ipynb"
TABLE = Path("08_reporting") / "evaluation" / "comparison.parquet"  # under the smoke run's data root
# run in the kernel after the notebook's cells (on a copy; the committed notebook is untouched)
PROBE = """import json, sys
print("PROBE" + json.dumps({"prefix": sys.prefix, "env": ENV, "models": table["model"].tolist(),
                          "points": [ax.collections[0].get_offsets().tolist() for ax in fig.axes],
                          "ylabels": [ax.get_ylabel() for ax in fig.axes]}))"""


def smoke_methods(root: Path) -> set[str]:
    """The models whose test generations the smoke run has written: SFT and every alignment method."""
    from ru_rlhf.vocabulary import METHODS

    out = root / "07_model_output"
    return {m for m in ["sft", *METHODS] if (out / f"{m}.parquet").is_file()}


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.e2e
def test_notebook_runs_on_the_smoke_outputs(smoke_run, tmp_path, monkeypatch):
    """Executes the notebook with nbclient (cwd: the project root, RU_RLHF_ENV=smoke, the session's smoke run's
    data root)."""
    from nbclient import NotebookClient

    table = smoke_run.root / TABLE
    assert table.is_file(), table
    methods = smoke_methods(smoke_run.root)
    assert "sft" in methods and len(methods) > 1, methods
    figure = tmp_path / "reward_vs_kl.png"
    for name, value in {"RU_RLHF_ENV": "smoke", "RU_RLHF_DATA_ROOT": str(smoke_run.root), "RU_RLHF_FIGURE": str(figure),
                        "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this environment

    nb = copy.deepcopy(nbformat.read(NOTEBOOK, as_version=4))
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    # kernel "python3" whose argv starts with `python`: jupyter_client runs it with this interpreter (the venv's)
    client = NotebookClient(nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(PROJECT_ROOT)}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    probe = next(o.text for o in nb.cells[-1].outputs if o.output_type == "stream" and "PROBE" in o.text)
    seen = json.loads(probe.split("PROBE", 1)[1])
    assert seen["prefix"] == sys.prefix and seen["env"] == "smoke"  # this venv's kernel, the smoke env

    # the table: a row per model the smoke run has generated with, each once, and shown
    assert sorted(seen["models"]) == sorted(methods), (seen["models"], methods)
    shown = [o for o in outputs if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert shown and all(f"<th>{m}</th>" in shown[0]["data"]["text/html"] for m in methods)

    # the plot: drawn inline and saved, one point per model at (kl, rm) and (kl, gold) of the stored table
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert figure.is_file(), "the notebook did not save its plot to $RU_RLHF_FIGURE"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    stored = pd.read_parquet(table)
    assert seen["ylabels"] == ["mean rm reward", "mean gold reward"]
    for points, col in zip(seen["points"], ("rm", "gold")):
        np.testing.assert_allclose(np.asarray(points, dtype=float), stored[["kl", col]].to_numpy(dtype=float),
                                   rtol=1e-9, err_msg=col)
