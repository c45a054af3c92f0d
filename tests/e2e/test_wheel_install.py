"""The project as a user installs it without the checkout: the wheel, in a fresh virtual environment, run from a
folder that holds only ``conf/`` and the bundled raw data (``python -m ru_rlhf``, Kedro's packaged-project
entry point).

The fresh environment gets the third-party packages of this interpreter's environment through a ``.pth``
line (installing torch and the rest again would take minutes and gigabytes); ``ru_rlhf`` itself is only the
wheel's: the editable install's path hook is not processed from there, and the test checks where the package
was imported from. The smoke pipelines that read the package's data files run (the judges' lexicons in
preference_curation, the audit's probe sets in ethics_audit).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.e2e
def test_the_wheel_installs_outside_the_checkout_and_runs_the_smoke_pipelines(tmp_path):
    dist, venv, project, source = tmp_path / "dist", tmp_path / "venv", tmp_path / "project", tmp_path / "source"
    # built from a copy of what the wheel is made of (setuptools writes build/ and *.egg-info beside its source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
         cwd=tmp_path)
    wheel = next(dist.glob("ru_rlhf-*.whl"))
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    (Path(purelib.stdout.strip()) / "zz_host_packages.pth").write_text(
        "\n".join(p for p in site.getsitepackages() if Path(p).is_dir()) + "\n", encoding="utf-8")
    # a clean environment: nothing an earlier test set in this process (PYTHON*, PIP_*, accelerate's ...) leaks in;
    # --ignore-installed: pip sees the checkout's editable ru_rlhf through the .pth line and must not count it
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "RU_RLHF_MLFLOW": "off",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)], cwd=tmp_path, env=env)
    # only conf/ and the bundled raw inputs: no src/, no pyproject.toml
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copytree(ROOT / "data" / "01_raw", project / "data" / "01_raw")
    where = _run([str(python), "-c", "import sys; print(sys.path, file=sys.stderr); "
                  "import ru_rlhf, importlib.resources as r; print(ru_rlhf.__file__); "
                  "print(r.files('ru_rlhf.judges.lexicons').joinpath('ru_insults.txt').is_file())"], cwd=project, env=env)
    module, has_data = where.stdout.split()
    assert Path(module).is_relative_to(venv) and has_data == "True", where.stdout
    _run([str(python), "-m", "ru_rlhf", "--env", "smoke", "--pipelines", "ingestion,sft,preference_curation"],
         cwd=project, env=env, timeout=900)
    _run([str(python), "-m", "ru_rlhf", "--env", "smoke", "--pipelines", "ethics_audit",
          "--nodes", "ethics_audit.build_probe_sets"], cwd=project, env=env)
    out = project / "data" / "smoke"
    assert (out / "08_reporting" / "agreement.json").is_file() and (out / "08_reporting" / "run_summary.md").is_file()
    assert (out / "05_model_input" / "audit" / "bias_pairs.parquet").is_file()  # from the packaged YAML templates
