"""Resume: a training run killed with SIGKILL mid-way continues from its last checkpoint.

For TRL's SFTTrainer and DPOTrainer (``resume_from_checkpoint``) and our PPO (its own resume
state), at smoke size: one run goes uninterrupted; another is killed with SIGKILL after its
second checkpoint and started again. Tolerance: the resumed run must end with the same final
loss (within 1e-6) and bit-identical final weights — on CPU these runs are deterministic, and
the test checks that, rather than allowing drift.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("resume_worker.py")
# kill once this checkpoint exists (the second one each run writes)
KILL_AFTER = {"sft": "checkpoint-8", "dpo": "checkpoint-8", "ppo": "step-0006"}
RESUME_LOG = {"sft": "resuming from", "dpo": "resuming from", "ppo": "resuming at step"}


def _run(kind: str, out: Path, result: Path, pause: float = 0.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), kind, str(out), str(result), str(pause)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


@pytest.mark.parametrize("kind", ["sft", "dpo", "ppo"])
def test_killed_training_resumes_to_the_same_result(tmp_path, kind):
    straight = _run(kind, tmp_path / "straight", tmp_path / "straight.json")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads((tmp_path / "straight.json").read_text())

    out, result = tmp_path / "killed", tmp_path / "killed.json"
    proc = subprocess.Popen([sys.executable, str(WORKER), kind, str(out), str(result), "0.4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.time() + 240
    while not (out / KILL_AFTER[kind]).exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not result.exists()  # it really died before finishing

    again = _run(kind, out, result)
    assert again.returncode == 0, again.stderr[-3000:]
    assert RESUME_LOG[kind] in again.stderr  # it resumed rather than starting over
    got = json.loads(result.read_text())
    assert got["steps"] == expected["steps"]
    assert got["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    assert got["weights"] == expected["weights"]


def test_checkpoints_of_another_config_are_not_resumed(tmp_path):
    from ru_rlhf.models.training import resume_checkpoint

    out = tmp_path / "run"
    assert resume_checkpoint(out, "aaaa") is None
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert resume_checkpoint(out, "aaaa").endswith("checkpoint-4")  # same run: resumed
    assert resume_checkpoint(out, "bbbb") is None  # another config: removed, never resumed
    assert not (out / "checkpoint-4").exists()


def test_running_a_finished_run_again_gives_the_same_model(tmp_path, tiny_policy, tiny_tokenizer, small_world):
    """A finished run's checkpoints are loaded, not "resumed" (Trainer would train one step more)."""
    import copy

    import pandas as pd
    from datasets import Dataset

    from ru_rlhf.models.training import StageParams, run_sft_trainer, weights_fingerprint

    raw, _ = small_world
    texts = raw["text"].tolist()
    ds = Dataset.from_pandas(pd.DataFrame({"prompt": [t[:80] for t in texts], "completion": [t[80:140] for t in texts]}),
                             preserve_index=False)
    stage = StageParams(max_steps=3, batch_size=16, lr_scheduler="constant", warmup_ratio=0.0, group_by_length=False,
                        logging_steps=1, save_steps=1000, max_length=128)  # the only checkpoint is the final one
    runs = [run_sft_trainer(copy.deepcopy(tiny_policy), tiny_tokenizer, ds, stage, seed=0, output_dir=tmp_path,
                            stage="reading") for _ in range(2)]
    (m1, h1), (m2, h2) = runs
    assert weights_fingerprint(m1) == weights_fingerprint(m2)
    assert h1["step"].tolist() == h2["step"].tolist() == [1, 2, 3]
    assert h1["loss"].tolist() == h2["loss"].tolist()
