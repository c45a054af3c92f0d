"""Training loops shared by the pipelines that fine-tune a causal LM with TRL's SFTTrainer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from ru_rlhf.params import Params

log = logging.getLogger(__name__)


class StageParams(Params):
    """One training stage run through TRL's SFTTrainer (:func:`run_sft_trainer`): pre-training, reading, SFT, and
    the SFT steps of Chain of Hindsight and CEM."""

    max_steps: int = Field(-1, ge=-1)  # stop after this many optimiser steps (-1: run all epochs)
    lr_scheduler: str = "cosine"
    lr_scheduler_kwargs: dict = Field(default_factory=dict)  # passed to the scheduler (e.g. decay_type)
    # warmup_stable_decay: the share of all steps spent decaying (when num_decay_steps is not given)
    lr_decay_share: float = Field(0.25, ge=0, le=1)
    group_by_length: bool = True  # batches of similar length pad less
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(512, gt=16)
    logging_steps: int = Field(10, gt=0)
    save_steps: int = Field(200, gt=0)
    save_total_limit: int = Field(2, gt=0)


def trl_common_args(seed: int, output_dir: str | Path) -> dict:
    """TRL/Trainer arguments of every run: seeded, no reporting, no workers; on CPU (no GPU here)
    ``use_cpu`` and no bf16 (TRL's defaults would ask for both); on a GPU, bf16 where it is supported."""
    import torch

    gpu = torch.cuda.is_available()
    bf16 = gpu and torch.cuda.is_bf16_supported()
    return {
        "output_dir": str(output_dir), "use_cpu": not gpu, "bf16": bf16, "fp16": False, "report_to": "none",
        "seed": seed, "data_seed": seed, "dataloader_num_workers": 0, "gradient_checkpointing": False,
        "disable_tqdm": False,
        "logging_nan_inf_filter": False,  # a NaN loss must reach the log (and finite_loss_callback), not be hidden
    }


@contextlib.contextmanager
def labelled_positions_only():
    """Make TRL's fused LM head score only the positions that carry a label, on every device.

    TRL (1.16) projects hidden states through the LM head in tiles and, on Triton devices
    (CUDA/XPU), only at positions whose label is not -100; everywhere else it scores *every*
    position (to keep tile shapes fixed for compilers such as Neuron's) and masks afterwards.
    On CPU that projects each prompt token through the vocabulary and computes its entropy for
    nothing. Inside this context TRL's own compacting path is taken on CPU too; the tiles are
    still folded by TRL's torch code, and the loss is the same (a reading-stage run of 60 steps:
    train loss 4.323 vs 4.324, 0.53 → 0.24 s per step). Written here, not in TRL, because TRL
    exposes no switch for it; the patched name is private, so TRL is pinned.
    """
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


FINGERPRINT_FILE = "run_fingerprint.json"


def run_fingerprint(**parts: Any) -> str:
    """A short hash of everything that decides a training run (config, seed, data)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_fingerprint(dataset) -> str:
    """A data fingerprint: the ``datasets`` one where it has it, else a hash of the rows."""
    fp = getattr(dataset, "_fingerprint", None)
    if fp:
        return str(fp)
    return run_fingerprint(rows=[dict(r) for r in dataset])


def weights_fingerprint(model) -> str:
    """A hash of a model's starting weights (a resumed run must start from the same model)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what a tokenizer encodes and decodes with: its vocabulary and its special tokens."""
    return run_fingerprint(vocab=sorted(tokenizer.get_vocab().items()), eos=tokenizer.eos_token_id,
                           pad=tokenizer.pad_token_id, bos=tokenizer.bos_token_id,
                           max_length=getattr(tokenizer, "model_max_length", None))


def resume_checkpoint(output_dir: str | Path, fingerprint: str) -> str | None:
    """The last Trainer checkpoint under ``output_dir`` if the same run wrote it, else ``None``.

    A run records its fingerprint beside its checkpoints; a later run with the same fingerprint
    (a killed run started again) resumes from the newest ``checkpoint-N``; checkpoints of a
    different run (other config or data) are removed so that they can never be resumed by
    mistake. The fingerprint is then (re)written for this run.
    """
    import os

    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    marker = out / FINGERPRINT_FILE
    last = None
    if int(os.environ.get("RANK", "0")) > 0:  # under accelerate launch only rank 0 manages the directory
        old = json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
        return get_last_checkpoint(str(out)) if old == fingerprint and out.is_dir() else None
    if out.is_dir():
        old = json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
        if old == fingerprint:
            last = get_last_checkpoint(str(out))
        else:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))
    if last:
        log.info("resuming from %s (a killed run with the same config and data)", last)
    return last


def finished_state(checkpoint: str | None) -> dict | None:
    """The Trainer state saved in ``checkpoint`` if that run had finished (its last step), else ``None``.

    Resuming a finished run through ``Trainer.train(resume_from_checkpoint=...)`` is not a no-op in
    transformers 5.23: it trains one step more (measured: 3 of 3 steps done → 4 after "resuming"), so
    a finished run is not resumed but loaded, weights and log, exactly as it ended.
    """
    if not checkpoint:
        return None
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return state if state.get("max_steps") and state.get("global_step", 0) >= state["max_steps"] else None


def _load_finished(model, checkpoint: str, stage: str):
    from ru_rlhf.models.policy import load_policy

    log.info("%s: %s holds this run's finished state (same config, data and starting weights): loaded, not retrained",
             stage, checkpoint)
    return load_policy(checkpoint).to(device=model.device, dtype=model.dtype)


class NonFiniteLossError(FloatingPointError):
    """A loss that became NaN or inf: the run stops before the broken model is saved."""


def finite_loss_callback(stage: str):
    """A Trainer callback that stops training with a clear error when a logged loss is not finite."""
    from transformers import TrainerCallback

    class _FiniteLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "train_loss"):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(float(value)):
                    raise NonFiniteLossError(f"{stage}: {key} is {value} at step {state.global_step}; "
                                             "stopped, nothing was saved")

    return _FiniteLoss()


def history_table(log_history: list[dict], stage: str) -> pd.DataFrame:
    """Trainer's ``log_history`` as a table, one row per logged training step."""
    rows = [{"stage": stage, **h} for h in log_history if "loss" in h]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["stage", "step", "loss"])
    keep = [c for c in ("stage", "step", "epoch", "loss", "learning_rate", "grad_norm", "mean_token_accuracy",
                        "num_tokens", "entropy") if c in df.columns]
    return df[keep].reset_index(drop=True)


def stage_steps(stage_params: StageParams, n_rows: int) -> int:
    """The optimiser steps a stage takes on ``n_rows`` examples: ``max_steps`` when set, else its epochs' batches."""
    s = stage_params
    return s.max_steps if s.max_steps > 0 else math.ceil(n_rows / s.batch_size * s.epochs)


def _scheduler_kwargs(stage_params: StageParams, n_rows: int) -> dict:
    """The scheduler's keyword arguments; for ``warmup_stable_decay`` the decay length comes from
    ``lr_decay_share`` of all steps unless ``num_decay_steps`` is given (so it scales with the run)."""
    s = stage_params
    kwargs = dict(s.lr_scheduler_kwargs)
    if s.lr_scheduler == "warmup_stable_decay" and "num_decay_steps" not in kwargs:
        kwargs["num_decay_steps"] = max(1, round(s.lr_decay_share * stage_steps(s, n_rows)))
    return kwargs


def run_sft_trainer(model, tokenizer, dataset, stage_params: StageParams, *, seed: int, output_dir: str | Path,
                    stage: str, resume: bool = True) -> tuple[Any, pd.DataFrame]:
    """Train ``model`` with TRL's SFTTrainer on a ``text`` or ``prompt``/``completion`` dataset.

    Loss is on the completion only for prompt/completion data (TRL's default for that format),
    on every token for plain text. Checkpoints go to ``output_dir`` every ``save_steps``; with
    ``resume``, a run killed mid-way continues from its last checkpoint (same config and data only,
    see :func:`resume_checkpoint`). A non-finite loss stops the run (:class:`NonFiniteLossError`).

    Returns:
        ``(model, history)``: the trained model and its per-step loss table.
    """
    from trl import SFTConfig, SFTTrainer

    s = stage_params
    cfg = SFTConfig(
        **trl_common_args(seed, output_dir),
        num_train_epochs=s.epochs, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler, lr_scheduler_kwargs=_scheduler_kwargs(s, len(dataset)),
        warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay,
        logging_steps=s.logging_steps, save_strategy="steps", save_steps=s.save_steps,
        save_total_limit=s.save_total_limit, max_length=s.max_length, eval_strategy="no",
        train_sampling_strategy="group_by_length" if s.group_by_length else "random",
        # TRL tokenizes one example at a time: a large dataset in two processes (the reading stage's
        # 29 784 questions: 20 s -> 13-15 s before the first step; the same ids, checked)
        dataset_num_proc=min(2, os.cpu_count() or 1) if len(dataset) >= 10_000 else None,
    )
    params = s.model_dump() if hasattr(s, "model_dump") else dict(vars(s))
    fp = run_fingerprint(stage=stage, params=params, seed=seed, data=dataset_fingerprint(dataset),
                         weights=weights_fingerprint(model), n=len(dataset))
    ckpt = resume_checkpoint(output_dir, fp) if resume else None
    done = finished_state(ckpt)
    if done is not None:
        return _load_finished(model, ckpt, stage), history_table(done["log_history"], stage)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[finite_loss_callback(stage)])
    with labelled_positions_only():
        result = trainer.train(resume_from_checkpoint=ckpt)
    log.info("%s: %d steps, final train loss %.4f, %.1f s", stage, result.global_step, result.training_loss,
             result.metrics.get("train_runtime", float("nan")))
    return trainer.model, history_table(trainer.state.log_history, stage)


def run_dpo_trainer(model, ref_model, tokenizer, dataset, *, beta: float, loss_type: str, epochs: float,
                    batch_size: int, learning_rate: float, max_length: int, seed: int, output_dir: str | Path,
                    max_steps: int = -1, logging_steps: int = 5, stage: str = "dpo", save_steps: int = 20,
                    resume: bool = True, precompute_ref: bool = True) -> tuple[Any, pd.DataFrame]:
    """Train ``model`` with TRL's DPOTrainer (``loss_type`` ``sigmoid`` for DPO, ``ipo`` for IPO; β is τ
    for IPO) on a ``prompt / chosen / rejected`` dataset against the frozen ``ref_model``.
    Checkpoints every ``save_steps`` (the last two kept); ``resume`` as in :func:`run_sft_trainer`.
    ``precompute_ref``: the reference's log-probabilities computed once and cached (TRL's
    ``precompute_ref_log_probs``), shared by every call on the same pairs and reference.

    Returns:
        ``(model, history)``: the trained model and its per-step table (loss, rewards/margins…).
    """
    from trl import DPOConfig

    total = max_steps if max_steps > 0 else math.ceil(len(dataset) / batch_size * epochs)
    logging_steps = max(1, min(logging_steps, total // 2))  # a short run still logs its loss
    cfg = DPOConfig(
        **trl_common_args(seed, output_dir), beta=beta, loss_type=[loss_type], num_train_epochs=epochs,
        max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        lr_scheduler_type="linear", warmup_steps=0.1, logging_steps=logging_steps, save_strategy="steps",
        save_steps=save_steps, save_total_limit=2, max_length=max_length, eval_strategy="no",
        # the frozen reference's log-probabilities once, before training, instead of a reference forward pass in
        # every step; _SharedRefDPOTrainer keeps them for every later grid point of DPO and of IPO on the same pairs
        precompute_ref_log_probs=precompute_ref, precompute_ref_batch_size=max(32, 2 * batch_size),
    )
    fp = run_fingerprint(stage=stage, beta=beta, loss_type=loss_type, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, max_length=max_length, seed=seed, max_steps=max_steps,
                         data=dataset_fingerprint(dataset), weights=weights_fingerprint(model), n=len(dataset))
    ckpt = resume_checkpoint(output_dir, fp) if resume else None
    done = finished_state(ckpt)
    if done is not None:
        return _load_finished(model, ckpt, stage), _log_table(done["log_history"], stage)
    trainer = _shared_ref_dpo_trainer()(model=model, ref_model=ref_model, args=cfg, train_dataset=dataset,
                                        processing_class=tokenizer, callbacks=[finite_loss_callback(stage)])
    with labelled_positions_only():
        result = trainer.train(resume_from_checkpoint=ckpt)
    log.info("%s (β=%s): %d steps, final loss %.4f", stage, beta, result.global_step, result.training_loss)
    return trainer.model, _log_table(trainer.state.log_history, stage)


def _table_digest(dataset) -> str:
    """SHA-256 of a ``datasets.Dataset``'s rows as they are (Arrow IPC bytes of the table, indices applied)."""
    import pyarrow as pa

    table = (dataset.flatten_indices() if dataset._indices is not None else dataset).data.table
    table = table.replace_schema_metadata(None)  # datasets keeps its own state there, not the rows
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


# (processed rows' digest, reference weights' hash, truncation settings) -> the two reference log-prob columns
_REF_LOGPS: dict = {}
_REF_LOGPS_KEEP = 8


def _shared_ref_dpo_trainer():
    """TRL's DPOTrainer whose precomputed reference log-probabilities are shared across trainers in this process.

    TRL (1.16) caches them in a file named after the dataset's fingerprint only when the dataset has cache files;
    an in-memory dataset, as the alignment nodes build, gets a random file name, so every grid point computed them
    again (checked: three trainers on one dataset computed them three times). Here they are kept in memory under
    a digest of the rows as TRL has tokenised them (its own fingerprints of the tokenised dataset differ from one
    trainer to the next), the reference weights' hash (TRL's own), its config, the truncation settings, LD-DPO's
    ``ld_alpha`` and the mixed precision; a trainer with the same ones reads them instead of running the reference.
    Written here because TRL has no in-memory cache for them.
    """
    from datasets import concatenate_datasets
    from trl import DPOTrainer

    class _SharedRefDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            ref = self.ref_model or self.model
            config = getattr(ref, "config", None)
            key = (_table_digest(dataset), self._precompute_model_hash, self.args.max_length,
                   getattr(self.args, "truncation_mode", None), getattr(self.args, "padding_free", None),
                   getattr(self.args, "ld_alpha", None), str(self.accelerator.mixed_precision),
                   run_fingerprint(config=config.to_dict()) if config is not None else None)
            cached = _REF_LOGPS.get(key)
            if cached is not None and len(cached) == len(dataset):
                log.info("reference log-probs for %d %s examples: reused (computed by an earlier trainer)",
                         len(dataset), name)
                return concatenate_datasets([dataset, cached], axis=1)
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            while len(_REF_LOGPS) >= _REF_LOGPS_KEEP:
                _REF_LOGPS.pop(next(iter(_REF_LOGPS)))
            _REF_LOGPS[key] = out.select_columns(["ref_chosen_logps", "ref_rejected_logps"]).flatten_indices()
            return out

    return _SharedRefDPOTrainer


def _log_table(log_history: list[dict], stage: str) -> pd.DataFrame:
    """Every logged training step with all its keys, columns in one fixed order (stage, step, then sorted)."""
    df = pd.DataFrame([{"stage": stage, **h} for h in log_history if "loss" in h])
    first = [c for c in ("stage", "step") if c in df.columns]
    return df[first + sorted(c for c in df.columns if c not in first)]
