"""The training loop shared by PPO and REINFORCE (InstructGPT / Ziegler et al., 2019).

Every step samples one batch of rollouts from the policy (:mod:`ru_rlhf.rl.rollout`), scored by the reward
model and by the KL to the frozen reference, and hands it to the algorithm's update. An algorithm is its
config: a subclass of :class:`RLConfig` whose :meth:`~RLConfig.make_update` gives the optimisation step on a
rollout (:class:`ru_rlhf.rl.ppo.PPOConfig`, :class:`ru_rlhf.rl.reinforce.ReinforceConfig`). Around the update
the loop keeps the KL coefficient β (an adaptive controller aimed at a target KL), evaluates every
``eval_every`` steps and keeps the best state (:class:`ru_rlhf.rl.selection.BestState`), stops early (patience, KL budget), stops on a NaN or inf, saves
a resumable training state, and runs DDP through ``accelerate`` under ``accelerate launch``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import pandas as pd
import torch

from ru_rlhf.models.generation import stable_seed
from ru_rlhf.models.policy import format_prompt
from ru_rlhf.parallel import accelerator
from ru_rlhf.rl.losses import AdaptiveKLController, FixedKLController, masked_mean
from ru_rlhf.rl.rollout import PolicyWithValue, Rollout, make_rollout
from ru_rlhf.rl.selection import BestState

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RLConfig(ABC):
    """The loop's controls, shared by PPO and REINFORCE; an algorithm's config adds its update's and makes it.

    No defaults: a run's values come from its parameters (``ru_rlhf.rl.params.RLParams.config``, the YAML in
    ``conf/``), so there is one source of them.
    """

    algorithm: ClassVar[str] = ""  # the algorithm's name in logs and reports
    steps: int
    batch_size: int
    learning_rate: float
    max_new_tokens: int
    init_kl_coef: float
    target_kl: float | None  # None: a fixed coefficient
    kl_horizon: int
    kl_budget: float  # stop when the smoothed rollout KL leaves it
    kl_window: int  # steps in the smoothed (running-mean) KL
    best_max_kl: float | None  # a state is eligible as the best only while the smoothed KL is within it
    temperature: float  # rollouts are sampled at it, and every log-probability is of the logits divided by it
    reward_norm: str  # "reference" / "reference_per_prompt": against the reference's samples; "batch"; "none"
    norm_samples: int  # the reference's samples it is fitted on (reference_per_prompt: per training prompt)
    reward_scale: float  # times the (normalised) score
    missing_eos_penalty: float  # subtracted from the score of a response that never emitted end-of-sequence
    eval_every: int
    patience: int  # evaluations without a better probe score
    max_grad_norm: float
    seed: int = 0

    @abstractmethod
    def make_update(self) -> Update:
        """The algorithm's optimisation step for a run (a fresh one per run: it may carry state); each algorithm's
        config (:class:`ru_rlhf.rl.ppo.PPOConfig`, :class:`ru_rlhf.rl.reinforce.ReinforceConfig`) gives its own."""


class Update(Protocol):
    """An algorithm's optimisation step on one rollout; returns the step's log entries (``loss`` among them).

    ``baseline`` is what it carries from step to step (REINFORCE's moving average; None for PPO, whose
    value head is its baseline); the resume state saves and restores it. ``uses_rollout_graph``: its first
    gradient step is on the rollout's own parameters, so it back-propagates through the rollout's forward pass
    (``Rollout.extra["logprobs_graph"]``, from ``make_rollout(keep_graph=True)``) instead of running it again.
    """

    baseline: float | None
    uses_rollout_graph: bool

    def __call__(self, model: PolicyWithValue, opt, r: Rollout, kl_coef: float, acc=None) -> dict: ...


def optimiser_step(model, opt, loss: torch.Tensor, max_grad_norm: float, acc=None) -> None:
    """Zero the gradients, back-propagate ``loss`` (through ``acc`` under DDP), clip their norm, step."""
    opt.zero_grad()
    acc.backward(loss) if acc is not None else loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()


class NonFiniteError(FloatingPointError):
    """A NaN or inf in a reward, KL or loss: the run stops at that step with nothing saved."""


def check_finite(desc: str, step: int, **values: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` naming ``desc``, the step and the first of ``values`` with a NaN or inf."""
    for name, value in values.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise NonFiniteError(f"{desc}: {name} is not finite (NaN or inf) at step {step}; the run stopped "
                                 "and no model of this step was saved")


def train(policy, ref_model, tokenizer, train_prompts: pd.DataFrame,
          reward_fn: Callable[[list[str], list[str]], torch.Tensor], cfg: RLConfig, *,
          evaluate: Callable[[object], dict] | None = None, checkpoint_dir: str | Path | None = None,
          desc: str = "ppo", progress: bool = True, resume: bool = True, critic=None, reward_id: str | None = None):
    """Run ``cfg``'s algorithm (PPO or REINFORCE) for at most ``cfg.steps`` rollouts.

    Args:
        train_prompts: ``prompt_id, prompt`` rows to sample rollouts from.
        reward_fn: ``(prompts, responses) -> tensor`` of sequence rewards (the RM's scalar).
        cfg: a :class:`ru_rlhf.rl.ppo.PPOConfig` or :class:`ru_rlhf.rl.reinforce.ReinforceConfig`.
        critic: PPO's value model (:class:`ru_rlhf.rl.rollout.Critic`, e.g. from the reward model); None: a
            zero-initialised value head on the policy's trunk.
        checkpoint_dir: each evaluated state is saved under ``step-NNNN`` and the best under ``best``.
        evaluate: called with the policy every ``eval_every`` steps (and before the first); returns
            a dict with ``score`` (higher is better, the expert panel's probe score) and anything
            else to log. The best-scoring state is kept and returned; training stops after
            ``patience`` evaluations without a better score, or when the KL leaves ``kl_budget``.
        resume: after every evaluation the whole training state (policy and value head, optimiser,
            KL controller, baseline, sampler RNG, log, best state) is saved under
            ``checkpoint_dir/resume``; a run started again with the same config, prompts and starting
            weights continues from there (a run killed with SIGKILL loses at most ``eval_every``
            steps). The resume state is removed when the run finishes.
        reward_id: what identifies ``reward_fn`` (the reward model's weights and head weights, or the gold
            judges): part of what a resume state must match, so a state trained on another reward is not resumed.

    Raises:
        NonFiniteError: a reward, KL or loss that is NaN or inf (names ``desc`` and the step);
            the step's update is not applied to a saved model.

    Returns:
        ``(policy, log, info)``: the best policy (by ``evaluate``'s score; the last one without
        ``evaluate``), the per-step log and a dict with the stop reason and best step.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    model = PolicyWithValue(policy, critic)
    ref_model.eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-6)
    # under `accelerate launch` (WORLD_SIZE > 1): DDP on the policy+value model; each rank samples its
    # own rollouts, gradients are averaged, KL/reward are reduced so every rank decides alike
    acc, train_model = accelerator(), model
    if acc is not None:
        train_model, opt = acc.prepare(model, opt)
    run = _Run(cfg, model, opt, acc, evaluate, checkpoint_dir)
    records = list(train_prompts[["prompt_id", "prompt"]].itertuples(index=False))
    stop, first_step, start = "max_steps", 1, time.perf_counter()
    resume_dir = Path(checkpoint_dir) / "resume" if checkpoint_dir else None
    fingerprint = None
    if resume_dir is not None:
        fingerprint = _fingerprint(cfg, records, desc, policy, evaluate, reward_id)
        saved = run.load(resume_dir, fingerprint) if resume else None
        if saved is not None:
            first_step, start = saved["step"] + 1, start - saved["seconds"]
            log.info("%s: resuming at step %d from %s", desc, first_step, resume_dir)
    if first_step == 1:
        run.best.clear_earlier_run()  # a fresh run: no earlier run's states mixed into this one's curve
        run.fit_reward_norm(ref_model, tokenizer, records, reward_fn)
        if critic is not None:
            run.fold_norm_into_critic(critic)
    if evaluate and first_step == 1:
        res = run.best.evaluate(model.policy, 0, run.logs)
        run.logs.append({"step": 0, "expert_score": res["score"], **{k: v for k, v in res.items() if k != "score"},
                         "seconds": 0.0})
    bar = tqdm(total=cfg.steps, initial=first_step - 1, desc=desc, unit="step", disable=not progress,
               mininterval=2.0)
    for step in range(first_step, cfg.steps + 1):
        batch = run.rng.sample(records, min(cfg.batch_size, len(records)))
        r, row = run.rollout(ref_model, tokenizer, batch, reward_fn, step, desc)
        model.train()
        row.update(run.update(train_model, opt, r, row["kl_coef"], acc))
        check_finite(desc, step, loss=torch.tensor(row["loss"]))
        run.kl_ctl.update(row["kl"], cfg.batch_size)
        row["seconds"] = round(time.perf_counter() - start, 2)
        run.logs.append(row)
        row["kl_smoothed"] = run.best.smoothed_kl(run.logs)
        if evaluate and step % cfg.eval_every == 0:
            res = run.best.evaluate(model.policy, step, run.logs)
            row["expert_score"] = res["score"]
            row.update({k: v for k, v in res.items() if k != "score"})
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.4f}")
        if reason := run.stop_reason(row):
            stop = reason
            break
        if resume_dir is not None and run.is_main and step % cfg.eval_every == 0 and step < cfg.steps:
            run.save(resume_dir, fingerprint, step, time.perf_counter() - start)
    bar.close()
    return run.finish(resume_dir, stop, start, desc)


def _fingerprint(cfg: RLConfig, records: list, desc: str, policy, evaluate, reward_id: str | None = None) -> str:
    """What a resume state must match: the config, the prompts, ``desc``, the starting weights, evaluating or not,
    and the reward (``reward_id``)."""
    from ru_rlhf.models.training import run_fingerprint, weights_fingerprint

    return run_fingerprint(cfg={"algorithm": cfg.algorithm, **asdict(cfg)}, prompts=[r.prompt_id for r in records],
                           desc=desc, weights=weights_fingerprint(policy), evaluate=evaluate is not None,
                           reward=reward_id)


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


# (reference weights, prompts, seeds, temperature, token budget) -> the reference's answers: every PPO and REINFORCE
# run of a `kedro run` (the methods, their gold oracles, ppo_long) samples the same reference answers for its reward
# normalisation; they are generated once and each run scores them with its own reward
_REFERENCE_ANSWERS: dict = {}


def reference_answers_key(ref_model, tokenizer, prompts: list[str], seeds: list[int], temperature: float,
                          max_new_tokens) -> tuple:
    """What the reference's sampled answers depend on: its weights, dtype, device and config (the context length
    cuts the prompt), the tokenizer, the prompts, the seeds, the temperature and the token budget (hashes from
    :mod:`ru_rlhf.models.training`'s fingerprints)."""
    from ru_rlhf.models.training import run_fingerprint, tokenizer_fingerprint, weights_fingerprint

    first = next(ref_model.parameters())
    config = getattr(ref_model, "config", None)
    budget = sorted(max_new_tokens.items()) if isinstance(max_new_tokens, dict) else max_new_tokens
    return (weights_fingerprint(ref_model), str(first.dtype), str(first.device),
            run_fingerprint(config=config.to_dict() if config is not None else None), tokenizer_fingerprint(tokenizer),
            run_fingerprint(prompts=prompts, seeds=seeds, temperature=float(temperature), budget=budget))


class _Run:
    """One run's state from step to step: the sampler's RNG, the KL controller, the update (and its baseline),
    the log, and the best state by the evaluation's score with the evaluations since it last improved (``best``)."""

    def __init__(self, cfg: RLConfig, model: PolicyWithValue, opt, acc, evaluate, checkpoint_dir):
        self.cfg, self.model, self.opt, self.acc = cfg, model, opt, acc
        self.rank = acc.process_index if acc else 0
        self.is_main = acc is None or acc.is_main_process
        self.rng = random.Random(cfg.seed + 7919 * self.rank)
        self.kl_ctl = (AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl
                       else FixedKLController(cfg.init_kl_coef))
        self.update = cfg.make_update()
        self.logs: list[dict] = []
        self.norm = (0.0, 1.0)  # the reference normalisation's mean and spread
        self.prompt_mean: dict[str, float] = {}  # reference_per_prompt: each training prompt's reference mean
        self.best = BestState(evaluate, checkpoint_dir, best_max_kl=cfg.best_max_kl, kl_window=cfg.kl_window,
                              patience=cfg.patience, is_main=self.is_main)

    def rollout(self, ref_model, tokenizer, batch: list, reward_fn, step: int, desc: str) -> tuple[Rollout, dict]:
        """The step's rollouts (rewards scaled, or whitened, as configured) and its log row of what they measured."""
        cfg, acc = self.cfg, self.acc
        r = make_rollout(self.model, ref_model, tokenizer, [b.prompt for b in batch], [b.prompt_id for b in batch],
                         reward_fn, seeds=[stable_seed(cfg.seed, step, b.prompt_id, *([self.rank] if self.rank else []))
                                           for b in batch],
                         max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         # not under DDP: the update's backward pass must run through the wrapped model
                         keep_graph=acc is None and self.update.uses_rollout_graph)
        raw_reward = float(r.scores.mean())  # the RM's own scale, before scaling or whitening
        check_finite(desc, step, reward=r.scores, kl=r.kl)
        r.scores = self.shape(r.scores, r.extra["ended"], r.prompt_ids)
        seq_kl = masked_mean(r.kl, r.mask, dim=1)  # per-token KL of each response
        mean_kl = float(seq_kl.mean())
        if acc is not None:  # every rank logs and decides on the mean over all ranks' rollouts
            both = acc.reduce(torch.tensor([raw_reward, mean_kl]), reduction="mean")
            raw_reward, mean_kl = float(both[0]), float(both[1])
        return r, {"step": step, "reward": raw_reward, "kl": mean_kl, "kl_coef": self.kl_ctl.value,
                   "entropy": float(masked_mean(r.entropy, r.mask)), "response_tokens": float(r.mask.sum(1).mean()),
                   "ended_share": float(r.extra["ended"].float().mean()), "shaped_reward": float(r.scores.mean())}

    def fit_reward_norm(self, ref_model, tokenizer, records: list, reward_fn) -> None:
        """Fit the normalisation of ``reward_norm`` on answers of the reference policy, sampled like the rollouts
        (Huang et al. 2024; Ziegler et al. 2019), so a gain reads in the reference's standard deviations:

        * ``reference``: the mean and spread of the reward on ``norm_samples`` answers to training prompts drawn
          at random; every later score is z-scored against them;
        * ``reference_per_prompt``: ``norm_samples`` answers to *every* training prompt; a later score has its
          prompt's reference mean subtracted and is divided by the spread of the reference's scores around their
          prompts' means. What a prompt makes easy or hard (most of the reward's variance across a batch of
          different prompts) is then no longer a signal the update has to average out.
        """
        cfg = self.cfg
        if cfg.reward_norm not in ("reference", "reference_per_prompt"):
            return
        from ru_rlhf.models.generation import generate_batch

        if cfg.reward_norm == "reference":
            rng = random.Random(cfg.seed + 104729)
            batch = [rng.choice(records) for _ in range(cfg.norm_samples)]
        else:
            batch = [r for r in records for _ in range(cfg.norm_samples)]
        prompts = [b.prompt for b in batch]
        seeds = [stable_seed(cfg.seed, "norm", i, b.prompt_id) for i, b in enumerate(batch)]
        key = reference_answers_key(ref_model, tokenizer, prompts, seeds, cfg.temperature, cfg.max_new_tokens)
        cached = _REFERENCE_ANSWERS.get(key)
        if cached is None:
            texts, _ = generate_batch(ref_model, tokenizer, [format_prompt(p) for p in prompts],
                                      temperatures=[cfg.temperature] * len(batch), top_ps=[1.0] * len(batch),
                                      seeds=seeds, max_new_tokens=cfg.max_new_tokens, return_ids=True)
            while len(_REFERENCE_ANSWERS) >= 4:
                _REFERENCE_ANSWERS.pop(next(iter(_REFERENCE_ANSWERS)))
            _REFERENCE_ANSWERS[key] = tuple(texts)
        else:
            texts = list(cached)  # a copy: a reward function that edits its input cannot change the next run's
            log.info("reward normalisation: the %d reference answers of an earlier run in this process reused",
                     len(texts))
        scores = reward_fn(prompts, texts).float()
        if cfg.reward_norm == "reference_per_prompt":
            frame = pd.DataFrame({"prompt_id": [b.prompt_id for b in batch], "score": scores.numpy()})
            self.prompt_mean = frame.groupby("prompt_id")["score"].mean().to_dict()
            resid = torch.tensor((frame["score"] - frame["prompt_id"].map(self.prompt_mean)).to_numpy())
            # the pooled within-prompt standard deviation (one degree of freedom per prompt spent on its mean)
            dof = max(1, len(resid) - len(self.prompt_mean))
            self.norm = (0.0, float((resid.pow(2).sum() / dof).sqrt()))
        else:
            self.norm = (float(scores.mean()), float(scores.std()) if len(scores) > 1 else 1.0)
        if not self.norm[1] > 1e-8:
            raise ValueError(f"reward_norm: {cfg.reward_norm}: the reward of {len(scores)} reference answers does "
                             f"not vary (spread {self.norm[1]:.3g}); use reward_norm: none or batch")
        log.info("reward normalisation (%s) on %d reference answers: mean %.4f, spread %.4f (total std %.4f)",
                 cfg.reward_norm, len(scores), float(scores.mean()), self.norm[1], float(scores.std()))

    def fold_norm_into_critic(self, critic) -> None:
        """Put a value model that starts as the reward model on the scale of the normalised reward it will predict:
        its head's output z-scored like the scores (the reference mean, per prompt: the mean of the prompts' means,
        subtracted; divided by the spread; times ``reward_scale``), so its first values are not off by the
        normalisation's offset."""
        cfg = self.cfg
        if cfg.reward_norm not in ("reference", "reference_per_prompt"):
            return
        centre = (sum(self.prompt_mean.values()) / len(self.prompt_mean) if cfg.reward_norm == "reference_per_prompt"
                  else self.norm[0])
        factor = cfg.reward_scale / self.norm[1]
        with torch.no_grad():
            critic.head.weight.mul_(factor)
            critic.head.bias.sub_(centre).mul_(factor)

    def shape(self, scores: torch.Tensor, ended: torch.Tensor, prompt_ids: list[str] | None = None) -> torch.Tensor:
        """The rollout's sequence rewards: normalised (``reward_norm``), times ``reward_scale``, less
        ``missing_eos_penalty`` for each response that never emitted end-of-sequence (a truncated answer)."""
        cfg = self.cfg
        if cfg.reward_norm == "reference":
            scores = (scores - self.norm[0]) / self.norm[1]
        elif cfg.reward_norm == "reference_per_prompt":
            base = torch.tensor([self.prompt_mean[p] for p in prompt_ids], dtype=scores.dtype, device=scores.device)
            scores = (scores - base) / self.norm[1]
        elif cfg.reward_norm == "batch":
            scores = (scores - scores.mean()) / (scores.std() + 1e-8)
        return scores * cfg.reward_scale - cfg.missing_eos_penalty * (~ended.to(scores.device)).to(scores.dtype)

    def stop_reason(self, row: dict) -> str | None:
        """Why the run stops after this step (patience spent, or the smoothed KL out of its budget), or None."""
        cfg = self.cfg
        if reason := self.best.stop_reason():
            return reason
        if row["kl_smoothed"] > cfg.kl_budget:
            return f"early stop: smoothed KL {row['kl_smoothed']:.4f} left its budget {cfg.kl_budget}"
        return None

    def save(self, resume_dir: Path, fingerprint: str, step: int, seconds: float) -> None:
        """Write the whole training state to ``resume_dir`` atomically (a temporary sibling renamed)."""
        from safetensors.torch import save_file, save_model

        tmp = resume_dir.with_name(resume_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(self.model, str(tmp / "model.safetensors"))  # handles the policy's tied embeddings
        torch.save(self.opt.state_dict(), tmp / "optimizer.pt")  # our own file; loaded with weights_only=True
        if self.best.state is not None:
            save_file({k: v.contiguous() for k, v in self.best.state.items()}, str(tmp / "best.safetensors"))
        meta = {"fingerprint": fingerprint, "step": step, "python_rng": self.rng.getstate(),
                "kl_coef": self.kl_ctl.value, "baseline": self.update.baseline, "norm": list(self.norm),
                "prompt_mean": self.prompt_mean, "bad_evals": self.best.bad_evals,
                "logs": self.logs, "best_score": self.best.score, "best_step": self.best.step, "seconds": seconds}
        (tmp / "state.json").write_text(json.dumps(meta, default=float))
        old = resume_dir.with_name(resume_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if resume_dir.exists():
            resume_dir.rename(old)
        tmp.rename(resume_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, resume_dir: Path, fingerprint: str) -> dict | None:
        """Continue from the state in ``resume_dir`` if it is this run's (same fingerprint): returns its
        ``step`` and ``seconds``; else ``None`` (nothing loaded)."""
        from safetensors.torch import load_file, load_model

        state_file = resume_dir / "state.json"
        if not state_file.exists():
            return None
        meta = json.loads(state_file.read_text())
        if meta.get("fingerprint") != fingerprint:
            log.info("%s holds another run's state (different config, prompts or weights): starting afresh",
                     resume_dir)
            return None
        load_model(self.model, str(resume_dir / "model.safetensors"))
        self.opt.load_state_dict(torch.load(resume_dir / "optimizer.pt", weights_only=True))
        best_state = load_file(str(resume_dir / "best.safetensors")) if (resume_dir / "best.safetensors").exists() \
            else None
        self.rng.setstate(_to_tuple(meta["python_rng"]))
        self.kl_ctl.value, self.update.baseline = meta["kl_coef"], meta["baseline"]
        self.logs = meta["logs"]
        self.norm = tuple(meta.get("norm", (0.0, 1.0)))
        self.prompt_mean = meta.get("prompt_mean", {})
        best = self.best
        best.score, best.step, best.state, best.bad_evals = (float(meta["best_score"]), meta["best_step"], best_state,
                                                             meta["bad_evals"])
        return meta

    def finish(self, resume_dir: Path | None, stop: str, start: float, desc: str):
        """Drop the resume state, load the best policy; returns ``(policy, log, info)``."""
        if resume_dir is not None and self.is_main:
            shutil.rmtree(resume_dir, ignore_errors=True)  # finished: a later run starts afresh
        last_step = self.logs[-1]["step"] if self.logs else 0
        evaluated = self.best.evaluate_fn is not None
        if evaluated and self.best.state is not None:
            self.model.policy.load_state_dict(self.best.state)
        info = {"stop_reason": stop, "steps_run": last_step, "best_step": self.best.step if evaluated else last_step,
                "best_score": self.best.score if evaluated else None,
                "seconds": round(time.perf_counter() - start, 2), "final_kl_coef": self.kl_ctl.value,
                "processes": self.acc.num_processes if self.acc else 1,
                "reward_norm": {"kind": self.cfg.reward_norm, "mean": self.norm[0], "std": self.norm[1]}}
        log.info("%s: %s", desc, info)
        return self.model.policy.eval(), pd.DataFrame(self.logs), info
