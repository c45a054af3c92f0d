"""Atomic outputs, numerical guards and safe loading.

* every file dataset in the catalog writes to a temporary sibling and renames it into place, so a
  failed or killed save leaves the previous output (or nothing), never a truncated file;
* a model killed mid-save leaves no directory a later run would load;
* NaN/inf in a loss, reward or KL stops training with an error naming the stage and the step,
  and nothing of that step is saved;
* models load from safetensors only: a directory with only ``pytorch_model.bin`` is refused.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ru_rlhf.io.datasets import AtomicJSONDataset, AtomicParquetDataset, HFModelDataset

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_dataset_in_the_catalog_saves_atomically():
    atomic_or_own = ("ru_rlhf.io.datasets.Atomic", "ru_rlhf.io.datasets.HFModelDataset",
                     "ru_rlhf.io.datasets.BundleFoldersDataset",  # these two rename a finished folder into place
                     "ru_rlhf.io.datasets.CorpusDataset", "ru_rlhf.io.datasets.PairsDataset",
                     "ru_rlhf.io.datasets.RatingsDataset", "ru_rlhf.io.datasets.HumanLabelsDataset",
                     "ru_rlhf.io.datasets.BiasProbesDataset",  # read-only: files read in place
                     "ru_rlhf.io.datasets.FolderDataset", "ru_rlhf.io.datasets.CheckpointsDataset",  # write nothing
                     "ru_rlhf.io.datasets.FeedbackDataset",
                     "ru_rlhf.io.datasets.EmissionsDataset")  # the last two write through os.replace / SQLite
    for cat in ROOT.glob("conf/*/catalog*.yml"):
        for name, entry in yaml.safe_load(cat.read_text()).items():
            if isinstance(entry, dict) and "type" in entry:
                assert entry["type"].startswith(atomic_or_own), f"{cat}: {name} is a {entry['type']}"


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    ds = AtomicParquetDataset(filepath=str(path))
    ds.save(pd.DataFrame({"a": [1, 2, 3]}))

    def broken(self, fh, **kw):  # writes half a file, then fails (a crash mid-write)
        fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(Exception, match="disk full"):
        ds.save(pd.DataFrame({"a": [9]}))
    monkeypatch.undo()
    assert ds.load()["a"].tolist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_json_report_is_replaced_whole(tmp_path):
    ds = AtomicJSONDataset(filepath=str(tmp_path / "r.json"))
    ds.save({"x": 1})
    ds.save({"x": 2, "y": [1, 2]})
    assert ds.load() == {"x": 2, "y": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_arrow_directory_is_replaced_whole_and_a_failed_save_keeps_the_previous_one(tmp_path, monkeypatch):
    import datasets

    from ru_rlhf.io.datasets import AtomicArrowDataset

    ds = AtomicArrowDataset(path=str(tmp_path / "pairs"))
    assert not ds.exists()
    ds.save(datasets.Dataset.from_dict({"chosen": ["a", "b", "c"]}))
    ds.save(datasets.Dataset.from_dict({"chosen": ["d"]}))
    assert ds.exists() and ds.load().to_dict() == {"chosen": ["d"]}

    def broken(self, path, **kw):  # starts the directory, then fails
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken)
    with pytest.raises(Exception, match="disk full"):
        ds.save(datasets.Dataset.from_dict({"chosen": ["e"]}))
    monkeypatch.undo()
    assert ds.load().to_dict() == {"chosen": ["d"]}
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]
    with pytest.raises(Exception, match="datasets.Dataset or DatasetDict, got <class 'list'>"):
        ds.save(["not", "a", "dataset"])


def test_the_catalog_datasets_do_not_import_transformers_pipelines():
    # kedro_datasets.huggingface imports transformers.pipelines (3 s a process); the project's own Arrow dataset must not
    code = "import sys, ru_rlhf.io.datasets; print('transformers.pipelines' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_model_killed_mid_save_leaves_nothing_loadable(tmp_path, tiny_policy):
    """SIGKILL while a model directory is being written: the target never appears half-written."""
    target = tmp_path / "policy"
    script = textwrap.dedent(f"""
        import time, torch
        from transformers import LlamaConfig, LlamaForCausalLM
        from ru_rlhf.io.datasets import HFModelDataset
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2))
        orig = model.save_pretrained
        def slow(path, *a, **kw):
            orig(path, *a, **kw)
            print("written", flush=True)
            time.sleep(60)  # killed here: the weights are in the temporary directory, not renamed yet
        model.save_pretrained = slow
        HFModelDataset({str(target)!r}).save(model)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    line = ""
    while "written" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "written" in line
    assert not target.exists()
    assert not HFModelDataset(str(target)).exists()
    # the next run's save replaces the leftover temporary directory and lands whole
    HFModelDataset(str(target)).save(tiny_policy)
    assert HFModelDataset(str(target)).exists() and list(target.glob("*.safetensors"))


def test_a_bin_only_model_directory_is_refused(tmp_path, tiny_policy):
    from ru_rlhf.models.policy import ModelLoadError, load_policy

    d = tmp_path / "bin_only"
    tiny_policy.save_pretrained(d, safe_serialization=True)
    import torch

    torch.save(tiny_policy.state_dict(), d / "pytorch_model.bin")
    for f in d.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match=r"no safetensors weights .*pytorch_model\.bin.*never pickles"):
        load_policy(d)
    with pytest.raises(Exception, match="no safetensors"):
        HFModelDataset(str(d)).load()


def test_trust_remote_code_is_never_set():
    hits = []
    for f in (ROOT / "src").rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "trust_remote_code" in line and "trust_remote_code=False" not in line and "``" not in line:
                hits.append(f"{f}:{i}: {line.strip()}")
    assert not hits, hits


def test_nan_reward_stops_ppo_at_that_step_and_saves_nothing(tmp_path, tiny_policy, tiny_tokenizer):
    import torch

    from ru_rlhf.rl.loop import NonFiniteError, train
    from tests.params_helpers import rl_config

    ref = tiny_policy.__class__(tiny_policy.config)
    prompts = pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["Вопрос один?", "Вопрос два?"]})
    calls = {"n": 0}

    def reward(ps, rs):
        calls["n"] += 1
        return torch.tensor([float("nan") if calls["n"] >= 3 else 0.1] * len(rs))

    # a constant reward has no spread to normalise against the reference's answers: normalised per batch here
    cfg = rl_config("alignment.ppo.train", steps=5, batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=4,
                    eval_every=2, kl_budget=100, best_max_kl=None, patience=100, reward_norm="batch")
    with pytest.raises(NonFiniteError, match=r"alignment\.ppo\.train_rl: reward is not finite .* at step 3"):
        train(tiny_policy, ref, tiny_tokenizer, prompts, reward, cfg, evaluate=lambda m: {"score": 0.0},
              checkpoint_dir=tmp_path, desc="alignment.ppo.train_rl", progress=False)
    assert not (tmp_path / "step-0003").exists() and not (tmp_path / "step-0004").exists()


def test_nan_loss_stops_a_trl_run_naming_the_stage_and_step(tmp_path, tiny_policy, tiny_tokenizer, small_world):
    import torch
    from datasets import Dataset

    from ru_rlhf.models.training import NonFiniteLossError, StageParams, run_sft_trainer

    with torch.no_grad():  # a poisoned model: every logit is NaN, so the very first loss is NaN
        tiny_policy.lm_head.weight.fill_(float("nan"))
    raw, _ = small_world
    ds = Dataset.from_pandas(pd.DataFrame({"text": raw["text"].str[:200].tolist()[:16]}), preserve_index=False)
    stage = StageParams(max_steps=4, batch_size=4, logging_steps=1, save_steps=2, max_length=64,
                        group_by_length=False)
    with pytest.raises(NonFiniteLossError, match=r"pretrain: loss is nan at step 1"):
        run_sft_trainer(tiny_policy, tiny_tokenizer, ds, stage, seed=0, output_dir=tmp_path, stage="pretrain")
    assert not list(tmp_path.glob("checkpoint-*"))
