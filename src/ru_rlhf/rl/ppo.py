"""PPO for a causal LM against a reward model, our own (TRL 1.x ships no PPO trainer).

Follows InstructGPT / Ziegler et al. (2019):

* rollouts sampled from the policy (temperature 1, no nucleus cut, so the sampled tokens' log-
  probabilities are the policy's own);
* the sequence reward is the multi-head reward model's weighted scalar, added at the last token;
  every token also pays ``−β·(log π − log π_ref)``, a KL penalty to the frozen reference, with
  β set by an adaptive controller aimed at a target KL (:class:`AdaptiveKLController`);
* a value head on the policy's last hidden state; advantages by GAE(γ, λ) (:func:`gae`);
* the clipped policy ratio (:func:`policy_loss`) and a clipped value loss (:func:`value_loss`);
  several minibatch epochs per rollout.

KL is measured per token: the exact KL between the policy's and the reference's next-token
distributions at each response position, averaged over the response's tokens (``kl`` in the logs;
the target 0.02 is in these units). The per-token reward penalty uses the sampled token's log-ratio,
whose expectation is that KL.

The pieces are small pure functions (tested against hand-computed values); :func:`train` wires
them and is shared with REINFORCE (``ru_rlhf.rl.reinforce``), which reuses the rollout and the log.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ru_rlhf.models.generation import _left_pad, generate_batch, stable_seed
from ru_rlhf.models.policy import format_prompt

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pure pieces
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to unit variance over the masked entries (and zero mean if ``shift_mean``)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-aligned responses.

    Args:
        rewards, values, mask: ``[batch, T]``; each row's response occupies the last positions
            (``mask`` is 0 before it), so the step after the last position is terminal (value 0).

    Returns:
        ``(advantages, returns)``, both 0 outside the mask; returns = advantages + values.
    """
    values = values * mask
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate: mean over tokens of max(−A·r, −A·clip(r, 1−ε, 1+ε)), r = π/π_old.

    Returns:
        ``(loss, stats)`` with ``clipfrac`` (share of tokens where the clipped term is the one
        used) and ``approx_kl`` (mean of ½(log r)², the low-variance estimate of KL(π_old‖π)).
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(0.5 * log_ratio ** 2, mask)
    return loss, {"clipfrac": float(clipfrac), "approx_kl": float(approx_kl)}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss: ½·mean max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(init), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    def __init__(self, value: float):
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


# --------------------------------------------------------------------------- model with a value head
class PolicyWithValue(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state (the trunk is shared)."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        first = next(policy.parameters())  # the head lives where the trunk does (CUDA, bf16 on a GPU)
        self.value_head.to(device=first.device, dtype=first.dtype)

    def forward(self, input_ids, attention_mask, keep: int):
        """Logits and values of the last ``keep`` positions."""
        position = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                          output_hidden_states=True, logits_to_keep=keep)
        hidden = out.hidden_states[-1][:, -keep:, :]
        return out.logits[:, -keep:, :], self.value_head(hidden).squeeze(-1)


def response_logits(model, input_ids, attention_mask, keep: int) -> torch.Tensor:
    position = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                 logits_to_keep=keep).logits[:, -keep:, :]


def token_stats(logits: torch.Tensor, targets: torch.Tensor, ref_logits: torch.Tensor | None = None):
    """Log-probabilities of ``targets``, the entropy, and (with ``ref_logits``) the exact KL per position."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    p = logp_all.exp()
    entropy = -(p * logp_all).sum(-1)
    kl = None
    if ref_logits is not None:
        ref_all = torch.log_softmax(ref_logits.float(), dim=-1)
        kl = (p * (logp_all - ref_all)).sum(-1)
    return logp, entropy, kl


# --------------------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """One batch of sampled responses and everything PPO needs about them.

    Tensors over the response block are ``[batch, T]``: position t scores response token t of
    the row's right-aligned response (``mask`` marks real tokens).
    """

    prompts: list[str]
    prompt_ids: list[str]
    responses: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    kl: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    extra: dict = field(default_factory=dict)


def build_sequences(tokenizer, prompts: list[str], response_ids: list[list[int]]):
    """Left-padded prompt+response ids; the response block ``[B, T]`` (targets and mask) at the end."""
    p_ids = tokenizer([format_prompt(p) for p in prompts], add_special_tokens=False)["input_ids"]
    seqs = [a + b for a, b in zip(p_ids, response_ids)]
    ids, attn = _left_pad(seqs, tokenizer.pad_token_id)
    T = max(1, max(len(r) for r in response_ids))
    targets = ids[:, -T:]
    mask = torch.zeros_like(targets, dtype=torch.float32)
    for i, r in enumerate(response_ids):
        if r:
            mask[i, T - len(r):] = 1.0
    return ids, attn, targets, mask, T


@torch.no_grad()
def make_rollout(model: PolicyWithValue, ref_model, tokenizer, prompts: list[str], prompt_ids: list[str],
                 reward_fn: Callable[[list[str], list[str]], torch.Tensor], *, seeds: list[int],
                 max_new_tokens: int) -> Rollout:
    """Sample one response per prompt from the policy and score it (RM, log-probs, KL, values)."""
    texts, resp_ids = generate_batch(model.policy, tokenizer, [format_prompt(p) for p in prompts],
                                     temperatures=[1.0] * len(prompts), top_ps=[1.0] * len(prompts), seeds=seeds,
                                     max_new_tokens=max_new_tokens, return_ids=True)
    resp_ids = [r if r else [tokenizer.eos_token_id] for r in resp_ids]  # an empty response still ends
    ids, attn, targets, mask, T = build_sequences(tokenizer, prompts, resp_ids)
    device = next(model.parameters()).device  # CPU here; CUDA in the hub env on a GPU
    ids, attn, targets, mask = ids.to(device), attn.to(device), targets.to(device), mask.to(device)
    model.eval()
    # logits at position j predict token j+1: the response block's logits start one earlier
    logits, values = model(ids, attn, keep=T + 1)
    ref_logits = response_logits(ref_model, ids, attn, keep=T + 1)
    logp, entropy, kl = token_stats(logits[:, :-1], targets, ref_logits[:, :-1])
    ref_logp, _, _ = token_stats(ref_logits[:, :-1], targets)
    scores = reward_fn(prompts, texts).float().to(device)
    return Rollout(prompts, prompt_ids, texts, ids, attn, targets, mask, logp * mask, ref_logp * mask, kl * mask,
                   entropy * mask, values[:, :-1] * mask, scores)


def token_rewards(r: Rollout, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: −β·(log π − log π_ref) everywhere, plus the RM score at the last token."""
    rewards = -kl_coef * (r.logprobs - r.ref_logprobs) * r.mask
    rewards[:, -1] += r.scores  # responses are right-aligned: the last position is every row's last token
    return rewards


# --------------------------------------------------------------------------- the loop
@dataclass
class RLConfig:
    """Controls shared by PPO and REINFORCE."""

    algorithm: str = "ppo"  # "ppo" or "reinforce"
    steps: int = 200
    batch_size: int = 16
    minibatch_size: int = 8
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    max_new_tokens: int = 48
    gamma: float = 1.0
    lam: float = 0.95
    clip_ratio: float = 0.2
    clip_value: float = 0.2
    vf_coef: float = 0.1
    init_kl_coef: float = 0.1
    target_kl: float | None = 0.02  # None: a fixed coefficient
    kl_horizon: int = 1000
    kl_budget: float = 0.05  # stop when the smoothed rollout KL leaves it
    kl_window: int = 5  # steps in the smoothed (running-mean) KL
    best_max_kl: float | None = 0.02  # a state is eligible as the best only while the smoothed KL is within it
    whiten_rewards: bool = False
    reward_scale: float = 1.0
    baseline_decay: float = 0.9  # REINFORCE's moving-average baseline
    eval_every: int = 10
    patience: int = 6  # evaluations without a better probe score
    max_grad_norm: float = 1.0
    seed: int = 0


def train(policy, ref_model, tokenizer, train_prompts: pd.DataFrame,
          reward_fn: Callable[[list[str], list[str]], torch.Tensor], cfg: RLConfig, *,
          evaluate: Callable[[object], dict] | None = None, checkpoint_dir: str | Path | None = None,
          desc: str = "ppo", progress: bool = True, resume: bool = True):
    """Run PPO (or REINFORCE) for at most ``cfg.steps`` rollouts.

    Args:
        train_prompts: ``prompt_id, prompt`` rows to sample rollouts from.
        reward_fn: ``(prompts, responses) -> tensor`` of sequence rewards (the RM's scalar).
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

    Raises:
        NonFiniteError: a reward, KL or loss that is NaN or inf (names ``desc`` and the step);
            the step's update is not applied to a saved model.

    Returns:
        ``(policy, log, info)``: the best policy (by ``evaluate``'s score; the last one without
        ``evaluate``), the per-step log and a dict with the stop reason and best step.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    model = PolicyWithValue(policy)
    ref_model.eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-6)
    # under `accelerate launch` (WORLD_SIZE > 1): DDP on the policy+value model; each rank samples its
    # own rollouts, gradients are averaged, KL/reward are reduced so every rank decides alike
    acc, train_model = None, model
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        # cpu=True without a GPU: accelerate then runs DDP over gloo (left to itself it finds no GPU and
        # falls back to a single process on every rank)
        acc = Accelerator(cpu=not torch.cuda.is_available(),
                          kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        train_model, opt = acc.prepare(model, opt)
    rank = acc.process_index if acc else 0
    is_main = acc is None or acc.is_main_process
    rng = random.Random(cfg.seed + 7919 * rank)
    kl_ctl = (AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl
              else FixedKLController(cfg.init_kl_coef))
    records = list(train_prompts[["prompt_id", "prompt"]].itertuples(index=False))
    baseline = None
    logs: list[dict] = []
    best = {"score": -math.inf, "step": 0, "state": None}
    bad_evals = 0
    stop = "max_steps"
    start = time.perf_counter()

    def smoothed_kl() -> float:
        recent = [r["kl"] for r in logs[-cfg.kl_window:] if "kl" in r and r["kl"] == r["kl"]]
        return sum(recent) / len(recent) if recent else 0.0

    def run_eval(step: int) -> dict:
        nonlocal bad_evals
        if checkpoint_dir and step > 0 and is_main:  # every evaluated state is kept (the audit scores them all)
            model.policy.save_pretrained(Path(checkpoint_dir) / f"step-{step:04d}")
        res = evaluate(model.policy)
        eligible = cfg.best_max_kl is None or smoothed_kl() <= cfg.best_max_kl
        if eligible and res["score"] > best["score"] + 1e-9:
            best.update(score=res["score"], step=step,
                        state={k: v.detach().clone() for k, v in model.policy.state_dict().items()})
            bad_evals = 0
            if checkpoint_dir and is_main:
                model.policy.save_pretrained(Path(checkpoint_dir) / "best")
        else:
            bad_evals += 1
        return res

    first_step = 1
    resume_dir = Path(checkpoint_dir) / "resume" if checkpoint_dir else None
    fingerprint = None
    if resume_dir is not None:
        from dataclasses import asdict

        from ru_rlhf.models.training import run_fingerprint, weights_fingerprint

        fingerprint = run_fingerprint(cfg=asdict(cfg), prompts=[r.prompt_id for r in records], desc=desc,
                                      weights=weights_fingerprint(policy), evaluate=evaluate is not None)
        saved = _load_resume_state(resume_dir, fingerprint, model, opt) if resume else None
        if saved is not None:
            first_step = saved["step"] + 1
            rng.setstate(_to_tuple(saved["python_rng"]))
            kl_ctl.value, baseline, bad_evals = saved["kl_coef"], saved["baseline"], saved["bad_evals"]
            logs = saved["logs"]
            best.update(score=saved["best_score"], step=saved["best_step"], state=saved.get("best_state"))
            start -= saved["seconds"]
            log.info("%s: resuming at step %d from %s", desc, first_step, resume_dir)
    if evaluate and first_step == 1:
        res = run_eval(0)
        logs.append({"step": 0, "expert_score": res["score"], **{k: v for k, v in res.items() if k != "score"},
                     "seconds": 0.0})
    bar = tqdm(total=cfg.steps, initial=first_step - 1, desc=desc, unit="step", disable=not progress,
               mininterval=2.0)
    for step in range(first_step, cfg.steps + 1):
        batch = rng.sample(records, min(cfg.batch_size, len(records)))
        r = make_rollout(model, ref_model, tokenizer, [b.prompt for b in batch], [b.prompt_id for b in batch],
                         reward_fn, seeds=[stable_seed(cfg.seed, step, b.prompt_id, *([rank] if rank else []))
                                           for b in batch],
                         max_new_tokens=cfg.max_new_tokens)
        raw_reward = float(r.scores.mean())  # the RM's own scale, before scaling or whitening
        _check_finite(desc, step, reward=r.scores, kl=r.kl)
        r.scores = r.scores * cfg.reward_scale
        if cfg.whiten_rewards:
            r.scores = (r.scores - r.scores.mean()) / (r.scores.std() + 1e-8)
        kl_coef = kl_ctl.value
        seq_kl = masked_mean(r.kl, r.mask, dim=1)  # per-token KL of each response
        mean_kl = float(seq_kl.mean())
        if acc is not None:  # every rank logs and decides on the mean over all ranks' rollouts
            both = acc.reduce(torch.tensor([raw_reward, mean_kl]), reduction="mean")
            raw_reward, mean_kl = float(both[0]), float(both[1])
        row = {"step": step, "reward": raw_reward, "kl": mean_kl,
               "kl_coef": kl_coef, "entropy": float(masked_mean(r.entropy, r.mask)),
               "response_tokens": float(r.mask.sum(1).mean())}
        model.train()
        if cfg.algorithm == "ppo":
            row.update(_ppo_update(train_model, opt, r, kl_coef, cfg, acc))
        elif cfg.algorithm == "reinforce":
            baseline, upd = _reinforce_update(train_model, opt, r, kl_coef, baseline, cfg, acc)
            row.update(upd)
        else:
            raise ValueError(f"unknown algorithm {cfg.algorithm!r}")
        _check_finite(desc, step, loss=torch.tensor(row["loss"]))
        kl_ctl.update(row["kl"], cfg.batch_size)
        row["seconds"] = round(time.perf_counter() - start, 2)
        logs.append(row)
        row["kl_smoothed"] = smoothed_kl()
        if evaluate and step % cfg.eval_every == 0:
            res = run_eval(step)
            row["expert_score"] = res["score"]
            row.update({k: v for k, v in res.items() if k != "score"})
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.4f}")
        if evaluate and bad_evals >= cfg.patience:
            stop = f"early stop: no better probe score in {cfg.patience} evaluations"
            break
        if row["kl_smoothed"] > cfg.kl_budget:
            stop = f"early stop: smoothed KL {row['kl_smoothed']:.4f} left its budget {cfg.kl_budget}"
            break
        if resume_dir is not None and is_main and step % cfg.eval_every == 0 and step < cfg.steps:
            _save_resume_state(resume_dir, fingerprint, step, model, opt, rng, kl_ctl.value, baseline, bad_evals,
                               logs, best, time.perf_counter() - start)
    bar.close()
    if resume_dir is not None and is_main:
        import shutil

        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: a later run starts afresh
    last_step = logs[-1]["step"] if logs else 0
    if evaluate and best["state"] is not None:
        model.policy.load_state_dict(best["state"])
    info = {"stop_reason": stop, "steps_run": last_step, "best_step": best["step"] if evaluate else last_step,
            "best_score": best["score"] if evaluate else None, "seconds": round(time.perf_counter() - start, 2),
            "final_kl_coef": kl_ctl.value, "processes": acc.num_processes if acc else 1}
    log.info("%s: %s", desc, info)
    return model.policy.eval(), pd.DataFrame(logs), info


class NonFiniteError(FloatingPointError):
    """A NaN or inf in a reward, KL or loss: the run stops at that step with nothing saved."""


def _check_finite(desc: str, step: int, **values: torch.Tensor) -> None:
    for name, value in values.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise NonFiniteError(f"{desc}: {name} is not finite (NaN or inf) at step {step}; the run stopped "
                                 "and no model of this step was saved")


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def _save_resume_state(resume_dir: Path, fingerprint: str, step: int, model: PolicyWithValue, opt, rng,
                       kl_coef: float, baseline, bad_evals: int, logs: list[dict], best: dict,
                       seconds: float) -> None:
    """Write the whole training state to ``resume_dir`` atomically (a temporary sibling renamed)."""
    import json
    import shutil

    from safetensors.torch import save_file, save_model

    tmp = resume_dir.with_name(resume_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles the policy's tied embeddings
    torch.save(opt.state_dict(), tmp / "optimizer.pt")  # our own file; loaded with weights_only=True
    if best["state"] is not None:
        save_file({k: v.contiguous() for k, v in best["state"].items()}, str(tmp / "best.safetensors"))
    meta = {"fingerprint": fingerprint, "step": step, "python_rng": rng.getstate(), "kl_coef": kl_coef,
            "baseline": baseline, "bad_evals": bad_evals, "logs": logs, "best_score": best["score"],
            "best_step": best["step"], "seconds": seconds}
    (tmp / "state.json").write_text(json.dumps(meta, default=float))
    old = resume_dir.with_name(resume_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if resume_dir.exists():
        resume_dir.rename(old)
    tmp.rename(resume_dir)
    shutil.rmtree(old, ignore_errors=True)


def _load_resume_state(resume_dir: Path, fingerprint: str, model: PolicyWithValue, opt) -> dict | None:
    """The saved state if ``resume_dir`` holds one of this run (same fingerprint); else ``None``."""
    import json

    from safetensors.torch import load_file, load_model

    state_file = resume_dir / "state.json"
    if not state_file.exists():
        return None
    meta = json.loads(state_file.read_text())
    if meta.get("fingerprint") != fingerprint:
        log.info("%s holds another run's state (different config, prompts or weights): starting afresh",
                 resume_dir)
        return None
    load_model(model, str(resume_dir / "model.safetensors"))
    opt.load_state_dict(torch.load(resume_dir / "optimizer.pt", weights_only=True))
    if (resume_dir / "best.safetensors").exists():
        meta["best_state"] = load_file(str(resume_dir / "best.safetensors"))
    meta["best_score"] = float(meta["best_score"])
    return meta


def _backward(loss: torch.Tensor, acc) -> None:
    acc.backward(loss) if acc is not None else loss.backward()


def _forward_stats(model: PolicyWithValue, ref_r: Rollout, idx: torch.Tensor):
    T = ref_r.targets.shape[1]
    logits, values = model(ref_r.input_ids[idx], ref_r.attention_mask[idx], keep=T + 1)
    logp, entropy, _ = token_stats(logits[:, :-1], ref_r.targets[idx])
    return logp, entropy, values[:, :-1]


def _ppo_update(model: PolicyWithValue, opt, r: Rollout, kl_coef: float, cfg: RLConfig, acc=None) -> dict:
    rewards = token_rewards(r, kl_coef)
    adv, returns = gae(rewards, r.values, r.mask, cfg.gamma, cfg.lam)
    adv_var = float(masked_var(adv, r.mask))
    adv = whiten(adv, r.mask)
    n = len(r.responses)
    stats = {"loss": [], "policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": []}
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.ppo_epochs):
        for idx in torch.randperm(n, generator=g).split(cfg.minibatch_size):
            m = r.mask[idx]
            logp, _, values = _forward_stats(model, r, idx)
            pg, st = policy_loss(logp, r.logprobs[idx], adv[idx], m, cfg.clip_ratio)
            vf = value_loss(values, r.values[idx], returns[idx], m, cfg.clip_value)
            loss = pg + cfg.vf_coef * vf
            opt.zero_grad()
            _backward(loss, acc)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            for k, v in (("loss", loss.item()), ("policy_loss", pg.item()), ("value_loss", vf.item()),
                         ("clipfrac", st["clipfrac"]), ("approx_kl", st["approx_kl"])):
                stats[k].append(v)
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out["advantage_var"] = adv_var
    return out


def _reinforce_update(model: PolicyWithValue, opt, r: Rollout, kl_coef: float, baseline: float | None,
                      cfg: RLConfig, acc=None) -> tuple[float, dict]:
    """One REINFORCE step: −(R − b)·Σ log π over each response, R = score − β·Σ(log π − log π_ref).

    b is a moving average of the batch's mean return (the HelpSteer2 notebook's baseline, batched).
    """
    seq_kl = ((r.logprobs - r.ref_logprobs) * r.mask).sum(1)
    ret = r.scores - kl_coef * seq_kl
    b = float(ret.mean()) if baseline is None else baseline
    adv = ret - b
    idx = torch.arange(len(r.responses))
    logp, _, _ = _forward_stats(model, r, idx)
    loss = -(adv.detach() * (logp * r.mask).sum(1)).mean() / max(1.0, float(r.mask.sum(1).mean()))
    opt.zero_grad()
    _backward(loss, acc)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    opt.step()
    with torch.no_grad():
        log_ratio = (logp - r.logprobs) * r.mask
        approx_kl = float(masked_mean(0.5 * log_ratio ** 2, r.mask))
    baseline = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(ret.mean())
    return baseline, {"loss": loss.item(), "policy_loss": loss.item(), "value_loss": float("nan"),
                      "clipfrac": 0.0, "approx_kl": approx_kl, "advantage_var": float(adv.var()),
                      "baseline": b}


__all__ = ["AdaptiveKLController", "FixedKLController", "PolicyWithValue", "RLConfig", "Rollout", "gae",
           "make_rollout", "masked_mean", "policy_loss", "token_rewards", "train", "value_loss", "whiten"]
