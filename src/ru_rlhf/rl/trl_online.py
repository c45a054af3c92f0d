"""GRPO and RLOO from the SFT policy with TRL's own trainers, against the reward model's scalar (or the gold judges').

What is TRL's (1.16) and what is ours:

* **TRL's** — the algorithms, unchanged: :class:`trl.GRPOTrainer` / :class:`trl.RLOOTrainer` sample
  ``num_generations`` completions per prompt, call our reward function, compute the advantages, the loss and the
  KL to the reference, and step the optimiser. Facts of TRL 1.16 this module relies on (read in its source):

  - *GRPO*: advantage = (reward − the mean reward of the prompt's group) / (the group's std + 1e-4) with
    ``scale_rewards="group"`` (``"batch"``: the batch's std; ``"none"``: not scaled); a PPO-style clipped
    per-token ratio loss (``epsilon``) plus ``beta`` × the per-token KL *in the loss*, aggregated per
    ``loss_type`` (``"dapo"`` TRL's default: over all completion tokens of the batch; ``"grpo"``: per sequence,
    then mean). ``beta`` **defaults to 0.0** in :class:`trl.GRPOConfig` (no reference model, no KL logged): we
    always set it from our parameters, and require it > 0. Its ``kl`` metric is the mean over completion
    tokens of Schulman's k3 estimator ``exp(ref − logp) − (ref − logp) − 1`` (≥ 0) on the sampled tokens, logp
    of the policy being updated (with one iteration per batch, the one that sampled them), in nats per token.
  - *RLOO*: the KL enters the *reward*: reward − ``beta`` × Σ_tokens (logp_old − logp_ref) per sequence; advantage
    = that reward minus the leave-one-out mean of the other ``num_generations − 1`` completions of the prompt
    (``normalize_advantages``: then z-scored over the batch); loss: a sequence-level clipped ratio
    (``epsilon``), mean over sequences. ``beta`` defaults to 0.05 in :class:`trl.RLOOConfig`; we set it.
    Its ``kl`` metric is the mean over completion tokens of the first-order estimate ``logp − logp_ref`` of the
    sampled tokens (the policy that sampled them), nats per token; unlike GRPO's it can be negative.
  - Both log ``reward`` (the mean of our reward function's scalar, before any KL term), ``entropy`` (mean
    per-token entropy of the completions), ``loss`` and the clip ratios, once per optimiser step
    (``logging_steps=1``). Both build their reference model themselves (when ``beta > 0``) by loading
    ``model.config._name_or_path`` again: we point it at a saved copy of our ``reference_policy`` (the frozen
    SFT policy) while the trainer is built.
  - Their configs default to ``bf16=True`` and gradient checkpointing: :func:`ru_rlhf.models.training.trl_common_args`
    sets ``use_cpu``, ``bf16=False`` on CPU, no gradient checkpointing and ``report_to="none"``.

* **Ours** — the frame every RL method of the project shares: the train prompts formatted with
  :func:`ru_rlhf.models.policy.format_prompt` as TRL's ``prompt`` column and the raw text as ``raw_prompt`` (TRL
  passes dataset columns to a reward function as keyword arguments; the scorers take the raw prompt); the reward
  function (:func:`reward_function`) wrapping a scorer's ``scalar``; and a ``TrainerCallback`` that every
  ``eval_every`` steps saves the policy under ``checkpoint_dir/step-NNNN`` (the layout PPO's loop uses: the
  catalog's ``alignment.<method>.checkpoints`` and the audit follow them), scores greedy answers on the probe set
  (:func:`ru_rlhf.scoring.probe_policy`), keeps the best state by the simulated expert panel's score among the
  states whose smoothed KL (the running mean of TRL's ``kl`` over ``kl_window`` steps) is within ``best_max_kl``
  and stops after ``patience`` evaluations without a better one (PPO's rule: :class:`ru_rlhf.rl.selection.BestState`,
  the probe run with TRL's sampling RNG and the policy's train mode left as they were). A run starts afresh (there
  is no resume state): the ``step-*`` and ``best`` folders of an earlier run are removed first.

Under ``accelerate launch`` (:func:`ru_rlhf.distributed.trl_rl`) TRL's trainers distribute themselves; every rank
evaluates the probe on the same weights (so all take the same stop decision) and only the main process writes.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ru_rlhf.models.policy import format_prompt
from ru_rlhf.rl.selection import BestState
from ru_rlhf.scoring import Scorer, probe_policy, reward_scorer

log = logging.getLogger(__name__)

ALGORITHMS = ("grpo", "rloo")
REFERENCE_COPY = ".reference"  # under the checkpoint folder, while TRL builds its reference model
# the options one algorithm alone has: a config gives those of its algorithm and leaves the other's None
ALGORITHM_FIELDS = {"grpo": ("loss_type", "scale_rewards"), "rloo": ("normalize_advantages",)}
# TRL's logged metrics kept in the step log (TRL's name -> ours), besides reward, kl, entropy and loss
EXTRA_METRICS = {"reward_std": "reward_std", "grad_norm": "grad_norm", "learning_rate": "learning_rate",
                 "completions/mean_length": "response_tokens", "clip_ratio/region_mean": "clipfrac",
                 "frac_reward_zero_std": "frac_reward_zero_std", "step_time": "step_time"}


@dataclass(kw_only=True)
class TrlOnlineConfig:
    """One GRPO or RLOO run's controls. No defaults: the values come from the parameters
    (``ru_rlhf.pipelines.alignment.params.TrlRLParams.trl()``, the YAML in ``conf/``) and the run's seed."""

    algorithm: str  # "grpo" or "rloo"
    steps: int  # optimiser steps (one generation batch each)
    batch_size: int  # completions per step and process: batch_size / num_generations prompts
    num_generations: int  # completions per prompt (the group GRPO normalises in, RLOO's leave-one-out)
    learning_rate: float  # constant (AdamW, no warm-up), as PPO's
    beta: float  # KL coefficient (> 0: GRPO's default is 0, which would drop the reference and the KL)
    max_new_tokens: int
    temperature: float
    epsilon: float  # the ratio clip
    max_grad_norm: float
    eval_every: int
    patience: int
    best_max_kl: float | None  # a state is eligible as the best only while the smoothed KL is within it
    kl_window: int  # steps in the smoothed (running-mean) KL
    loss_type: str | None  # GRPO's: "grpo", "dapo", "dr_grpo", "bnpo"
    scale_rewards: str | None  # GRPO's: "group", "batch", "none"
    normalize_advantages: bool | None  # RLOO's
    seed: int

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm is {self.algorithm!r}; it must be one of {', '.join(ALGORITHMS)}")
        if self.beta <= 0:
            raise ValueError(f"beta is {self.beta}: it must be > 0 (at 0 TRL keeps no reference and logs no KL)")
        if self.batch_size % self.num_generations or self.num_generations < 2:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations}), which must be at least 2")
        missing = [f for f in ALGORITHM_FIELDS[self.algorithm] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{self.algorithm} needs {', '.join(missing)}")

    def trl_args(self, output_dir: str | Path) -> dict:
        """The keyword arguments of :class:`trl.GRPOConfig` / :class:`trl.RLOOConfig` for this run."""
        from ru_rlhf.models.training import trl_common_args

        own = {"loss_type": self.loss_type, "scale_rewards": self.scale_rewards} if self.algorithm == "grpo" \
            else {"normalize_advantages": self.normalize_advantages}
        return {
            **trl_common_args(self.seed, output_dir),
            "max_steps": self.steps, "per_device_train_batch_size": self.batch_size, "gradient_accumulation_steps": 1,
            "num_generations": self.num_generations, "learning_rate": self.learning_rate,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "beta": self.beta,
            "max_completion_length": self.max_new_tokens, "temperature": self.temperature, "top_p": 1.0,
            "epsilon": self.epsilon, "max_grad_norm": self.max_grad_norm, "num_iterations": 1,
            "logging_steps": 1, "save_strategy": "no", "disable_dropout": True, "log_completions": False,
            "generation_kwargs": {"use_cache": True},  # the SFT policy's config says use_cache: false
            **own,
        }


def reward_function(scorer: Scorer, name: str) -> Callable[..., list[float]]:
    """TRL's reward function from a scorer (``(prompts, responses) -> DataFrame`` with ``scalar``): called by
    TRL as ``fn(prompts=..., completions=..., raw_prompt=..., ...)``, it scores each completion (stripped, as
    the project's generation returns answers) against its *raw* prompt (the ``raw_prompt`` dataset column: the
    scorers format prompts themselves, and the gold judges find a prompt's context by its text). ``name`` is
    what TRL logs it as (``rewards/<name>/mean``)."""

    def fn(prompts: list[str], completions: list[str], raw_prompt: list[str], **_) -> list[float]:
        responses = [str(c).strip() for c in completions]
        return [float(x) for x in scorer(list(raw_prompt), responses)["scalar"].to_numpy()]

    fn.__name__ = name
    return fn


def training_dataset(train_prompts: pd.DataFrame, tokenizer, context: int, max_new_tokens: int):
    """TRL's dataset: ``prompt`` (formatted), ``raw_prompt``, ``prompt_id``; prompts whose formatted tokens would
    not leave ``max_new_tokens`` in the policy's ``context`` are left out (TRL does not cut prompts), with a
    warning."""
    from datasets import Dataset

    formatted = [format_prompt(p) for p in train_prompts["prompt"]]
    lengths = [len(ids) for ids in tokenizer(formatted, add_special_tokens=False)["input_ids"]]
    keep = [n + max_new_tokens <= context for n in lengths]
    if not all(keep):
        log.warning("%d of %d training prompts are longer than the context (%d) leaves after %d new tokens: left out",
                    len(keep) - sum(keep), len(keep), context, max_new_tokens)
    if not any(keep):
        raise ValueError("no training prompt fits the policy's context")
    rows = [(f, p, str(i)) for f, p, i, k in zip(formatted, train_prompts["prompt"], train_prompts["prompt_id"], keep)
            if k]
    return Dataset.from_dict({"prompt": [r[0] for r in rows], "raw_prompt": [r[1] for r in rows],
                              "prompt_id": [r[2] for r in rows]})


def _undisturbing(evaluate: Callable[[object], dict]) -> Callable[[object], dict]:
    """``evaluate`` run so that it leaves TRL's sampling RNG (the probe's generation is seeded) and the policy's
    train mode as they were."""

    def fn(policy) -> dict:
        import torch

        was_training = policy.training
        with torch.random.fork_rng():
            res = evaluate(policy)
        policy.train(was_training)
        return res

    return fn


class _Evaluation:
    """The run's frame around TRL's steps: its log, the probe evaluations, the best state (``best``) and the stop."""

    def __init__(self, cfg: TrlOnlineConfig, evaluate: Callable[[object], dict], checkpoint_dir: Path, desc: str):
        self.cfg, self.desc = cfg, desc
        self.rows: list[dict] = []
        self.stop, self.start = "max_steps", time.perf_counter()
        self.is_main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch only rank 0 writes
        self.best = BestState(_undisturbing(evaluate), checkpoint_dir, best_max_kl=cfg.best_max_kl,
                              kl_window=cfg.kl_window, patience=cfg.patience, is_main=self.is_main)

    def evaluate(self, policy, step: int) -> dict:
        """Save (step > 0) and score ``policy``; keep it as the best if it scores better within ``best_max_kl``."""
        return self.best.evaluate(policy, step, self.rows)

    def step(self, policy, step: int, logs: dict) -> bool:
        """Log TRL's metrics of ``step``, evaluate when due; True: stop (patience spent)."""
        from ru_rlhf.rl.loop import NonFiniteError

        row = {"step": step, "reward": logs.get("reward"), "kl": logs.get("kl"), "entropy": logs.get("entropy"),
               "loss": logs.get("loss"), **{ours: logs.get(theirs) for theirs, ours in EXTRA_METRICS.items()}}
        for name in ("reward", "kl", "loss"):
            value = row[name]
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteError(f"{self.desc}: {name} is not finite ({value}) at step {step}; the run stopped")
        row["kl_coef"] = self.cfg.beta
        row["seconds"] = round(time.perf_counter() - self.start, 2)
        self.rows.append(row)
        row["kl_smoothed"] = self.best.smoothed_kl(self.rows)
        if step % self.cfg.eval_every == 0:
            res = self.evaluate(policy, step)
            row["expert_score"] = res["score"]
            row.update({k: v for k, v in res.items() if k != "score"})
            log.info("%s step %d: reward %.4f, kl %.4f, probe gold %.4f, expert %.3f", self.desc, step,
                     row["reward"] if row["reward"] is not None else float("nan"),
                     row["kl"] if row["kl"] is not None else float("nan"), row["probe_gold"], row["expert_score"])
        if reason := self.best.stop_reason():
            self.stop = reason
            return True
        return False


def _callback(run: _Evaluation, trainer_ref: dict):
    from transformers import TrainerCallback

    class _Frame(TrainerCallback):
        """Every logged TRL step: into our log; every ``eval_every`` steps: save, probe, best state, stop."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:  # the end-of-training summary has no step metrics
                return control
            trainer = trainer_ref["trainer"]
            if run.step(trainer.accelerator.unwrap_model(trainer.model), state.global_step, logs):
                control.should_training_stop = True
            return control

    return _Frame()


def train(sft_policy, reference_policy, tokenizer, scorer: Scorer, train_prompts: pd.DataFrame,
          probe_prompts: pd.DataFrame, cfg: TrlOnlineConfig, *, checkpoint_dir: str | Path,
          max_new_tokens: int | Mapping[str, int], batch_size: int, reward_name: str = "reward",
          desc: str = "trl_rl"):
    """One GRPO or RLOO run (``cfg``) from a copy of ``sft_policy`` against ``scorer``'s ``scalar``, with TRL's trainer.

    The input policy is left as it was; TRL's reference model (its own copy, ``beta > 0``) holds
    ``reference_policy``'s weights. Completions are sampled for ``train_prompts`` (``prompt_id``, ``prompt``). Every
    ``eval_every`` steps greedy answers on ``probe_prompts`` are scored (:func:`ru_rlhf.scoring.probe_policy` with
    ``cfg.seed``, ``max_new_tokens`` and ``batch_size``) and the state is saved under ``checkpoint_dir/step-NNNN``;
    the best state by the expert panel's score (within ``best_max_kl``) is the output. ``reward_name`` names the
    reward function in TRL's metrics.

    Returns:
        ``(policy, step_log, info)``: the log has one row per step (``step``, ``reward``, ``kl``, ``kl_smoothed``,
        ``entropy``, ``loss``, …, and at evaluated steps ``probe_gold``, ``expert_score``) after a step-0 row for
        the SFT policy; ``info`` has ``algorithm``, ``stop_reason``, ``steps_run``, ``best_step``, ``best_score``,
        ``kl_at_best``, ``sft_probe_gold``, ``sft_probe_expert``, ``best_probe_gold``, ``seconds`` and the run's
        settings.
    """
    from accelerate import PartialState
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    ckpt = Path(checkpoint_dir)
    run = _Evaluation(cfg, lambda m: probe_policy(m, tokenizer, probe_prompts, seed=cfg.seed,
                                                  max_new_tokens=max_new_tokens, batch_size=batch_size)[0], ckpt, desc)
    if run.is_main:  # an earlier run's states and reference copy must go
        run.best.clear_earlier_run()
        shutil.rmtree(ckpt / REFERENCE_COPY, ignore_errors=True)
        ckpt.mkdir(parents=True, exist_ok=True)
    context = getattr(sft_policy.config, "max_position_embeddings", None) or 10 ** 9
    dataset = training_dataset(train_prompts, tokenizer, context, cfg.max_new_tokens)
    base = run.evaluate(sft_policy, 0)
    run.rows.append({"step": 0, "expert_score": base["score"], **{k: v for k, v in base.items() if k != "score"},
                     "seconds": 0.0})  # no KL: not in the smoothed KL (as PPO's log)
    Config, Trainer = (GRPOConfig, GRPOTrainer) if cfg.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = Config(**cfg.trl_args(ckpt / "trainer"))
    policy = copy.deepcopy(sft_policy)
    trainer_ref: dict = {}
    # TRL loads its reference model from `config._name_or_path`: a copy of reference_policy saved (by rank 0 under
    # accelerate launch, which every rank then reads) while the trainer is built, removed once it is
    state, ref_dir = PartialState(), ckpt / REFERENCE_COPY
    if run.is_main:
        reference_policy.save_pretrained(ref_dir)
    state.wait_for_everyone()
    name = policy.config._name_or_path
    policy.config._name_or_path = str(ref_dir)
    try:
        trainer = Trainer(model=policy, reward_funcs=reward_function(scorer, reward_name), args=args,
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[_callback(run, trainer_ref)])
    finally:
        policy.config._name_or_path = name
        state.wait_for_everyone()
        if run.is_main:
            shutil.rmtree(ref_dir, ignore_errors=True)
    trainer_ref["trainer"] = trainer
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if run.is_main:
        shutil.rmtree(ckpt / "trainer", ignore_errors=True)  # Trainer's output folder: nothing in it (save_strategy no)
    if run.best.state is not None:
        model.load_state_dict(run.best.state)
    step_log = pd.DataFrame(run.rows)
    best = step_log[step_log["step"] == run.best.step].iloc[0]
    info = {"algorithm": cfg.algorithm, "stop_reason": run.stop, "steps_run": int(step_log["step"].max()),
            "best_step": int(run.best.step), "best_score": float(run.best.score),
            "kl_at_best": float(best["kl"]) if "kl" in best and pd.notna(best["kl"]) else 0.0,
            "sft_probe_gold": float(base["probe_gold"]), "sft_probe_expert": float(base["probe_expert"]),
            "best_probe_gold": float(best["probe_gold"]), "beta": cfg.beta, "num_generations": cfg.num_generations,
            "prompts": len(dataset), "processes": trainer.accelerator.num_processes,
            "seconds": round(time.perf_counter() - run.start, 1)}
    log.info("%s: %s", desc, info)
    return model.eval(), step_log, info


def run_trl_rl(sft_policy, reference_policy, tokenizer, reward_model, train_prompts: pd.DataFrame,
               probe_prompts: pd.DataFrame, *, method: str, trl: dict, seed: int, checkpoint_dir: str | Path,
               reward_weights: dict[str, float] | None, reward: str, max_new_tokens: int | Mapping[str, int],
               batch_size: int, desc: str):
    """:func:`train` for a method of the project: ``trl`` holds :class:`TrlOnlineConfig`'s fields but ``seed``
    (plain values: what crosses to the workers of :func:`ru_rlhf.distributed.trl_rl`), ``reward`` is ``rm``
    (``reward_model``'s scalar, ``reward_weights`` over its heads) or ``gold`` (the gold judges' mean from
    ``train_prompts``' judge context: the oracle run), ``method`` names the run in its log and info.

    Returns:
        ``(policy, step_log, info)`` as :func:`ru_rlhf.rl.runner.run_rl` returns them (``info`` also has
        ``method``, ``algorithm``, ``reward``).
    """
    cfg = TrlOnlineConfig(**trl, seed=seed)
    scorer = reward_scorer(reward, reward_model, reward_weights, train_prompts, desc)
    policy, step_log, info = train(sft_policy, reference_policy, tokenizer, scorer, train_prompts, probe_prompts, cfg,
                                   checkpoint_dir=checkpoint_dir, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   reward_name=reward, desc=desc)
    step_log.insert(0, "method", method)
    return policy, step_log, {"method": method, "reward": reward, **info}
