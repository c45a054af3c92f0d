"""Reward models: an encoder with a multi-head (H, T, S) or a distributional head.

* ``multi_head``: a linear head with one output per criterion, trained with a Bradley–Terry
  loss per criterion on that criterion's pairs (the other heads masked).
* ``distributional``: per criterion a softmax over ``n_bins`` rating bins, trained on
  −log P(chosen ≻ rejected) with P = Σ_{i>j} p_chosen[i]·p_rejected[j] (the HelpSteer2
  notebook's loss); the head's reward is the expected bin.

Both expose the per-head scores and the scalar reward, a weighted sum of the heads whose
weights are a parameter (the trade-off knob). The heads are z-scored before they are weighted
(mean and spread fitted on training responses, :func:`fit_normalisation`): trained apart, the
heads end up on different scales (harmlessness spread 3.4 against 0.9 on the base run), and an
unnormalised sum is then the loudest head, whatever the weights say. Saved as the encoder's ``save_pretrained``
(safetensors) plus ``head.safetensors`` and ``reward_config.json`` (head names, weights, kind).
The training loop is our own (TRL's RewardTrainer has one scalar head and no masking per
criterion); it is plain PyTorch with a progress bar, a loss table and checkpoints, and under
``accelerate launch`` (``WORLD_SIZE > 1``) it runs DDP through ``accelerate.Accelerator``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

HEADS = ("helpfulness", "truthfulness", "harmlessness")


class RewardModel(nn.Module):
    """An encoder, mean-pooled, with a linear head (``multi_head`` or ``distributional``)."""

    def __init__(self, encoder, heads: tuple[str, ...] = HEADS, kind: str = "multi_head", n_bins: int = 10,
                 weights: dict[str, float] | None = None):
        super().__init__()
        if kind not in ("multi_head", "distributional"):
            raise ValueError(f"unknown reward model kind {kind!r}")
        self.encoder, self.heads, self.kind, self.n_bins = encoder, tuple(heads), kind, n_bins
        self.weights = dict(weights or {h: 1 / len(heads) for h in heads})
        self.norm_mean = {h: 0.0 for h in self.heads}  # per-head centre and spread for the scalar
        self.norm_std = {h: 1.0 for h in self.heads}
        width = len(heads) * (n_bins if kind == "distributional" else 1)
        self.head = nn.Linear(encoder.config.hidden_size, width)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the last hidden states over real tokens."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``scores``: [batch, heads]; for the distributional kind also ``probs``: [batch, heads, bins]."""
        out = self.head(self.pooled(input_ids, attention_mask))
        if self.kind == "multi_head":
            return {"scores": out}
        probs = out.view(out.shape[0], len(self.heads), self.n_bins).softmax(-1)
        bins = torch.arange(1, self.n_bins + 1, dtype=probs.dtype, device=probs.device)
        return {"scores": (probs * bins).sum(-1), "probs": probs}

    def scalar(self, scores: torch.Tensor, weights: dict[str, float] | None = None) -> torch.Tensor:
        """The weighted sum of the z-scored head scores (weights default to the model's own)."""
        w = weights or self.weights
        vec = torch.tensor([w.get(h, 0.0) for h in self.heads], dtype=scores.dtype, device=scores.device)
        mean = torch.tensor([self.norm_mean[h] for h in self.heads], dtype=scores.dtype, device=scores.device)
        std = torch.tensor([self.norm_std[h] for h in self.heads], dtype=scores.dtype, device=scores.device)
        return ((scores - mean) / std) @ vec

    def save_pretrained(self, path: str | Path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path / "encoder")
        if tokenizer is not None:
            tokenizer.save_pretrained(path / "encoder")
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(path / "head.safetensors"))
        (path / "reward_config.json").write_text(json.dumps(
            {"kind": self.kind, "heads": list(self.heads), "weights": self.weights, "n_bins": self.n_bins,
             "norm_mean": self.norm_mean, "norm_std": self.norm_std}, indent=2), encoding="utf-8")


def load_reward_model(path: str | Path) -> tuple[RewardModel, object]:
    """Load a saved reward model and its tokenizer (safetensors only)."""
    from safetensors.torch import load_file

    from ru_rlhf.models.encoder import load_encoder, load_encoder_tokenizer
    from ru_rlhf.models.policy import ModelLoadError

    path = Path(path)
    if not (path / "reward_config.json").exists() or not (path / "head.safetensors").exists():
        raise ModelLoadError(f"{path}: not a saved reward model (needs reward_config.json and head.safetensors)")
    cfg = json.loads((path / "reward_config.json").read_text(encoding="utf-8"))
    rm = RewardModel(load_encoder(path / "encoder"), tuple(cfg["heads"]), cfg["kind"], cfg["n_bins"], cfg["weights"])
    rm.head.load_state_dict(load_file(str(path / "head.safetensors")))
    rm.norm_mean.update(cfg.get("norm_mean", {}))
    rm.norm_std.update(cfg.get("norm_std", {}))
    return rm.eval(), load_encoder_tokenizer(path / "encoder")


# --------------------------------------------------------------------------- losses
def bradley_terry_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor, head_index: torch.Tensor) -> torch.Tensor:
    """−log σ(r_c(chosen) − r_c(rejected)), each pair on its own criterion's head c (others masked)."""
    idx = head_index.unsqueeze(-1)
    diff = s_chosen.gather(-1, idx).squeeze(-1) - s_rejected.gather(-1, idx).squeeze(-1)
    return -F.logsigmoid(diff).mean()


def preference_probability(p_chosen: torch.Tensor, p_rejected: torch.Tensor) -> torch.Tensor:
    """P(chosen ≻ rejected) = Σ_{i>j} p_chosen[i] · p_rejected[j] over the last (bin) dimension."""
    below = torch.cumsum(p_rejected, dim=-1) - p_rejected  # Σ_{j<i} p_rejected[j]
    return (p_chosen * below).sum(-1)


def distributional_loss(p_chosen: torch.Tensor, p_rejected: torch.Tensor, head_index: torch.Tensor) -> torch.Tensor:
    """−log P(chosen ≻ rejected) on each pair's own criterion (probs: [batch, heads, bins])."""
    idx = head_index.view(-1, 1, 1).expand(-1, 1, p_chosen.shape[-1])
    pc, pr = p_chosen.gather(1, idx).squeeze(1), p_rejected.gather(1, idx).squeeze(1)
    return -torch.log(preference_probability(pc, pr).clamp_min(1e-8)).mean()


# --------------------------------------------------------------------------- scoring
def encode(tokenizer, prompts: list[str], responses: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Encode (prompt, response) pairs; the prompt is cut (from the left) before the response."""
    return tokenizer(prompts, responses, truncation="only_first", max_length=max_length, padding=True,
                     return_tensors="pt")


@torch.no_grad()
def score(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 64,
          max_length: int = 256, weights: dict[str, float] | None = None, pooled: bool = False) -> pd.DataFrame:
    """Per-head scores and the scalar reward of each (prompt, response); optionally the pooled states."""
    rm.eval()
    rows, states = [], []
    for b in range(0, len(prompts), batch_size):
        enc = encode(tokenizer, prompts[b:b + batch_size], responses[b:b + batch_size], max_length)
        if pooled:
            h = rm.pooled(enc["input_ids"], enc["attention_mask"])
            states.append(h)
            out = rm.head(h)
            s = out if rm.kind == "multi_head" else (
                out.view(len(h), len(rm.heads), rm.n_bins).softmax(-1)
                * torch.arange(1, rm.n_bins + 1, dtype=out.dtype)).sum(-1)
        else:
            s = rm(enc["input_ids"], enc["attention_mask"])["scores"]
        rows.append(torch.cat([s, rm.scalar(s, weights).unsqueeze(-1)], dim=-1))
    data = torch.cat(rows).numpy() if rows else []
    df = pd.DataFrame(data, columns=[*rm.heads, "scalar"])
    if pooled:
        df.attrs["pooled"] = torch.cat(states).numpy() if states else None
    return df


def score_prompts(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str], **kwargs) -> pd.DataFrame:
    """:func:`score` for prompts as the tasks state them: formatted the way the reward model was
    trained (``ru_rlhf.models.policy.format_prompt``)."""
    from ru_rlhf.models.policy import format_prompt

    return score(rm, tokenizer, [format_prompt(p) for p in prompts], responses, **kwargs)


def fit_normalisation(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str],
                      max_length: int = 256) -> dict:
    """Set the per-head centre and spread of the scalar from raw head scores of these responses
    (model-formatted prompts); returns them."""
    rm.norm_mean, rm.norm_std = {h: 0.0 for h in rm.heads}, {h: 1.0 for h in rm.heads}
    raw = score(rm, tokenizer, prompts, responses, max_length=max_length)
    rm.norm_mean = {h: round(float(raw[h].mean()), 6) for h in rm.heads}
    rm.norm_std = {h: round(max(float(raw[h].std(ddof=0)), 1e-6), 6) for h in rm.heads}
    return {"mean": rm.norm_mean, "std": rm.norm_std, "responses": len(responses)}


# --------------------------------------------------------------------------- training
def _accelerator():
    """An ``accelerate.Accelerator`` under ``accelerate launch`` with several processes, else None.

    ``cpu=True`` without a GPU: accelerate then runs DDP over gloo (left to itself it finds no GPU
    and runs every rank as a separate single process). ``find_unused_parameters``: the encoder's
    pooler (and, for one criterion's batch, nothing else) gets no gradient.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator, DistributedDataParallelKwargs

    return Accelerator(cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def train_reward_model(rm: RewardModel, tokenizer, pairs: pd.DataFrame, *, epochs: float = 2.0, batch_size: int = 32,
                       learning_rate: float = 2e-4, max_length: int = 256, seed: int = 0,
                       checkpoint_dir: str | Path | None = None, save_steps: int = 500,
                       desc: str = "reward model") -> tuple[RewardModel, pd.DataFrame]:
    """Train on ``pairs`` (``prompt, chosen, rejected, criterion``), each pair on its criterion's head.

    Under ``accelerate launch`` with N processes every rank draws the same shuffled order (same
    seed) and takes every N-th pair of each global batch of ``batch_size``; DDP averages the
    gradients, so a step sees the same global batch as one process would. Loss and accuracy are
    averaged over ranks before they are logged or checked, so every rank logs and stops alike;
    only rank 0 writes checkpoints.

    Returns:
        ``(model, log)``: one log row per step with ``step, epoch, loss, accuracy`` (share of the
        batch where the chosen response scored higher on its head).

    Raises:
        FloatingPointError: a NaN or infinite loss (names the step); nothing is saved then.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    head_of = {h: i for i, h in enumerate(rm.heads)}
    data = pairs[pairs["criterion"].isin(head_of)].reset_index(drop=True)
    order = list(range(len(data)))
    steps_per_epoch = math.ceil(len(data) / batch_size)
    total = max(1, int(steps_per_epoch * epochs))
    opt = torch.optim.AdamW(rm.parameters(), lr=learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * max(0.0, 1 - s / total))
    acc = _accelerator()
    train_model = rm
    if acc is not None:  # the scheduler stays on the raw optimizer: stepped once per global step
        train_model, opt = acc.prepare(rm, opt)
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    device = next(rm.parameters()).device
    rng = random.Random(seed)
    logs = []
    step = 0
    bar = tqdm(total=total, desc=desc, unit="step", mininterval=2.0, disable=rank > 0)
    while step < total:
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            if step >= total:
                break
            batch = order[b:b + batch_size]
            if len(batch) < world:  # a tail too short to give every rank a pair (only with several ranks)
                continue
            rows = data.iloc[batch[rank::world]]
            n = len(rows)
            enc = encode(tokenizer, list(rows["prompt"]) * 2, list(rows["chosen"]) + list(rows["rejected"]),
                         max_length).to(device)
            train_model.train()
            out = train_model(enc["input_ids"], enc["attention_mask"])
            idx = torch.tensor([head_of[c] for c in rows["criterion"]], device=device)
            if rm.kind == "multi_head":
                loss = bradley_terry_loss(out["scores"][:n], out["scores"][n:], idx)
            else:
                loss = distributional_loss(out["probs"][:n], out["probs"][n:], idx)
            with torch.no_grad():
                s = out["scores"].detach()
                batch_acc = (s[:n].gather(-1, idx.unsqueeze(-1)) > s[n:].gather(-1, idx.unsqueeze(-1))).float().mean()
                shown = torch.stack([loss.detach(), batch_acc])
                if acc is not None:  # every rank logs and checks the mean over all ranks
                    shown = acc.reduce(shown, reduction="mean")
            if not torch.isfinite(shown[0]):
                raise FloatingPointError(f"{desc}: loss is {shown[0].item()} at step {step}; nothing was saved")
            if acc is not None:
                acc.backward(loss)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            logs.append({"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": float(shown[0]),
                         "accuracy": float(shown[1]), "learning_rate": sched.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{float(shown[0]):.3f}")
            if checkpoint_dir and step % save_steps == 0 and rank == 0:
                rm.save_pretrained(Path(checkpoint_dir) / f"checkpoint-{step}", tokenizer)
    bar.close()
    if acc is not None:
        acc.wait_for_everyone()
    return rm.eval(), pd.DataFrame(logs)
