"""Training loops shared by the pipelines that fine-tune a causal LM with TRL's SFTTrainer."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def trl_common_args(seed: int, output_dir: str | Path) -> dict:
    """TRL/Trainer arguments every CPU run needs: no bf16, CPU, no reporting, seeded, no workers."""
    return {
        "output_dir": str(output_dir), "use_cpu": True, "bf16": False, "fp16": False, "report_to": "none",
        "seed": seed, "data_seed": seed, "dataloader_num_workers": 0, "gradient_checkpointing": False,
        "disable_tqdm": False,
    }


def history_table(log_history: list[dict], stage: str) -> pd.DataFrame:
    """Trainer's ``log_history`` as a table, one row per logged training step."""
    rows = [{"stage": stage, **h} for h in log_history if "loss" in h]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["stage", "step", "loss"])
    keep = [c for c in ("stage", "step", "epoch", "loss", "learning_rate", "grad_norm", "mean_token_accuracy",
                        "num_tokens", "entropy") if c in df.columns]
    return df[keep].reset_index(drop=True)


def run_sft_trainer(model, tokenizer, dataset, stage_params, *, seed: int, output_dir: str | Path,
                    stage: str) -> tuple[Any, pd.DataFrame]:
    """Train ``model`` with TRL's SFTTrainer on a ``text`` or ``prompt``/``completion`` dataset.

    Loss is on the completion only for prompt/completion data (TRL's default for that format),
    on every token for plain text. Checkpoints go to ``output_dir`` every ``save_steps``.

    Returns:
        ``(model, history)``: the trained model and its per-step loss table.
    """
    from trl import SFTConfig, SFTTrainer

    s = stage_params
    cfg = SFTConfig(
        **trl_common_args(seed, output_dir),
        num_train_epochs=s.epochs, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler, warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay,
        logging_steps=s.logging_steps, save_strategy="steps", save_steps=s.save_steps,
        save_total_limit=s.save_total_limit, max_length=s.max_length, eval_strategy="no",
        train_sampling_strategy="group_by_length" if s.group_by_length else "random",
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    log.info("%s: %d steps, final train loss %.4f, %.1f s", stage, result.global_step, result.training_loss,
             result.metrics.get("train_runtime", float("nan")))
    return trainer.model, history_table(trainer.state.log_history, stage)


def run_dpo_trainer(model, ref_model, tokenizer, dataset, *, beta: float, loss_type: str, epochs: float,
                    batch_size: int, learning_rate: float, max_length: int, seed: int, output_dir: str | Path,
                    max_steps: int = -1, logging_steps: int = 5, stage: str = "dpo") -> tuple[Any, pd.DataFrame]:
    """Train ``model`` with TRL's DPOTrainer (``loss_type`` ``sigmoid`` for DPO, ``ipo`` for IPO; β is τ
    for IPO) on a ``prompt / chosen / rejected`` dataset against the frozen ``ref_model``.

    Returns:
        ``(model, history)``: the trained model and its per-step table (loss, rewards/margins…).
    """
    from trl import DPOConfig, DPOTrainer

    total = max_steps if max_steps > 0 else math.ceil(len(dataset) / batch_size * epochs)
    logging_steps = max(1, min(logging_steps, total // 2))  # a short run still logs its loss
    cfg = DPOConfig(
        **trl_common_args(seed, output_dir), beta=beta, loss_type=[loss_type], num_train_epochs=epochs,
        max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        lr_scheduler_type="linear", warmup_steps=0.1, logging_steps=logging_steps, save_strategy="no",
        max_length=max_length, eval_strategy="no",
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=cfg, train_dataset=dataset,
                         processing_class=tokenizer)
    result = trainer.train()
    log.info("%s (β=%s): %d steps, final loss %.4f", stage, beta, result.global_step, result.training_loss)
    hist = pd.DataFrame([{"stage": stage, **h} for h in trainer.state.log_history if "loss" in h])
    return trainer.model, hist
