"""Shared training helpers: TRL's fused LM head on labelled positions only, and the LR schedule."""

from __future__ import annotations

import pytest
import torch

from ru_rlhf.models.policy import format_prompt
from ru_rlhf.models.training import StageParams, _scheduler_kwargs, labelled_positions_only


def _fused_loss(model, tokenizer, prompts, completions):
    """Loss, per-token log-probs and LM-head gradient of TRL's fused LM head on a prompt/completion batch."""
    rows = [tokenizer(p + c, add_special_tokens=False)["input_ids"] for p, c in zip(prompts, completions)]
    starts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, starts)):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        labels[i, s:len(r)] = torch.tensor(r[s:])  # loss on the completion only
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grad = model.get_output_embeddings().weight.grad.clone()
    model.zero_grad()
    return out, grad


def test_labelled_positions_only_gives_the_same_loss_and_gradients(tiny_policy, tiny_tokenizer):
    """On CPU TRL scores every position and masks; inside the context only labelled positions
    are scored. Loss, per-token log-probs and gradients must not change."""
    import trl.trainer.utils as trl_utils

    trl_utils.add_fused_lm_head(tiny_policy, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
    prompts = [format_prompt("Текст: В Казани открыли школу. Вопрос: Где?"), format_prompt("Привет")]
    completions = ["В Казани.", "Добрый день, чем помочь?"]
    tiny_policy.train()
    every, grad_every = _fused_loss(tiny_policy, tiny_tokenizer, prompts, completions)
    assert not trl_utils._use_triton(torch.device("cpu"))  # the CPU path scores every position
    with labelled_positions_only():
        assert trl_utils._use_triton(torch.device("cpu"))
        labelled, grad_labelled = _fused_loss(tiny_policy, tiny_tokenizer, prompts, completions)
    assert not trl_utils._use_triton(torch.device("cpu"))  # restored
    assert torch.allclose(every.loss, labelled.loss, atol=1e-6)
    assert torch.allclose(every.log_probs, labelled.log_probs, atol=1e-5)
    assert torch.allclose(grad_every, grad_labelled, atol=1e-6)
    assert int(labelled.label_mask.sum()) < labelled.label_mask.numel() // 2  # most positions unlabelled


def test_warmup_stable_decay_takes_its_decay_from_a_share_of_the_steps():
    stage = StageParams(lr_scheduler="warmup_stable_decay", max_steps=2800, lr_decay_share=0.25,
                        lr_scheduler_kwargs={"decay_type": "linear"})
    assert _scheduler_kwargs(stage, n_rows=10_000) == {"decay_type": "linear", "num_decay_steps": 700}
    by_epochs = StageParams(lr_scheduler="warmup_stable_decay", epochs=2, batch_size=10, lr_decay_share=0.5)
    assert _scheduler_kwargs(by_epochs, n_rows=95)["num_decay_steps"] == 10  # ceil(95/10*2)=19 steps
    given = StageParams(lr_scheduler="warmup_stable_decay", lr_scheduler_kwargs={"num_decay_steps": 3})
    assert _scheduler_kwargs(given, n_rows=100)["num_decay_steps"] == 3
    assert _scheduler_kwargs(StageParams(lr_scheduler="cosine"), n_rows=100) == {}


def test_dpo_reference_log_probs_are_computed_once_and_give_the_same_training(tiny_policy, tiny_tokenizer, tmp_path,
                                                                              caplog):
    """The reference's log-probabilities: precomputed once and reused by a later trainer on the same pairs (another
    β, IPO) and the training they give is the one a reference forward pass in every step gives."""
    import copy
    import logging

    import pandas as pd
    from datasets import Dataset

    from ru_rlhf.models import training

    rows = [(f"Вопрос {i}: где школа?", f"В Казани, дом {i}.", "Не знаю.") for i in range(12)]
    ds = Dataset.from_pandas(pd.DataFrame(rows, columns=["prompt", "chosen", "rejected"]).assign(
        prompt=lambda d: d["prompt"].map(format_prompt)), preserve_index=False)
    ref = copy.deepcopy(tiny_policy).eval()
    training._REF_LOGPS.clear()

    def run(name, loss_type="sigmoid", beta=0.1, precompute=True):
        _, hist = training.run_dpo_trainer(copy.deepcopy(tiny_policy), ref, tiny_tokenizer, ds, beta=beta,
                                           loss_type=loss_type, epochs=1, batch_size=4, learning_rate=1e-3,
                                           max_length=64, seed=0, output_dir=tmp_path / name, max_steps=3,
                                           logging_steps=1, resume=False, precompute_ref=precompute)
        return hist

    with caplog.at_level(logging.INFO, logger="ru_rlhf.models.training"):
        first = run("a")
        assert "reused" not in caplog.text and len(training._REF_LOGPS) == 1  # computed and kept
        again = run("b", beta=0.5)
        ipo = run("c", loss_type="ipo", beta=0.5)
    assert caplog.text.count("reference log-probs for 12 train examples: reused") == 2
    per_step = run("d", precompute=False)  # TRL's reference pass in every step
    for h in (first, per_step):
        assert h["loss"].iloc[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy = reference at step 0
    # the same reference numbers: the same steps
    assert first["loss"].tolist() == pytest.approx(per_step["loss"].tolist(), abs=2e-4)
    assert first["rewards/margins"].tolist() == pytest.approx(per_step["rewards/margins"].tolist(), abs=2e-4)
    assert again["loss"].iloc[-1] != pytest.approx(first["loss"].iloc[-1], abs=1e-6)  # β 0.5 trains otherwise
    assert ipo["loss"].iloc[0] == pytest.approx(1.0, abs=1e-3)  # IPO's (0 - 1/(2τ))² at step 0, τ = 0.5
