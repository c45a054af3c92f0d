"""Scale-out on an existing engine: training steps run under ``accelerate launch`` with N processes.

A training node stays one Kedro node. When its ``distributed.num_processes`` is above 1 it hands
its inputs to a subprocess started with ``accelerate launch`` (DDP by default — gloo on CPU, NCCL
on GPUs — or DeepSpeed / FSDP through a config from ``conf/hub/accelerate/``), waits, and loads the
result, so the rest of the Kedro graph runs once, in the parent. Inputs and outputs cross the
process boundary as files (safetensors weights, parquet, JSON) in a temporary work directory.

In the workers the same training code runs unchanged: TRL's trainers (pre-training, SFT, CEM's
SFT steps, DPO, IPO, GRPO, RLOO) distribute themselves under ``accelerate launch``; our PPO/REINFORCE loop
(:func:`ru_rlhf.rl.loop.train`) and our reward-model loop
(:func:`ru_rlhf.models.reward.train_reward_model`) wrap their model in ``accelerate.Accelerator``
when ``WORLD_SIZE`` is above 1 (:func:`ru_rlhf.parallel.accelerator`: gradients are averaged; PPO's
ranks sample their own rollouts and reduce KL and rewards so every rank takes the same stop decisions;
the RM's ranks split each global batch; only rank 0 writes). Every rank writes
``rank_<i>.json`` (its steps and last loss) so a caller can check that all ranks stepped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from ru_rlhf.params import Params

log = logging.getLogger(__name__)


class DistributedParams(Params):
    """``num_processes > 1`` runs the training step under ``accelerate launch``."""

    num_processes: int = Field(1, ge=1)
    config_file: str | None = None  # an accelerate config (conf/hub/accelerate/*.yaml); None: plain DDP
    threads_per_process: int | None = None  # torch threads per worker (default: cores / processes)
    keep_workdir: str | None = None  # keep each launch's work directory under this folder (tests, debugging)


class DistributedRunError(RuntimeError):
    """A distributed training subprocess failed (the message has its log tail)."""


def launch_command(task: str, workdir: Path, p: DistributedParams) -> list[str]:
    """The ``accelerate launch`` command line for ``python -m ru_rlhf.distributed_worker task workdir``."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_processes),
           "--num_machines", "1", "--dynamo_backend", "no"]
    if p.config_file:
        cmd += ["--config_file", p.config_file]
    else:  # DDP; on a machine without GPUs accelerate runs it on CPU processes with the gloo backend
        cmd += ["--multi_gpu", "--mixed_precision", "no"]
    return [*cmd, "-m", "ru_rlhf.distributed_worker", task, str(workdir)]


def run(task: str, p: DistributedParams, write_inputs, timeout: int | None = None) -> tuple[Path, list[dict]]:
    """Write the inputs (``write_inputs(workdir)``), launch the workers, check every rank stepped.

    Returns:
        ``(workdir, ranks)``: the work directory (outputs under it) and each rank's report.

    Raises:
        DistributedRunError: the launch failed or a rank wrote no report.
    """
    if p.keep_workdir:  # one sub-directory per launch, kept
        import time

        workdir = Path(p.keep_workdir) / f"{task}_{time.strftime('%H%M%S')}_{os.getpid()}_{time.perf_counter_ns() % 10**6}"
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"ru_rlhf_{task}_"))
    write_inputs(workdir)
    threads = p.threads_per_process or max(1, (os.cpu_count() or 1) // p.num_processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "RU_RLHF_TORCH_THREADS": str(threads)}
    cmd = launch_command(task, workdir, p)
    log.info("%s: launching %d processes: %s", task, p.num_processes, " ".join(cmd))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    (workdir / "launch.log").write_text(res.stdout + "\n" + res.stderr, encoding="utf-8")
    if res.returncode != 0:
        raise DistributedRunError(f"{task}: accelerate launch exited {res.returncode}; log tail:\n"
                                  + (res.stdout + res.stderr)[-4000:])
    ranks = [json.loads((workdir / f"rank_{i}.json").read_text()) for i in range(p.num_processes)
             if (workdir / f"rank_{i}.json").exists()]
    if len(ranks) != p.num_processes:
        raise DistributedRunError(f"{task}: {len(ranks)} of {p.num_processes} ranks reported; see {workdir}/launch.log")
    log.info("%s: ranks %s", task, ranks)
    return workdir, ranks


def _cleanup(workdir: Path, p: DistributedParams) -> None:
    if not p.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- the training steps
# Each runs the project's training function in this process when ``num_processes`` is 1, so a node
# makes one call either way.
def dpo(model, ref_model, tokenizer, dataset, p: DistributedParams, **kwargs) -> tuple[Any, pd.DataFrame]:
    """:func:`ru_rlhf.models.training.run_dpo_trainer`: in this process, or on ``p.num_processes``."""
    from ru_rlhf.models.policy import load_policy

    if p.num_processes <= 1:
        from ru_rlhf.models.training import run_dpo_trainer

        return run_dpo_trainer(model, ref_model, tokenizer, dataset, **kwargs)

    def write(w: Path) -> None:
        model.save_pretrained(w / "policy")
        ref_model.save_pretrained(w / "reference")
        tokenizer.save_pretrained(w / "tokenizer")
        dataset.to_parquet(str(w / "data.parquet"))
        (w / "kwargs.json").write_text(json.dumps({**kwargs, "output_dir": str(kwargs["output_dir"])}))

    workdir, _ = run("dpo", p, write)
    out = load_policy(workdir / "out"), pd.read_parquet(workdir / "history.parquet")
    _cleanup(workdir, p)
    return out


def sft(model, tokenizer, dataset, stage_params, p: DistributedParams, **kwargs) -> tuple[Any, pd.DataFrame]:
    """:func:`ru_rlhf.models.training.run_sft_trainer`: in this process, or on ``p.num_processes``."""
    from ru_rlhf.models.policy import load_policy

    if p.num_processes <= 1:
        from ru_rlhf.models.training import run_sft_trainer

        return run_sft_trainer(model, tokenizer, dataset, stage_params, **kwargs)

    def write(w: Path) -> None:
        model.save_pretrained(w / "policy")
        tokenizer.save_pretrained(w / "tokenizer")
        dataset.to_parquet(str(w / "data.parquet"))
        (w / "stage.json").write_text(json.dumps(stage_params.model_dump()))
        (w / "kwargs.json").write_text(json.dumps({**kwargs, "output_dir": str(kwargs["output_dir"])}))

    workdir, _ = run("sft", p, write)
    out = load_policy(workdir / "out"), pd.read_parquet(workdir / "history.parquet")
    _cleanup(workdir, p)
    return out


def _online(task: str, sft_policy, reference_policy, tokenizer, reward_model, train_prompts: pd.DataFrame,
            probe_prompts: pd.DataFrame, p: DistributedParams, **kwargs):
    """An online RL run (``task`` ``rl``: :func:`ru_rlhf.rl.runner.run_rl`; ``trl_rl``:
    :func:`ru_rlhf.rl.trl_online.run_trl_rl`) in this process, or on ``p.num_processes`` (the workers get the
    policies, the tokenizer, the reward model, the prompt tables and ``kwargs`` as files); returns
    ``(policy, step_log, info)``."""
    from ru_rlhf.models.policy import load_policy

    if p.num_processes <= 1:
        if task == "rl":
            from ru_rlhf.rl.runner import run_rl as runner
        else:
            from ru_rlhf.rl.trl_online import run_trl_rl as runner

        return runner(sft_policy, reference_policy, tokenizer, reward_model, train_prompts, probe_prompts, **kwargs)

    def write(w: Path) -> None:
        sft_policy.save_pretrained(w / "policy")
        reference_policy.save_pretrained(w / "reference")
        tokenizer.save_pretrained(w / "tokenizer")
        if reward_model is not None:
            rm, rm_tok = reward_model
            rm.save_pretrained(w / "reward_model", rm_tok)
        train_prompts.to_parquet(w / "train_prompts.parquet")
        probe_prompts.to_parquet(w / "probe_prompts.parquet")
        (w / "kwargs.json").write_text(json.dumps(kwargs, default=str))

    workdir, _ = run(task, p, write)
    out = (load_policy(workdir / "out"), pd.read_parquet(workdir / "history.parquet"),
           json.loads((workdir / "info.json").read_text()))
    _cleanup(workdir, p)
    return out


def rl(sft_policy, reference_policy, tokenizer, reward_model, train_prompts: pd.DataFrame,
       probe_prompts: pd.DataFrame, p: DistributedParams, **kwargs):
    """:func:`ru_rlhf.rl.runner.run_rl` (PPO or REINFORCE; ``kwargs`` are its plain-valued arguments): in this
    process, or on ``p.num_processes``."""
    return _online("rl", sft_policy, reference_policy, tokenizer, reward_model, train_prompts, probe_prompts, p,
                   **kwargs)


def trl_rl(sft_policy, reference_policy, tokenizer, reward_model, train_prompts: pd.DataFrame,
           probe_prompts: pd.DataFrame, p: DistributedParams, **kwargs):
    """:func:`ru_rlhf.rl.trl_online.run_trl_rl` (GRPO or RLOO with TRL's trainers; ``kwargs`` are its plain-valued
    arguments): in this process, or on ``p.num_processes`` (TRL's trainer distributes itself under the launch)."""
    return _online("trl_rl", sft_policy, reference_policy, tokenizer, reward_model, train_prompts, probe_prompts, p,
                   **kwargs)


def reward_model(rm, tokenizer, pairs: pd.DataFrame, p: DistributedParams, **kwargs):
    """:func:`ru_rlhf.models.reward.train_reward_model`: in this process, or on ``p.num_processes``.

    The model goes over with its initialised head (so the run starts from the same weights as a
    single-process one) and comes back with the trained one; returns ``(rm, log)``.
    """
    from ru_rlhf.models.reward import load_reward_model, train_reward_model

    if p.num_processes <= 1:
        return train_reward_model(rm, tokenizer, pairs, **kwargs)

    def write(w: Path) -> None:
        rm.save_pretrained(w / "reward_model", tokenizer)
        pairs.to_parquet(w / "data.parquet")
        rest = dict(kwargs)
        validation = rest.pop("validation", None)
        if validation is not None:
            validation.to_parquet(w / "validation.parquet")
        (w / "kwargs.json").write_text(json.dumps({k: (str(v) if isinstance(v, Path) else v)
                                                   for k, v in rest.items()}))

    workdir, _ = run("rm", p, write)
    trained, _tok = load_reward_model(workdir / "out")
    out = trained, pd.read_parquet(workdir / "history.parquet")
    _cleanup(workdir, p)
    return out
