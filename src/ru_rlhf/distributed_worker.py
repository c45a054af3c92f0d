"""One worker of a distributed training step (started by ``accelerate launch``; see ``ru_rlhf.distributed``).

    python -m ru_rlhf.distributed_worker {dpo|sft|rl|trl_rl|rm} WORKDIR

Reads its inputs from WORKDIR, runs the project's own training function (unchanged), and writes:
every rank ``rank_<i>.json`` (rank, world size, steps, last loss); rank 0 the trained model
(``out/``, safetensors), ``history.parquet`` and, for ``rl`` and ``trl_rl``, ``info.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def main(task: str, workdir: str) -> None:
    import pandas as pd
    import torch

    threads = os.environ.get("RU_RLHF_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    w = Path(workdir)
    rank, world = _rank()
    from ru_rlhf.models.policy import load_policy, load_tokenizer

    info = None
    if task == "rm":  # the reward model carries its own (encoder) tokenizer
        from ru_rlhf.models.reward import load_reward_model, train_reward_model

        rm, tok = load_reward_model(w / "reward_model")
        kwargs = json.loads((w / "kwargs.json").read_text())
        if (w / "validation.parquet").exists():
            kwargs["validation"] = pd.read_parquet(w / "validation.parquet")
        model, hist = train_reward_model(rm, tok, pd.read_parquet(w / "data.parquet"), **kwargs)
    elif task in ("dpo", "sft"):
        from datasets import Dataset

        from ru_rlhf.models.training import run_dpo_trainer, run_sft_trainer

        tok = load_tokenizer(w / "tokenizer")
        ds = Dataset.from_parquet(str(w / "data.parquet"))
        kwargs = json.loads((w / "kwargs.json").read_text())
        policy = load_policy(w / "policy")
        if task == "dpo":
            model, hist = run_dpo_trainer(policy, load_policy(w / "reference"), tok, ds, **kwargs)
        else:
            from ru_rlhf.models.training import StageParams

            stage = StageParams.model_validate(json.loads((w / "stage.json").read_text()))
            model, hist = run_sft_trainer(policy, tok, ds, stage, **kwargs)
    elif task == "rl":
        from ru_rlhf.models.reward import load_reward_model
        from ru_rlhf.rl.runner import run_rl

        tok = load_tokenizer(w / "tokenizer")
        model, hist, info = run_rl(load_policy(w / "policy"), load_policy(w / "reference"), tok,
                                   load_reward_model(w / "reward_model"), pd.read_parquet(w / "train_prompts.parquet"),
                                   pd.read_parquet(w / "probe_prompts.parquet"),
                                   **json.loads((w / "kwargs.json").read_text()))
    elif task == "trl_rl":
        from ru_rlhf.models.reward import load_reward_model
        from ru_rlhf.rl.trl_online import run_trl_rl

        tok = load_tokenizer(w / "tokenizer")
        rm = load_reward_model(w / "reward_model") if (w / "reward_model").exists() else None
        model, hist, info = run_trl_rl(load_policy(w / "policy"), load_policy(w / "reference"), tok, rm,
                                       pd.read_parquet(w / "train_prompts.parquet"),
                                       pd.read_parquet(w / "probe_prompts.parquet"),
                                       **json.loads((w / "kwargs.json").read_text()))
    else:
        raise SystemExit(f"unknown task {task!r}")
    steps = int(hist["step"].max()) if len(hist) and "step" in hist else 0
    losses = hist["loss"].dropna() if "loss" in hist else []
    report = {"rank": rank, "world_size": world, "steps": steps,
              "last_loss": float(losses.iloc[-1]) if len(losses) else None,
              "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}
    (w / f"rank_{rank}.json").write_text(json.dumps(report))
    if rank == 0:
        if task == "rm":
            model.save_pretrained(w / "out", tok)
        else:
            model.save_pretrained(w / "out")
        hist.to_parquet(w / "history.parquet")
        if info is not None:
            (w / "info.json").write_text(json.dumps(info, default=float))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
