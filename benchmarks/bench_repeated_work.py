"""Repeated work removed (#28): each change's before and after, measured side by side in this one run.

    python benchmarks/bench_repeated_work.py [--env base] [--dpo-pairs 256] [--norm-prompts 400]

Uses the env's artifacts of an earlier `kedro run` (SFT policy, reference, reward model, preference pairs,
alignment prompts) and writes one section to docs/benchmarks.md. Each row is one change:

1. **MLflow parameters per node.** kedro-mlflow's ``before_node_run`` (reopen the run, log every leaf of every
   parameter input, one SQL write each) against the project's hook (each parameter once per run, one batch), over
   the node sequence of ``kedro run --env ENV`` with its real parameter inputs, each side on its own fresh SQLite
   store.
2. **DPO / IPO reference log-probabilities.** A grid of DPO β 0.05, 0.5 and IPO τ 0.5 on the same pairs: a reference
   forward pass in every step (before) against the reference's log-probabilities precomputed once and shared by the
   three trainers (after). Both sides' step losses are compared.
3. **CEM's probe.** Per iteration, the greedy probe answers generated twice (gold, then KL) before, once after.
4. **RL reward normalisation.** Two RL runs on the same reference: each sampled its own reference answers
   (before); the second reuses the first's and only scores them (after). The base run has five such runs.
5. **The smoke env's projection of the reward model's states.** UMAP (numba compiles it in every new process) against
   PCA, each in a fresh process, on the smoke env's 200 points.
6. **Report figures.** Checked before the save (a draw of their own, then the save's) against checked after the
   save has drawn them.
7. **Reward-model batches.** The multi-head reward model's first training steps on the env's training pairs:
   uniformly random batches, each padded to its longest pair (before), against length-grouped batches (after;
   ``reward_modeling.train.group_by_length``). Both sides start from the same weights and seed; the check column
   gives the share of padding in the batches each side saw.
8. **Reward-model batches by prompt** (``reward_modeling.train.batching: prompts``). The same first steps with
   random pairs (two sequences scored per pair) against the pairs of a few prompts per batch, each distinct answer
   scored once; then the whole multi-head training with prompt batches (the env's epochs and early stopping), and
   its test accuracy and AUC per head beside those of the env's trained reward model (the earlier run's, trained
   with the env's own batching). The check column gives the sequences scored per step and both models' test figures.
9. **Reward-model scoring** (``ru_rlhf.models.reward.score(distinct=...)``). The test pairs scored as
   ``validate_reward_models`` scores them, and one early-stopping evaluation of the validation sample: every row of
   the pairs' two sides (before) against each distinct (prompt, answer) once, its row repeated (after).
10. **The garbage collector** (``ru_rlhf.hooks.GcFreezeHook``). The multi-head reward model's first training steps
    with the process's objects walked by every collection against frozen out of them (``gc.freeze``), alternating.
11. **REINFORCE's forward passes** (``make_rollout(keep_graph=True)``). The env's REINFORCE, its first steps on the
    SFT policy with the env's reward model: the update's own forward pass of the rollout batch (before) against a
    backward pass through the rollout's forward pass (after), alternating twice. The check column compares both
    sides' step logs and final weights.
12. **Sampling without a nucleus cut** (``ru_rlhf.models.generation.sampling._sample`` at ``top_p = 1``: the RL
    rollouts, the reward normalisation's reference answers, best-of-n). The env's REINFORCE, its first steps on the
    SFT policy: the sampler of ``--before`` (read from git), which sorted the whole vocabulary for every such row on
    every step, against the working tree's, which finds the draw among the most likely tokens, alternating twice.
    The check column counts the tokens on which the two sides' first rollouts differ.
13. **The token statistics compiled** (``ru_rlhf.rl.rollout.token_stats`` through ``torch.compile`` for large
    batches, as commit 3d33980 did; rejected on this row, so the project computes them eagerly). The env's REINFORCE
    and PPO, their first steps on the SFT policy, alternating twice. Each compiled side first compiles from an empty
    cache every graph the runs use, timed apart (the check column), as a `kedro run` does once for all its PPO and
    REINFORCE runs. The check column compares both sides' step logs and final weights.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402


def _params(env: str) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=env) as session:
        ctx = session.load_context()
        return ctx.params


def bench_mlflow(env: str, params: dict) -> tuple[str, float, float, str]:
    """Seconds of kedro-mlflow's before_node_run against the project's, over one run's nodes."""
    import mlflow
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

    from ru_rlhf.hooks import _all_pipelines
    from ru_rlhf.tracking import _mlflow_hook_class

    nodes = [n for pl in _all_pipelines().values() for n in pl.nodes]

    def inputs_of(node) -> dict:
        out = {}
        for name in node.inputs:
            if name.startswith("params:"):
                value = params
                for part in name[7:].split("."):
                    value = value[part]
                out[name] = value
        return out

    def timed(cls) -> tuple[float, int]:
        tmp = Path(tempfile.mkdtemp())
        mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        hook = cls()
        hook.flatten, hook.recursive, hook.sep, hook.long_params_strategy = True, True, ".", "truncate"
        hook._is_mlflow_enabled = True
        hook.mlflow_config = SimpleNamespace(tracking=SimpleNamespace(run=SimpleNamespace(nested=True)))
        run = mlflow.start_run(experiment_id=mlflow.set_experiment("bench").experiment_id)
        hook.run_id = run.info.run_id
        start = time.perf_counter()
        for n in nodes:
            hook.before_node_run(node=n, catalog=None, inputs=inputs_of(n), is_async=False)
        seconds = time.perf_counter() - start
        logged = len(mlflow.get_run(run.info.run_id).data.params)
        while mlflow.active_run() is not None:  # kedro-mlflow's reopening stacks the run once per node
            mlflow.end_run()
        return seconds, logged

    before, n_before = timed(MlflowHook)
    after, n_after = timed(_mlflow_hook_class())
    assert n_before == n_after, (n_before, n_after)
    return (f"MLflow parameters before each of the {len(nodes)} nodes of `kedro run --env {env}`", before, after,
            f"the same {n_after} parameters recorded on both sides")


def bench_dpo(data: Path, params: dict, pairs_n: int) -> tuple[str, float, float, str]:
    from datasets import Dataset

    from ru_rlhf.models import training
    from ru_rlhf.models.policy import format_prompt, load_policy, load_tokenizer

    dpo = params["alignment"]["dpo"]["train"]
    seed = params["alignment"]["common"]["seed"]
    pairs = pd.read_parquet(data / "03_primary" / "preference_pairs.parquet")
    pairs = pairs[(pairs["criterion"] == "overall") & (pairs["split"] == "train")].sample(n=pairs_n, random_state=seed)
    ds = Dataset.from_pandas(pd.DataFrame({"prompt": pairs["prompt"].map(format_prompt), "chosen": pairs["chosen"],
                                           "rejected": pairs["rejected"]}), preserve_index=False)
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    sft, ref = load_policy(data / "06_models" / "sft_policy"), load_policy(data / "06_models" / "reference_policy")
    grid = [("sigmoid", 0.05), ("sigmoid", 0.5), ("ipo", 0.5)]
    losses = {}

    def side(precompute: bool) -> float:
        training._REF_LOGPS.clear()
        start = time.perf_counter()
        for loss_type, beta in grid:
            with tempfile.TemporaryDirectory() as out:
                _, hist = training.run_dpo_trainer(
                    copy.deepcopy(sft), ref, tok, ds, beta=beta, loss_type=loss_type, epochs=1,
                    batch_size=dpo["batch_size"], learning_rate=dpo["learning_rate"], max_length=512, seed=seed,
                    output_dir=out, resume=False, precompute_ref=precompute, logging_steps=1)
            losses[(precompute, loss_type, beta)] = hist["loss"].to_numpy()
        return time.perf_counter() - start

    before, after = side(False), side(True)
    diff = max(float(abs(losses[(True, lt, b)] - losses[(False, lt, b)]).max()) for lt, b in grid)
    steps = len(losses[(True, "sigmoid", 0.05)])
    return (f"DPO β 0.05, 0.5 and IPO τ 0.5 on {pairs_n} pairs ({steps} steps each, batch {dpo['batch_size']})",
            before, after, f"largest difference of a step's loss between the sides {diff:.1e}")


def bench_cem_probe(data: Path, params: dict) -> tuple[str, float, float, str]:
    from ru_rlhf.models.policy import load_policy, load_tokenizer
    from ru_rlhf.scoring import probe_policy, score_policy

    c = params["alignment"]["common"]
    prompts = pd.read_parquet(data / "05_model_input" / "alignment_prompts.parquet")
    probe = prompts[prompts["role"] == "probe"].reset_index(drop=True)
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    policy, ref = load_policy(data / "06_models" / "sft_policy"), load_policy(data / "06_models" / "reference_policy")
    kw = dict(seed=c["seed"], max_new_tokens=c["max_new_tokens_by_task"], batch_size=c["batch_size"])
    start = time.perf_counter()
    res_b, _ = probe_policy(policy, tok, probe, **kw)
    kl_b = score_policy(policy, tok, probe, key=("probe",), temperature=0.0, top_p=1.0, reference=ref, **kw)["kl"]
    before = time.perf_counter() - start
    start = time.perf_counter()
    res_a, answers = probe_policy(policy, tok, probe, reference=ref, **kw)
    after = time.perf_counter() - start
    same = res_a["probe_gold"] == res_b["probe_gold"] and bool((answers["kl"].to_numpy() == kl_b.to_numpy()).all())
    return (f"CEM's probe per iteration ({len(probe)} prompts, greedy, gold and KL)", before, after,
            "the same probe gold and KL on both sides" if same else "DIFFERENT results")


def bench_reference_answers(data: Path, params: dict, n_prompts: int) -> tuple[str, float, float, str]:
    from ru_rlhf.models.policy import load_policy, load_tokenizer
    from ru_rlhf.models.reward import load_reward_model
    from ru_rlhf.rl import loop
    from ru_rlhf.rl.params import RLParams
    from ru_rlhf.rl.runner import reward_fn
    from ru_rlhf.scoring import rm_scorer

    prompts = pd.read_parquet(data / "05_model_input" / "alignment_prompts.parquet")
    train = prompts[prompts["role"] == "train"].head(n_prompts).reset_index(drop=True)
    records = list(train[["prompt_id", "prompt"]].itertuples(index=False))
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    ref = load_policy(data / "06_models" / "reference_policy")
    reward = reward_fn(rm_scorer(load_reward_model(data / "06_models" / "reward_model")))  # as run_rl's
    ppo = params["alignment"]["ppo"]["train"]
    cfg = RLParams.of({k: v for k, v in ppo.items() if k not in ("method", "reward")}).config(seed=params["alignment"]["common"]["seed"])

    def two_runs(share: bool) -> tuple[float, list]:
        loop._REFERENCE_ANSWERS.clear()
        norms, start = [], time.perf_counter()
        for _ in range(2):
            if not share:
                loop._REFERENCE_ANSWERS.clear()
            run = loop._Run(cfg, model=None, opt=None, acc=None, evaluate=None, checkpoint_dir=None)
            run.fit_reward_norm(ref, tok, records, reward)
            norms.append(run.norm)
        return time.perf_counter() - start, norms

    before, nb = two_runs(False)
    after, na = two_runs(True)
    return (f"RL reward normalisation of two runs ({len(records) * cfg.norm_samples} reference answers each)",
            before, after, "the same normalisation on both sides" if nb == na else f"DIFFERENT: {nb} vs {na}")


def bench_projection() -> tuple[str, float, float, str]:
    code = ("import time, numpy as np; x = np.random.RandomState(0).randn(200, 192).astype('float32'); "
            "t = time.perf_counter(); {fit}; print(time.perf_counter() - t)")
    umap = code.format(fit="import umap; umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1)"
                           ".fit_transform(x)")
    pca = code.format(fit="from sklearn.decomposition import PCA; PCA(n_components=2, random_state=0).fit_transform(x)")

    def fresh(src: str) -> float:
        out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return float(out.stdout.strip().splitlines()[-1])

    return ("2-D map of 200 pooled states in a fresh process (import and fit)", fresh(umap), fresh(pca),
            "smoke env: `projection: pca`; base keeps UMAP")


def bench_figures(n: int = 12) -> tuple[str, float, float, str]:
    """Saving report figures: checked before the save (a draw of its own, then the save's) against checked after
    the save has drawn them (the project's ``_CheckedFigure`` now)."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ru_rlhf.figures import figure_problems
    from ru_rlhf.io.datasets import AtomicMatplotlibDataset, _CheckedFigure

    def figure():
        fig, axes = plt.subplots(1, 4, figsize=(16, 4))
        for ax in axes:
            ax.plot(np.arange(100), np.random.default_rng(0).random(100))
            ax.set_xlabel("step")
            ax.set_ylabel("gold")
        fig.tight_layout()
        return fig

    logging.getLogger("ru_rlhf.io.datasets").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        for i in range(n):
            fig = figure()
            figure_problems(fig, "before")  # the old order: check (its own draw), then the same atomic save
            ds = AtomicMatplotlibDataset(filepath=f"{out}/b{i}.png", save_args={"dpi": 110})
            super(_CheckedFigure, ds).save(fig)
        before = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(n):
            AtomicMatplotlibDataset(filepath=f"{out}/a{i}.png", save_args={"dpi": 110}).save(figure())
        after = time.perf_counter() - start
    return (f"saving {n} checked 4-panel report figures (dpi 110)", before, after,
            "both sides run the same checks; after: one draw per figure")


def _fresh_multi_head(backbone, p):
    """The multi-head reward model as train_multi_head_rm builds it: a copy of ``backbone``, heads seeded."""
    import torch

    from ru_rlhf.models import reward
    from ru_rlhf.vocabulary import CRITERIA

    torch.manual_seed(p.seed)
    rm = reward.RewardModel(copy.deepcopy(backbone), CRITERIA, "multi_head", p.n_bins, p.weights, pooling=p.pooling,
                            max_length=p.train.max_length, match_feature=p.match_feature)
    rm.encoder.config.use_cache = False
    return rm


def _rm_training_inputs(data: Path, params: dict):
    """The env's reward-model parameters, the policy tokenizer, the SFT policy's backbone and the training pairs, as
    train_multi_head_rm reads them from an earlier run's data root."""
    from ru_rlhf.models import reward
    from ru_rlhf.models.policy import load_policy, load_tokenizer
    from ru_rlhf.pipelines.reward_modeling.nodes import _training_pairs
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams

    p = RewardParams.of(params["reward_modeling"])
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    backbone = reward.backbone_of(load_policy(data / "06_models" / "sft_policy"))
    return p, tok, backbone, _training_pairs(pd.read_parquet(data / "03_primary" / "preference_pairs.parquet"), p)


def bench_rm_batches(data: Path, params: dict, steps: int) -> tuple[str, float, float, str]:
    import random

    from ru_rlhf.models import reward

    p, tok, backbone, pairs = _rm_training_inputs(data, params)
    t = p.train
    epochs = steps * t.batch_size / len(pairs)
    lengths = reward.pair_lengths(pairs)
    pad = {}

    def side(grouped: bool) -> float:
        batches = reward.epoch_batches(list(range(len(pairs))), t.batch_size, random.Random(p.seed),
                                       lengths if grouped else None)[:steps]
        widths = [int(lengths[b].max()) * len(b) for b in batches]
        pad[grouped] = 1 - sum(int(lengths[b].sum()) for b in batches) / sum(widths)
        rm = _fresh_multi_head(backbone, p)
        start = time.perf_counter()
        reward.train_reward_model(rm, tok, pairs, epochs=epochs, batch_size=t.batch_size,
                                  learning_rate=t.learning_rate, max_length=t.max_length, seed=p.seed,
                                  balance_criteria=t.balance_criteria, group_by_length=grouped)
        return time.perf_counter() - start

    before, after = side(False), side(True)
    return (f"multi-head reward model, first {steps} steps of {t.batch_size} pairs ({len(pairs)} training pairs)",
            before, after, f"padding share of the batches (characters): {pad[False]:.2f} before, {pad[True]:.2f} after")


def bench_rm_prompt_batches(data: Path, params: dict, steps: int, whole: bool = True) -> tuple[str, float, float, str]:
    """Seconds of the first ``steps`` steps with random pairs against prompt batches; then (``whole``) a whole training
    with prompt batches, tested beside the env's trained multi-head model."""
    import random

    import numpy as np

    from ru_rlhf.metrics import pairwise_metrics
    from ru_rlhf.models import reward
    from ru_rlhf.models.policy import load_policy, load_tokenizer
    from ru_rlhf.pipelines.reward_modeling.nodes import _score_pairs, _training_pairs, _validation_pairs
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams
    from ru_rlhf.vocabulary import CRITERIA

    p = RewardParams.of(params["reward_modeling"])
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    backbone = reward.backbone_of(load_policy(data / "06_models" / "sft_policy"))
    all_pairs = pd.read_parquet(data / "03_primary" / "preference_pairs.parquet")
    pairs, val = _training_pairs(all_pairs, p), _validation_pairs(all_pairs, p)
    t = p.train
    lengths = reward.pair_lengths(pairs) if t.group_by_length else None
    groups = list(pairs.groupby("prompt", sort=False).indices.values())
    seqs = {}

    def train(batching: str, epochs: float, validation=None):
        start = time.perf_counter()
        rm, log = reward.train_reward_model(
            _fresh_multi_head(backbone, p), tok, pairs, epochs=epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
            max_length=t.max_length, seed=p.seed, balance_criteria=t.balance_criteria,
            group_by_length=t.group_by_length, batching=batching, validation=validation,
            evals_per_epoch=t.evals_per_epoch, patience=t.patience)
        return rm, log, time.perf_counter() - start

    for batching in ("pairs", "prompts"):
        batches = (reward.prompt_batches(groups, t.batch_size, random.Random(p.seed), lengths) if batching == "prompts"
                   else reward.epoch_batches(list(range(len(pairs))), t.batch_size, random.Random(p.seed), lengths))
        seqs[batching] = np.mean([len(reward.distinct_sequences(*(pairs[c].iloc[b].tolist() for c in
                                                                   ("prompt", "chosen", "rejected")))[0])
                                  if batching == "prompts" else 2 * len(b) for b in batches[:steps]])
    epochs = steps * t.batch_size / len(pairs)
    before = train("pairs", epochs)[2]
    after = train("prompts", epochs)[2]
    what = (f"multi-head reward model, first {steps} steps of {t.batch_size} pairs, random pairs (before) against "
            f"prompt batches (after)")
    per_step = f"sequences scored per step: {seqs['pairs']:.1f} (pairs), {seqs['prompts']:.1f} (prompts)"
    if not whole:
        return what, before, after, per_step + "; the whole training with prompt batches was not run (--rm-steps-only)"
    rm_prompts, log, full = train("prompts", t.epochs, val)
    rm_env = reward.load_reward_model(data / "06_models" / "reward_model")[0]
    test = all_pairs[(all_pairs["split"] == "test") & all_pairs["criterion"].isin(CRITERIA)]

    def figures(rm) -> str:  # scored as validate_reward_models scores the test pairs
        sc, out = _score_pairs((rm, tok), test, p), []
        for h in CRITERIA:
            hp = sc[sc["criterion"] == h]
            m = pairwise_metrics(hp[f"{h}_chosen"] - hp[f"{h}_rejected"], hp["gold_margin"])
            out.append(f"{h} " + " / ".join("n/a" if m[k] is None else f"{m[k]:.3f}" for k in ("accuracy", "auc")))
        return ", ".join(out)

    evals = log[log["kind"] == "eval"]
    best = evals[evals["best"]].iloc[0]
    check = (f"{per_step}. Whole "
             f"training with prompt batches ({t.epochs} epochs at most, early stopping on {len(val)} validation "
             f"pairs): {full:.0f} s, {int((log['kind'] == 'step').sum())} steps, best state at step "
             f"{int(best['step'])} (validation {best['validation_accuracy']:.3f}); test accuracy / AUC (gold): "
             f"prompt batches {figures(rm_prompts)}; the env's trained model ({t.batching} batches) "
             f"{figures(rm_env)}")
    return what, before, after, check


def bench_gc_freeze(data: Path, params: dict, steps: int) -> tuple[str, float, float, str]:
    """The multi-head reward model's first ``steps`` training steps with every object of this process (the imported
    libraries, as in a `kedro run`) walked by each collection (before) and frozen out of it (after, ``gc.freeze``, as
    ``ru_rlhf.hooks.GcFreezeHook`` does), alternating twice; the garbage collector's own pauses timed by gc.callbacks."""
    import gc

    from ru_rlhf.models import reward

    p, tok, backbone, pairs = _rm_training_inputs(data, params)
    t = p.train
    epochs = steps * t.batch_size / len(pairs)
    pause = {"start": 0.0, "total": 0.0, "full": 0}

    def timer(phase, info):
        if phase == "start":
            pause["start"] = time.perf_counter()
        else:
            pause["total"] += time.perf_counter() - pause["start"]
            pause["full"] += info["generation"] == 2

    times: dict[bool, list] = {False: [], True: []}
    gc.callbacks.append(timer)
    try:
        for _ in range(2):
            for frozen in (False, True):
                gc.collect()
                gc.freeze() if frozen else gc.unfreeze()
                rm = _fresh_multi_head(backbone, p)
                pause.update(total=0.0, full=0)
                start = time.perf_counter()
                reward.train_reward_model(rm, tok, pairs, epochs=epochs, batch_size=t.batch_size,
                                          learning_rate=t.learning_rate, max_length=t.max_length, seed=p.seed,
                                          balance_criteria=t.balance_criteria, group_by_length=t.group_by_length,
                                          batching=t.batching)
                times[frozen].append((time.perf_counter() - start, pause["total"], pause["full"],
                                      gc.get_freeze_count()))
    finally:
        gc.callbacks.remove(timer)
        gc.unfreeze()
    before, after = (min(x[0] for x in times[k]) for k in (False, True))
    runs = "; ".join(f"{'frozen' if k else 'not frozen'}: " + ", ".join(
        f"{w:.1f} s (collector {g:.1f} s, {n} full collections)" for w, g, n, _ in times[k]) for k in (False, True))
    what = (f"multi-head reward model, first {steps} steps: the process's objects walked by every collection (before) "
            f"against frozen out of them (after, gc.freeze; {times[True][0][3]} objects frozen)")
    return what, before, after, f"each side twice, alternating, the fastest given; {runs}"


def bench_rm_scoring(data: Path, params: dict) -> tuple[str, float, float, str]:
    """The test pairs scored by the env's multi-head reward model as ``validate_reward_models`` scores them, every
    row (before) against each distinct (prompt, answer) once (after); the same for one early-stopping evaluation on the
    validation sample."""
    import numpy as np

    from ru_rlhf.models import reward
    from ru_rlhf.models.policy import format_prompt
    from ru_rlhf.pipelines.reward_modeling.nodes import _validation_pairs
    from ru_rlhf.pipelines.reward_modeling.params import RewardParams
    from ru_rlhf.vocabulary import CRITERIA

    p = RewardParams.of(params["reward_modeling"])
    rm, tok = reward.load_reward_model(data / "06_models" / "reward_model")
    all_pairs = pd.read_parquet(data / "03_primary" / "preference_pairs.parquet")
    test = all_pairs[(all_pairs["split"] == "test") & all_pairs["criterion"].isin(CRITERIA)]
    val = _validation_pairs(all_pairs, p)
    prompts = test["prompt"].map(format_prompt).tolist() * 2
    answers = test["chosen"].tolist() + test["rejected"].tolist()
    times, scores, accs = {}, {}, {}
    real = reward.score

    def every_row(*args, **kwargs):  # pair_accuracy as it was: every row of the validation sample scored
        return real(*args, **{**kwargs, "distinct": False})

    for distinct in (False, True):
        start = time.perf_counter()
        scores[distinct] = reward.score(rm, tok, prompts, answers, max_length=p.train.max_length, distinct=distinct)
        mid = time.perf_counter()
        if distinct:
            accs[distinct] = reward.pair_accuracy(rm, tok, val, p.train.max_length)
        else:
            reward.score = every_row
            try:
                accs[distinct] = reward.pair_accuracy(rm, tok, val, p.train.max_length)
            finally:
                reward.score = real
        times[distinct] = (mid - start, time.perf_counter() - mid)
    diff = float(np.abs(scores[True].to_numpy() - scores[False].to_numpy()).max())
    n_distinct = len(set(zip(prompts, answers)))
    n_val = len(set(zip(val["prompt"].tolist() * 2, val["chosen"].tolist() + val["rejected"].tolist())))
    what = (f"reward-model scoring: the {len(test)} test pairs ({len(prompts)} rows) and one early-stopping "
            f"evaluation on {len(val)} validation pairs, every row (before) against each distinct answer once (after)")
    check = (f"test pairs {times[False][0]:.1f} -> {times[True][0]:.1f} s ({len(prompts)} -> {n_distinct} sequences), "
             f"validation evaluation {times[False][1]:.1f} -> {times[True][1]:.1f} s ({2 * len(val)} -> {n_val}); "
             f"largest score difference {diff:.1e}; validation accuracy per head "
             + ", ".join(f"{h} {accs[False][h]:.4f} / {accs[True][h]:.4f}" for h in accs[False]))
    return what, sum(times[False]), sum(times[True]), check


def _rl_setup(data: Path, params: dict, steps: int, method: str = "reinforce"):
    """The env's REINFORCE (or another of its RL ``method``s) as run_rl sets it up, for ``steps`` steps: the training
    prompts, tokenizer, SFT policy, reference, reward function and config. The reward normalisation's reference
    answers are sampled here, once, before anything is timed (as in a `kedro run`, where the first RL run samples them
    for the others): the timed runs then only score them."""
    from ru_rlhf.models.policy import load_policy, load_tokenizer
    from ru_rlhf.models.reward import load_reward_model
    from ru_rlhf.rl import loop
    from ru_rlhf.rl.params import RLParams
    from ru_rlhf.rl.runner import reward_fn
    from ru_rlhf.scoring import rm_scorer

    prompts = pd.read_parquet(data / "05_model_input" / "alignment_prompts.parquet")
    train_prompts = prompts[prompts["role"] == "train"].reset_index(drop=True)
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    sft, ref = load_policy(data / "06_models" / "sft_policy"), load_policy(data / "06_models" / "reference_policy")
    reward = reward_fn(rm_scorer(load_reward_model(data / "06_models" / "reward_model")))  # as run_rl's
    spec = params["alignment"][method]["train"]
    seed = params["alignment"]["common"]["seed"]
    cfg = RLParams.of({k: v for k, v in spec.items() if k not in ("method", "reward")}).config(seed=seed)
    cfg = dataclasses.replace(cfg, steps=steps)
    warm = loop._Run(cfg, model=None, opt=None, acc=None, evaluate=None, checkpoint_dir=None)
    warm.fit_reward_norm(ref, tok, list(train_prompts[["prompt_id", "prompt"]].itertuples(index=False)), reward)
    return train_prompts, tok, sft, ref, reward, cfg


def _sides_text(times: dict[bool, list]) -> str:
    """Each side's run times, before then after."""
    return "; ".join(f"{'after' if k else 'before'} " + ", ".join(f"{t:.1f}" for t in times[k]) + " s"
                     for k in (False, True))


def _run_difference(out: dict, sft) -> str:
    """How far the two sides' ``loop.train`` results ``out[False]``, ``out[True]`` are apart: their step logs and
    final weights, beside how far the weights moved from ``sft``."""
    cols = [c for c in ("reward", "kl", "entropy", "loss") if c in out[True][1]]
    log_diff = float((out[True][1][cols] - out[False][1][cols]).abs().max().max())
    pairs = zip(out[True][0].parameters(), out[False][0].parameters())
    w_diff = max(float((a - b).detach().abs().max()) for a, b in pairs)
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(out[True][0].parameters(), sft.parameters()))
    return (f"largest difference of the step logs ({', '.join(cols)}) {log_diff:.1e}, of the final weights "
            f"{w_diff:.1e} (the weights moved {moved:.1e} from SFT)")


def bench_reinforce_graph(data: Path, params: dict, steps: int) -> tuple[str, float, float, str]:
    """The env's REINFORCE for ``steps`` steps (no evaluation), its update running the rollout batch's forward pass
    again (before) against back-propagating through the rollout's own (after), alternating twice."""

    from ru_rlhf.rl import loop, reinforce

    train_prompts, tok, sft, ref, reward, cfg = _rl_setup(data, params, steps)
    times: dict[bool, list] = {False: [], True: []}
    out = {}
    try:
        for _ in range(2):
            for kept in (False, True):
                reinforce.ReinforceUpdate.uses_rollout_graph = kept
                start = time.perf_counter()
                out[kept] = loop.train(copy.deepcopy(sft), ref, tok, train_prompts, reward, cfg, progress=False)
                times[kept].append(time.perf_counter() - start)
    finally:
        reinforce.ReinforceUpdate.uses_rollout_graph = True
    what = (f"REINFORCE (the env's, {cfg.batch_size} rollouts a step), {steps} steps without evaluation: the update's "
            "own forward pass of the batch (before) against back-propagating through the rollout's (after)")
    check = (f"each side twice, alternating, the fastest given: {_sides_text(times)}; the reference answers' scoring "
             f"included on both sides; {_run_difference(out, sft)}")
    return what, min(times[False]), min(times[True]), check


COMPILE_MIN_ELEMENTS = 1 << 23  # as commit 3d33980 had it: logits of at least this many elements compiled


def bench_compiled_token_stats(data: Path, params: dict, steps: int, method: str) -> tuple[str, float, float, str]:
    """The env's ``method`` (REINFORCE or PPO) for ``steps`` steps (no evaluation) with the token statistics eager
    (before) against compiled for large batches (after: ``torch.compile`` of ``token_stats`` for logits of at least
    ``COMPILE_MIN_ELEMENTS`` elements, as commit 3d33980 did), alternating twice. Each compiled side first compiles
    from an empty cache on a batch of the run's size, with and without a gradient, timed apart (a `kedro run` would
    pay that once, in its first PPO or REINFORCE run). Rejected on this measure: the project computes them eagerly."""
    import torch

    from ru_rlhf.rl import loop, rollout

    train_prompts, tok, sft, ref, reward, cfg = _rl_setup(data, params, steps, method)
    vocab = sft.config.vocab_size
    eager = rollout.token_stats
    times: dict[bool, list] = {False: [], True: []}
    compile_s = []
    out = {}
    try:
        for _ in range(2):
            for compiled in (False, True):
                rollout.token_stats = eager
                if compiled:
                    torch._dynamo.reset()
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
                    fast = torch.compile(eager, dynamic=True)
                    rollout.token_stats = lambda logits, *a, fast=fast, **k: (  # noqa: E731
                        fast if logits.numel() >= COMPILE_MIN_ELEMENTS else eager)(logits, *a, **k)
                    start = time.perf_counter()
                    targets = torch.zeros(cfg.batch_size, cfg.max_new_tokens, dtype=torch.long)
                    ref_logits = torch.randn(cfg.batch_size, cfg.max_new_tokens, vocab)
                    # every graph the runs use: PPO's rollout (no gradient, with the reference), REINFORCE's
                    # rollout (a gradient, with the reference), PPO's update (a gradient, no reference)
                    for grad, ref_in in ((False, ref_logits), (True, ref_logits), (True, None)):
                        logits = torch.randn(cfg.batch_size, cfg.max_new_tokens, vocab, requires_grad=grad)
                        stats = rollout.token_stats(logits, targets, ref_in, cfg.temperature)
                        if grad:
                            stats[0].sum().backward()
                    compile_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                out[compiled] = loop.train(copy.deepcopy(sft), ref, tok, train_prompts, reward, cfg, progress=False)
                times[compiled].append(time.perf_counter() - start)
    finally:
        rollout.token_stats = eager
    what = (f"{method.upper()} (the env's, {cfg.batch_size} rollouts a step), {steps} steps without evaluation: the "
            f"token statistics eager (before) against torch.compile (after; logits of at least "
            f"{COMPILE_MIN_ELEMENTS / 1e6:.1f} M elements), compilation done before the timed steps")
    check = (f"each side twice, alternating, the fastest given: {_sides_text(times)}; compilation from an empty "
             f"cache before each compiled side (not in its time): {', '.join(f'{t:.1f}' for t in compile_s)} s; "
             f"{_run_difference(out, sft)}")
    return what, min(times[False]), min(times[True]), check


def bench_whole_sampling(data: Path, params: dict, steps: int, before_rev: str) -> tuple[str, float, float, str]:
    """The env's REINFORCE for ``steps`` steps (no evaluation) with ``before_rev``'s sampler against this tree's."""
    import importlib.util

    from ru_rlhf.models.generation import batching, sampling
    from ru_rlhf.models.policy import format_prompt
    from ru_rlhf.rl import loop

    src = subprocess.run(["git", "show", f"{before_rev}:src/ru_rlhf/models/generation/sampling.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sampling_before.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("sampling_before", path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    train_prompts, tok, sft, ref, reward, cfg = _rl_setup(data, params, steps)
    samplers = {"before": old._sample, "after": sampling._sample}
    times: dict[str, list] = {k: [] for k in samplers}
    try:
        for _ in range(2):
            for side, fn in samplers.items():
                batching._sample = fn
                start = time.perf_counter()
                loop.train(copy.deepcopy(sft), ref, tok, train_prompts, reward, cfg, progress=False)
                times[side].append(time.perf_counter() - start)
        # the first rollout batch of each side, token by token
        batch = [format_prompt(p) for p in train_prompts["prompt"].head(cfg.batch_size)]
        seeds = list(range(len(batch)))
        ids = {}
        for side, fn in samplers.items():
            batching._sample = fn
            ids[side] = batching.generate_batch(sft, tok, batch, temperatures=[cfg.temperature] * len(batch),
                                                top_ps=[1.0] * len(batch), seeds=seeds,
                                                max_new_tokens=cfg.max_new_tokens, return_ids=True)[1]
    finally:
        batching._sample = sampling._sample
    tokens = sum(len(r) for r in ids["before"])
    differ = sum(a != b for ra, rb in zip(ids["before"], ids["after"]) for a, b in zip(ra, rb))
    first = sum(ra != rb for ra, rb in zip(ids["before"], ids["after"]))
    what = (f"REINFORCE (the env's, {cfg.batch_size} rollouts a step at top-p 1), {steps} steps without evaluation: "
            f"the sampler of {before_rev} (the whole vocabulary sorted per row and step) against this tree's")
    check = ("each side twice, alternating, the fastest given: "
             + "; ".join(f"{k} " + ", ".join(f"{t:.1f}" for t in v) + " s" for k, v in times.items())
             + f"; one rollout batch of {len(batch)} from the same seeds: {first} of {len(batch)} responses differ "
               f"(same-position tokens differing: {differ} of {tokens} before's tokens)")
    return what, min(times["before"]), min(times["after"]), check


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="base")
    ap.add_argument("--dpo-pairs", type=int, default=256)
    ap.add_argument("--norm-prompts", type=int, default=400)
    ap.add_argument("--rm-steps", type=int, default=60)
    ap.add_argument("--rm-steps-only", action="store_true",
                    help="rm_prompts: only the first --rm-steps steps of each side, not the whole training")
    ap.add_argument("--reinforce-steps", type=int, default=8)
    ap.add_argument("--before", default="dcb2255", help="sampling: the revision whose sampler is 'before'")
    ap.add_argument("--data-root", default=None, help="the earlier run's data root (default: the env's)")
    ap.add_argument("--only", default=None, help="comma-separated rows to run: mlflow,cem,norm,dpo,projection,"
                                                 "figures,rm,rm_prompts,rm_scoring,gc,reinforce,sampling,"
                                                 "compile_reinforce,compile_ppo (default: all)")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    data = Path(args.data_root) if args.data_root else ROOT / "data" / ("" if args.env == "base" else args.env)
    os.environ["RU_RLHF_MLFLOW"] = "off"  # reading the parameters must not open a run of its own
    params = _params(args.env)  # the env's own, resolved
    rows = []
    benches = {"mlflow": lambda: bench_mlflow(args.env, params), "cem": lambda: bench_cem_probe(data, params),
               "norm": lambda: bench_reference_answers(data, params, args.norm_prompts),
               "dpo": lambda: bench_dpo(data, params, args.dpo_pairs), "projection": bench_projection,
               "figures": bench_figures, "rm": lambda: bench_rm_batches(data, params, args.rm_steps),
               "rm_prompts": lambda: bench_rm_prompt_batches(data, params, args.rm_steps, not args.rm_steps_only),
               "rm_scoring": lambda: bench_rm_scoring(data, params),
               "gc": lambda: bench_gc_freeze(data, params, args.rm_steps),
               "reinforce": lambda: bench_reinforce_graph(data, params, args.reinforce_steps),
               "sampling": lambda: bench_whole_sampling(data, params, args.reinforce_steps, args.before),
               "compile_reinforce": lambda: bench_compiled_token_stats(data, params, args.reinforce_steps, "reinforce"),
               "compile_ppo": lambda: bench_compiled_token_stats(data, params, args.reinforce_steps, "ppo")}
    only = args.only.split(",") if args.only else list(benches)
    unknown = sorted(set(only) - set(benches))
    if unknown:
        raise SystemExit(f"--only: unknown rows {unknown}; known: {sorted(benches)}")
    for fn in (benches[k] for k in only):
        what, before, after, check = fn()
        rows.append((what, before, after, check))
        print(f"{what}: before {before:.2f} s, after {after:.2f} s, ratio {after / before:.3f}; {check}", flush=True)
    md = ["| change | before, s | after, s | after / before | check |", "|---|---:|---:|---:|---|"]
    md += [f"| {w} | {b:.2f} | {a:.2f} | {a / b:.3f} | {c} |" for w, b, a, c in rows]
    notes = ("Each row's two sides ran one after the other in this process (the projection's in two fresh "
             "processes), on the env's artifacts of an earlier run, with nothing else running.")
    title = f"Repeated work removed, env {args.env}" + (f", rows {args.only}" if args.only else "")
    append_result(title, [], notes, markdown="\n".join(md))


if __name__ == "__main__":
    main()
