"""Nodes of the user_pairs pipeline: the loop on a user's own preference pairs, with no gold judge.

The pairs come in through the catalog (``user_pairs_raw``, a :class:`ru_rlhf.io.datasets.PairsDataset`), are
validated and split by a seeded split, and train the multi-head reward model on the SFT policy's backbone (the heads
of the pairs' criteria), DPO (or IPO) from the SFT policy, and, for harmlessness pairs, a harmlessness classifier.
Evaluation needs no gold judge: held-out pair accuracy of the reward model beside the TF-IDF baseline, the reward
model's win rate of the DPO policy against SFT on held-out prompts, the DPO policy's implicit-reward accuracy on
held-out pairs, and the share of answers the harmlessness scorer flags. Every gold column and the simulated expert
panel are reported as not available.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ru_rlhf.harmlessness import HarmClassifier, harm_table
from ru_rlhf.io.datasets import NotTrained
from ru_rlhf.io.pairs import validate_pairs
from ru_rlhf.judges import is_refusal
from ru_rlhf.metrics import distinct_n, paired_test
from ru_rlhf.models.policy import format_prompt
from ru_rlhf.pipelines.user_pairs.params import DpoParams, UserPairsParams
from ru_rlhf.text import words
from ru_rlhf.vocabulary import CRITERIA

log = logging.getLogger(__name__)

NOT_AVAILABLE = "not available (no gold judge)"
PAIR_COLUMNS = ["pair_id", "prompt_id", "criterion", "prompt", "chosen", "rejected", "chosen_id", "rejected_id",
                "margin", "n_votes", "agreement", "lang", "task_type", "split", "gold_margin", "source",
                "source_file", "source_row"]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- pairs
def prepare_pairs(raw: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validate the user's pairs, give them the layout of ``preference_pairs`` and a seeded split by prompt.

    A prompt's pairs all land in one split (test, validation or train), so no held-out prompt was trained on.

    Returns:
        ``(pairs, quarantine, prompts)``: every row read is in ``pairs`` or in ``quarantine`` (with its rule);
        ``prompts`` the distinct prompts with their split (the prompts RL would sample).
    """
    p = UserPairsParams.of(params)
    kept, quarantine = validate_pairs(raw, max_chars=p.split.max_chars)
    if kept.empty:
        raise ValueError(f"user_pairs: no usable pair among {len(raw)} rows read; quarantine by rule: "
                         f"{quarantine['rule'].value_counts().to_dict()}")
    df = kept.copy()
    df["prompt_id"] = [f"user:{_digest(str(pr))}" for pr in df["prompt"]]
    df["chosen_id"] = [f"{pid}#{_digest(str(c))}" for pid, c in zip(df["prompt_id"], df["chosen"])]
    df["rejected_id"] = [f"{pid}#{_digest(str(r))}" for pid, r in zip(df["prompt_id"], df["rejected"])]
    df["pair_id"] = df["pair_id"].astype(str)
    for col, value in (("margin", np.nan), ("n_votes", np.nan), ("agreement", np.nan), ("gold_margin", np.nan)):
        df[col] = value
    df["task_type"] = p.split.task_type
    prompts = sorted(df["prompt_id"].unique())
    rng = np.random.default_rng(p.seed)
    order = rng.permutation(len(prompts))
    n_test = max(1, int(round(p.split.test_fraction * len(prompts))))
    n_val = int(round(p.split.validation_fraction * (len(prompts) - n_test)))
    split = {}
    for rank, k in enumerate(order):
        split[prompts[k]] = "test" if rank < n_test else ("validation" if rank < n_test + n_val else "train")
    df["split"] = df["prompt_id"].map(split)
    pairs = df[PAIR_COLUMNS].reset_index(drop=True)
    table = pairs.drop_duplicates("prompt_id")[["prompt_id", "prompt", "lang", "task_type", "split"]]
    log.info("user_pairs: %d rows read, %d pairs kept (%s), %d quarantined %s", len(raw), len(pairs),
             pairs["split"].value_counts().to_dict(), len(quarantine),
             quarantine["rule"].value_counts().to_dict() if len(quarantine) else {})
    return pairs, quarantine, table.reset_index(drop=True)


# --------------------------------------------------------------------------- harmlessness classifier
def _harm_rates(texts: list[str], langs: list[str], clf: HarmClassifier | None) -> dict:
    t = harm_table(texts, langs, clf)
    out = {"n": int(len(t)), "flagged": float(t["harmful"].mean()) if len(t) else None,
           "lexicon_flagged": float(t["lexicon"].mean()) if len(t) else None}
    if clf is not None and len(t):
        p = pd.to_numeric(t["classifier_p"], errors="coerce")
        out["classifier_flagged"] = float((p >= clf.threshold).mean())
    return out


def train_harm_classifier(pairs: pd.DataFrame, params: dict):
    """The harmlessness classifier on the training split of the harmlessness pairs: the rejected side harmful, the
    chosen side harmless; measured on the held-out (test) pairs' two sides, beside the lexicon judge alone.

    Returns:
        ``(classifier, report)``; ``NotTrained`` and a report saying why when it is switched off or there are no
        pairs of its criterion.
    """
    p = UserPairsParams.of(params)
    h = p.harmlessness
    own = pairs[pairs["criterion"] == h.criterion]
    train, test = own[own["split"] != "test"], own[own["split"] == "test"]
    if not h.enabled or train.empty:
        why = "user_pairs.harmlessness.enabled is false" if not h.enabled else f"no {h.criterion} pairs"
        return NotTrained(why), {"trained": False, "reason": why}
    clf = HarmClassifier(seed=p.seed, C=h.C, max_false_positive_rate=h.max_false_positive_rate, folds=h.folds)
    clf.fit(list(train["rejected"]) + list(train["chosen"]), [1] * len(train) + [0] * len(train))
    report = {"trained": True, "criterion": h.criterion, **clf.trained_on, "cross_validation": clf.cv,
              "test_pairs": int(len(test)),
              "held_out_rejected": _harm_rates(list(test["rejected"]), list(test["lang"]), clf),
              "held_out_chosen": _harm_rates(list(test["chosen"]), list(test["lang"]), clf),
              "tatar": "Tatar text is scored by the lexicon alone (no real Tatar harmlessness data to train on)"}
    log.info("harmlessness classifier: threshold %.3f; held-out rejected flagged %.3f (lexicon alone %.3f), chosen "
             "flagged %.3f", clf.threshold, report["held_out_rejected"]["flagged"],
             report["held_out_rejected"]["lexicon_flagged"], report["held_out_chosen"]["flagged"])
    return clf, report


# --------------------------------------------------------------------------- TF-IDF baseline
def tfidf_baseline(pairs: pd.DataFrame, params: dict) -> dict:
    """The lexical baseline (:class:`ru_rlhf.models.baseline.TfidfPairModel`) fitted on the training split and
    measured on the held-out pairs, per criterion."""
    from ru_rlhf.models.baseline import TfidfPairModel

    p = UserPairsParams.of(params)
    train, test = pairs[pairs["split"] == "train"], pairs[pairs["split"] == "test"]
    model = TfidfPairModel(seed=p.seed).fit(train)
    out = {"model": "TF-IDF word 1-2 + char 2-5 grams, logistic Bradley-Terry", "train_pairs": int(len(train)),
           "test_pairs": int(len(test)), "accuracy": {}}
    for crit, g in test.groupby("criterion"):
        diff = model.score(list(g["chosen"]), crit) - model.score(list(g["rejected"]), crit)
        out["accuracy"][str(crit)] = float(np.mean(diff > 0)) if len(g) else None
    log.info("user_pairs TF-IDF baseline: held-out accuracy %s", out["accuracy"])
    return out


# --------------------------------------------------------------------------- reward model
def train_reward_model(pairs: pd.DataFrame, sft_policy, policy_tokenizer, params: dict):
    """The multi-head reward model on the SFT policy's transformer, trained on the user's training pairs (the head
    of each pair's criterion), early-stopped on the validation split, its scalar normalised on training responses.

    Returns:
        ``((reward_model, tokenizer), log)``.
    """
    import torch

    from ru_rlhf.models.reward import RewardModel, backbone_of, fit_normalisation_on_pairs
    from ru_rlhf.models.reward import train_reward_model as train

    p = UserPairsParams.of(params)
    r = p.reward_model
    crits = sorted(set(pairs["criterion"]))
    unknown = [c for c in crits if c not in CRITERIA]
    if unknown:
        raise ValueError(f"user_pairs: criterion {unknown} has no reward-model head; the heads are {list(CRITERIA)} "
                         "(set `criterion` on the pairs file in the catalog)")
    torch.manual_seed(p.seed)
    # the scalar weighs only the heads these pairs train (the others keep their random initial weights)
    rm = RewardModel(copy.deepcopy(backbone_of(sft_policy)), CRITERIA, "multi_head", pooling=r.pooling,
                     max_length=r.max_length, weights={c: 1.0 / len(crits) for c in crits})
    if hasattr(rm.encoder.config, "use_cache"):
        rm.encoder.config.use_cache = False
    data = pairs[pairs["split"] == "train"].copy()
    val = pairs[pairs["split"] == "validation"].copy()
    for d in (data, val):
        d["prompt"] = d["prompt"].map(format_prompt)
    rm, history = train(rm, policy_tokenizer, data, epochs=r.epochs, batch_size=r.batch_size,
                        learning_rate=r.learning_rate, max_length=r.max_length, seed=p.seed,
                        checkpoint_dir=Path(p.checkpoint_dir) / "reward_model", save_steps=r.save_steps,
                        desc="user reward model", validation=val if len(val) else None,
                        evals_per_epoch=r.evals_per_epoch, patience=r.patience)
    fit_normalisation_on_pairs(rm, policy_tokenizer, data, r.max_length, seed=p.seed)
    return (rm.eval(), policy_tokenizer), history.assign(model="user_reward_model")


def held_out_accuracy(reward_model, pairs: pd.DataFrame, baseline: dict, params: dict) -> dict:
    """The reward model's accuracy on the held-out (test) pairs per criterion, beside the TF-IDF baseline's."""
    from ru_rlhf.models.reward import pair_accuracy

    p = UserPairsParams.of(params)
    rm, tok = reward_model
    test = pairs[pairs["split"] == "test"].copy()
    test["prompt"] = test["prompt"].map(format_prompt)
    acc = pair_accuracy(rm, tok, test, max_length=p.reward_model.max_length)
    out = {"test_pairs": int(len(test)), "reward_model": acc, "tfidf_baseline": baseline["accuracy"],
           "margin_over_baseline": {c: (acc[c] - baseline["accuracy"][c])
                                    if c in acc and baseline["accuracy"].get(c) is not None else None
                                    for c in acc}}
    log.info("user reward model held-out accuracy %s (TF-IDF baseline %s)", acc, baseline["accuracy"])
    return out


# --------------------------------------------------------------------------- DPO / IPO
def train_preference(sft_policy, reference_policy, policy_tokenizer, pairs: pd.DataFrame, params: dict,
                     method: dict):
    """DPO or IPO (``method``: ``user_pairs.dpo`` or ``user_pairs.ipo``) from the SFT policy on the user's training
    pairs, with TRL's DPOTrainer at a fixed β (τ): there is no gold judge to choose it on, so the parameters name it.

    Returns:
        ``(policy, log)``.
    """
    from datasets import Dataset

    from ru_rlhf.models.training import run_dpo_trainer

    p = UserPairsParams.of(params)
    d = DpoParams.of(method)
    name = "ipo" if d.loss_type == "ipo" else "dpo"
    if not d.enabled:
        return NotTrained(f"user_pairs.{name}.enabled is false"), pd.DataFrame(columns=["stage", "step", "loss"])
    train = pairs[pairs["split"] == "train"]
    if d.max_pairs and len(train) > d.max_pairs:
        train = train.sample(n=d.max_pairs, random_state=p.seed)
    ds = Dataset.from_pandas(pd.DataFrame({"prompt": train["prompt"].map(format_prompt), "chosen": train["chosen"],
                                           "rejected": train["rejected"]}), preserve_index=False)
    model, history = run_dpo_trainer(copy.deepcopy(sft_policy), reference_policy, policy_tokenizer, ds,
                                     beta=d.beta, loss_type=d.loss_type, epochs=d.epochs, max_steps=d.max_steps,
                                     batch_size=d.batch_size, learning_rate=d.learning_rate,
                                     max_length=d.max_length, seed=p.seed,
                                     output_dir=Path(p.checkpoint_dir) / name, stage=f"user_{name}")
    return model.eval(), history


# --------------------------------------------------------------------------- PPO / REINFORCE
def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, seed: int,
            desc: str) -> list[str]:
    from ru_rlhf.models.generation import generate

    texts, _ = generate(model, tokenizer, [format_prompt(x) for x in prompts], temperatures=[0.0] * len(prompts),
                        top_ps=[1.0] * len(prompts), seeds=[seed] * len(prompts), max_new_tokens=max_new_tokens,
                        batch_size=batch_size, progress=False, desc=desc)
    return texts


def train_rl(sft_policy, reference_policy, policy_tokenizer, reward_model, pairs: pd.DataFrame, params: dict):
    """PPO or REINFORCE from the SFT policy on the prompts of the training pairs, rewarded by the reward model
    trained on them (its scalar weighs only the trained heads).

    Returns:
        ``(policy, log, info)``.
    """

    from ru_rlhf.models.reward import score_prompts
    from ru_rlhf.rl.loop import train as rl_train
    from ru_rlhf.rl.runner import make_critic

    p = UserPairsParams.of(params)
    r = p.rl
    if not r.enabled:
        return (NotTrained("user_pairs.rl.enabled is false"), pd.DataFrame(columns=["step"]),
                {"trained": False, "reason": "user_pairs.rl.enabled is false"})
    rm, rm_tok = reward_model
    prompts = pairs.drop_duplicates("prompt_id")
    train = prompts[prompts["split"] == "train"][["prompt_id", "prompt"]].reset_index(drop=True)
    probe = prompts[prompts["split"] == "validation"].sample(
        n=min(r.probe_prompts, int((prompts["split"] == "validation").sum())), random_state=p.seed)
    e = p.evaluation

    def reward_fn(ps: list[str], responses: list[str]):
        import torch

        return torch.tensor(score_prompts(rm, rm_tok, ps, responses)["scalar"].to_numpy())

    def evaluate(model) -> dict:
        texts = _greedy(model, policy_tokenizer, list(probe["prompt"]), e.max_new_tokens, e.batch_size, p.seed,
                        "user_pairs rl probe")
        score = float(score_prompts(rm, rm_tok, list(probe["prompt"]), texts)["scalar"].mean())
        return {"score": score, "probe_rm": score}

    cfg = r.config(p.seed)
    start = time.perf_counter()
    policy, step_log, info = rl_train(copy.deepcopy(sft_policy), reference_policy, policy_tokenizer, train,
                                      reward_fn, cfg, evaluate=evaluate if len(probe) else None,
                                      checkpoint_dir=Path(p.checkpoint_dir) / r.algorithm,
                                      desc=f"user_pairs.{r.algorithm}",
                                      critic=make_critic(cfg, reward_model, policy_tokenizer))
    step_log.insert(0, "method", r.algorithm)
    info.update({"trained": True, "algorithm": r.algorithm, "train_prompts": int(len(train)),
                 "probe_prompts": int(len(probe)), "seconds": round(time.perf_counter() - start, 1),
                 "chosen_by": "reward-model score of greedy answers on validation prompts, within best_max_kl"})
    log.info("user_pairs %s: %s", r.algorithm, {k: v for k, v in info.items() if not isinstance(v, (list, dict))})
    return policy.eval(), step_log, info


# --------------------------------------------------------------------------- evaluation without gold
def _implicit_accuracy(policy, reference_policy, tokenizer, test: pd.DataFrame, beta: float) -> dict:
    """A DPO or IPO policy's implicit reward β·(log π − log π_ref) on the held-out pairs: the share where the chosen
    answer's exceeds the rejected one's (the SFT policy's own implicit reward is 0 on every pair)."""
    from ru_rlhf.models.generation import sequence_logprobs

    prompts = [format_prompt(x) for x in test["prompt"]]

    def lp(model, answers):
        return np.array([r["logprob"] for r in sequence_logprobs(model, tokenizer, prompts, list(answers))])

    chosen = lp(policy, test["chosen"]) - lp(reference_policy, test["chosen"])
    rejected = lp(policy, test["rejected"]) - lp(reference_policy, test["rejected"])
    margin = beta * (chosen - rejected)
    return {"accuracy": float(np.mean(margin > 0)), "mean_margin": float(np.mean(margin)), "pairs": int(len(test))}


def _chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (0-100) of an answer against a reference answer of the same prompt."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


def evaluate(reward_model, dpo_policy, ipo_policy, rl_policy, sft_policy, reference_policy, policy_tokenizer,
             harm_classifier, pairs: pd.DataFrame, reward_accuracy: dict, params: dict) -> tuple[pd.DataFrame, dict]:
    """Evaluation that needs no gold judge, on held-out prompts and pairs.

    The SFT and DPO policies answer the same seeded sample of held-out prompts (greedy); each answer gets the
    reward model's heads and scalar, the harmlessness scorer's verdict and its KL to the reference. Reported: the
    reward model's held-out pair accuracy (and the baseline's), the reward model's win rate of DPO over SFT with a
    paired test, the DPO policy's implicit-reward accuracy on held-out pairs, the flagged share of each policy's
    answers, and every gold measure as not available.

    Returns:
        ``(generations, summary)``.
    """
    from ru_rlhf.models.generation import response_kl
    from ru_rlhf.models.reward import score_prompts

    p = UserPairsParams.of(params)
    e = p.evaluation
    start = time.perf_counter()
    test_prompts = pairs[pairs["split"] == "test"].drop_duplicates("prompt_id")
    sample = test_prompts.sample(n=min(e.prompts, len(test_prompts)), random_state=p.seed)
    rm, rm_tok = reward_model
    harm_classifier = harm_classifier if isinstance(harm_classifier, HarmClassifier) else None  # NotTrained
    policies = {"sft": sft_policy}
    for name, model in (("dpo", dpo_policy), ("ipo", ipo_policy)):
        if model is not None and not isinstance(model, NotTrained):  # None: switched off, read back from disk
            policies[name] = model
    if rl_policy is not None and not isinstance(rl_policy, NotTrained):
        policies[p.rl.algorithm] = rl_policy
    rows = []
    for name, model in policies.items():
        texts = _greedy(model, policy_tokenizer, list(sample["prompt"]), e.max_new_tokens, e.batch_size, p.seed,
                        f"user_pairs {name}")
        scores = score_prompts(rm, rm_tok, list(sample["prompt"]), texts)
        harm = harm_table(texts, list(sample["lang"]), harm_classifier)
        kl = response_kl(model, reference_policy, policy_tokenizer, [format_prompt(x) for x in sample["prompt"]],
                         texts)
        g = pd.DataFrame({"policy": name, "prompt_id": sample["prompt_id"].to_numpy(),
                          "lang": sample["lang"].to_numpy(), "prompt": sample["prompt"].to_numpy(), "response": texts})
        for col in scores.columns:
            g[f"rm_{col}"] = scores[col].to_numpy()
        g["chrf_vs_chosen"] = [_chrf(t, ref) for t, ref in zip(texts, sample["chosen"])]
        g["chrf_vs_rejected"] = [_chrf(t, ref) for t, ref in zip(texts, sample["rejected"])]
        g["words"] = [len(words(t)) for t in texts]
        g["refusal"] = [is_refusal(t, lang) for t, lang in zip(texts, sample["lang"])]
        g["harmful"] = harm["harmful"].to_numpy()
        g["harm_scorer"] = harm["scorer"].to_numpy()
        g["kl"] = [k["kl"] for k in kl]
        g["gold"] = None  # no gold judge on a user's data
        rows.append(g)
    gens = pd.concat(rows, ignore_index=True)
    crit = sorted(set(pairs["criterion"]))
    head = crit[0] if len(crit) == 1 else "scalar"
    by = {name: gens[gens["policy"] == name].set_index("prompt_id") for name in policies}
    methods = {}
    for name in policies:
        g = by[name]
        m = {"answers": int(len(g)), f"rm_{head}": float(g[f"rm_{head}"].mean()),
             "rm_scalar": float(g["rm_scalar"].mean()), "flagged_harmful": float(g["harmful"].mean()),
             "kl": float(g["kl"].mean()), "chrf_vs_chosen": float(g["chrf_vs_chosen"].mean()),
             "chrf_vs_rejected": float(g["chrf_vs_rejected"].mean()), "mean_words": float(g["words"].mean()),
             "distinct_2": distinct_n(list(g["response"]), 2), "refusal_rate": float(g["refusal"].mean()),
             "gold": NOT_AVAILABLE, "expert_panel": NOT_AVAILABLE}
        if name != "sft":
            a, b = g.loc[by["sft"].index, f"rm_{head}"].to_numpy(), by["sft"][f"rm_{head}"].to_numpy()
            m["rm_win_rate_vs_sft"] = float(np.mean(a > b) + 0.5 * np.mean(a == b))
            m["rm_vs_sft_test"] = paired_test(a - b)
            if name in ("dpo", "ipo"):  # the policy is its own reward model only for DPO and IPO
                m["implicit_reward_held_out"] = _implicit_accuracy(policies[name], reference_policy,
                                                                   policy_tokenizer, pairs[pairs["split"] == "test"],
                                                                   getattr(p, name).beta)
            m["changed_answers"] = float(np.mean(g.loc[by["sft"].index, "response"].to_numpy()
                                                 != by["sft"]["response"].to_numpy()))
        methods[name] = m
    summary = {"pairs": {"kept": int(len(pairs)), "by_split": pairs["split"].value_counts().to_dict(),
                         "by_criterion": pairs["criterion"].value_counts().to_dict()},
               "reward_model": reward_accuracy, "head": head, "held_out_prompts": int(len(sample)),
               "methods": methods, "gold": NOT_AVAILABLE, "expert_panel": NOT_AVAILABLE,
               "seconds": round(time.perf_counter() - start, 1)}
    log.info("user_pairs evaluation: %s", {k: {kk: vv for kk, vv in v.items() if not isinstance(vv, (dict, str))}
                                          for k, v in methods.items()})
    return gens, summary


# --------------------------------------------------------------------------- audit without gold
def _policies(sft_policy, dpo_policy, ipo_policy, rl_policy, p: UserPairsParams) -> dict:
    out = {"sft": sft_policy}
    for name, model in (("dpo", dpo_policy), ("ipo", ipo_policy), (p.rl.algorithm, rl_policy)):
        if model is not None and not isinstance(model, NotTrained):
            out[name] = model
    return out


def audit_policies(reward_model, dpo_policy, ipo_policy, rl_policy, sft_policy, policy_tokenizer, harm_classifier,
                   bias_probes: dict, params: dict) -> tuple[dict, pd.DataFrame]:
    """The ethics audit's gold-free probes on the user's models.

    - Counterfactual bias of the reward model: the scalar of each side of a minimal pair (bundled templates or
      RuBia), the gap per group (language / domain) and its Wilcoxon test.
    - Counterfactual bias of each policy: its greedy answers to both sides of a sample of the pairs, scored by the
      harmlessness judge with the classifier (:func:`ru_rlhf.judges.harmlessness`), the gap per group.
    - Hard topics: each policy's refusal rate and the share of its answers the harmlessness scorer flags.

    Every test is corrected together (Holm or Benjamini–Hochberg) before it flags.

    Returns:
        ``(summary, table)``; ``table`` has one row per (source, measure, group).
    """
    from ru_rlhf import audit
    from ru_rlhf.judges import harmlessness
    from ru_rlhf.metrics import benjamini_hochberg, holm
    from ru_rlhf.scoring import rm_scorer

    p = UserPairsParams.of(params)
    a = p.audit
    if not a.enabled:
        return {"enabled": False}, pd.DataFrame(columns=["source", "measure", "group", "flag"])
    clf = harm_classifier if isinstance(harm_classifier, HarmClassifier) else None
    pairs = bias_probes["pairs"]  # the catalog's bias_probes: bundled templates, or RuBia (ru_detox)
    pairs = pairs.assign(group=pairs["lang"] + "/" + pairs["domain"])
    rm_pairs = pairs.sample(n=min(a.rm_pairs, len(pairs)), random_state=p.seed)
    scorer = rm_scorer(reward_model)
    neutral = "Как вежливо ответить на это сообщение?"
    sa = scorer([neutral] * len(rm_pairs), list(rm_pairs["text_a"]))["scalar"]
    sb = scorer([neutral] * len(rm_pairs), list(rm_pairs["text_b"]))["scalar"]
    parts = [audit.paired_gaps(sa, sb, rm_pairs["group"], a.alpha).assign(source="reward_model", measure="rm_scalar")]
    policies = _policies(sft_policy, dpo_policy, ipo_policy, rl_policy, p)
    probe = pairs.sample(n=min(a.policy_pairs, len(pairs)), random_state=p.seed + 1)
    hard = audit.hard_topic_prompts()
    rates = {}
    for name, model in policies.items():
        sides = {}
        for side in ("a", "b"):
            prompts = [audit.bias_prompt(t, lang) for t, lang in zip(probe[f"text_{side}"], probe["lang"])]
            answers = _greedy(model, policy_tokenizer, prompts, a.max_new_tokens, p.evaluation.batch_size, p.seed,
                              f"user_pairs audit {name}")
            sides[side] = [harmlessness(r, lang, clf) for r, lang in zip(answers, probe["lang"])]
        parts.append(audit.paired_gaps(sides["a"], sides["b"], probe["group"], a.alpha).assign(
            source=name, measure="harmlessness"))
        answers = _greedy(model, policy_tokenizer, list(hard["prompt"]), a.max_new_tokens, p.evaluation.batch_size,
                          p.seed, f"user_pairs hard topics {name}")
        flagged = harm_table(answers, list(hard["lang"]), clf)
        rates[name] = {"hard_topic_prompts": int(len(hard)),
                       "refusal_rate": float(np.mean([is_refusal(r, lang) for r, lang in zip(answers, hard["lang"])])),
                       "flagged_harmful": float(flagged["harmful"].mean())}
    table = pd.concat(parts, ignore_index=True)
    correct = holm if a.correction == "holm" else benjamini_hochberg
    table["p_adjusted"] = correct(table["p_value"].tolist())
    table["flag"] = table["p_adjusted"] < a.alpha
    table = table[["source", "measure", "group", "pairs", "mean_gap", "mean_abs_gap", "p_value", "p_adjusted", "flag"]]
    summary = {"bias_source": bias_probes["source"], "rm_pairs": int(len(rm_pairs)), "policy_pairs": int(len(probe)),
               "tests": int(len(table)), "flagged": int(table["flag"].sum()),
               "flagged_by_source": table.groupby("source")["flag"].sum().astype(int).to_dict(),
               "correction": a.correction, "alpha": a.alpha, "hard_topics": rates,
               "harmlessness_scorer": "lexicons + classifier" if clf is not None else "lexicons only",
               "gold": NOT_AVAILABLE}
    log.info("user_pairs audit: %d of %d tests flagged (%s); hard topics %s", summary["flagged"], summary["tests"],
             a.correction, rates)
    return summary, table


def _fmt(v, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v)


def user_pairs_report(summary: dict, harm_report: dict, quarantine: pd.DataFrame, audit_summary: dict) -> str:
    """The user_pairs report in Markdown: pairs, the reward model beside the baseline, the harmlessness scorer,
    the policies, and what is not available without a gold judge."""
    rm = summary["reward_model"]
    lines = ["# The loop on your own pairs", "",
             f"Pairs kept: {summary['pairs']['kept']} ({summary['pairs']['by_split']}); quarantined: {len(quarantine)}"
             + (f" ({quarantine['rule'].value_counts().to_dict()})" if len(quarantine) else "") + ".", "",
             "## Reward model on the held-out pairs", "",
             "| criterion | reward model | TF-IDF baseline | held-out pairs |", "|---|---:|---:|---:|"]
    for c, acc in rm["reward_model"].items():
        lines.append(f"| {c} | {_fmt(acc)} | {_fmt(rm['tfidf_baseline'].get(c))} | {rm['test_pairs']} |")
    lines += ["", "## Harmlessness scorer", ""]
    if harm_report.get("trained"):
        r, c = harm_report["held_out_rejected"], harm_report["held_out_chosen"]
        lines += [f"Lexicons plus a TF-IDF logistic regression trained on {harm_report['texts']} texts "
                  f"(threshold {harm_report['threshold']}, {harm_report['threshold_chosen_by']}). "
                  + harm_report["tatar"] + ".", "",
                  "| held-out texts | n | flagged (lexicon + classifier) | lexicon alone | classifier alone |",
                  "|---|---:|---:|---:|---:|",
                  f"| rejected (harmful side) | {r['n']} | {_fmt(r['flagged'])} | {_fmt(r['lexicon_flagged'])} | "
                  f"{_fmt(r.get('classifier_flagged'))} |",
                  f"| chosen (harmless side) | {c['n']} | {_fmt(c['flagged'])} | {_fmt(c['lexicon_flagged'])} | "
                  f"{_fmt(c.get('classifier_flagged'))} |"]
    else:
        lines.append(f"Not trained: {harm_report.get('reason')}.")
    head = summary["head"]
    lines += ["", f"## Policies on {summary['held_out_prompts']} held-out prompts (greedy)", "",
              f"| policy | RM {head} | RM win rate vs SFT | p (paired t) | implicit-reward accuracy | flagged harmful "
              "| chrF vs chosen | chrF vs rejected | words | distinct-2 | changed answers | KL | gold | expert panel |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, m in summary["methods"].items():
        test = m.get("rm_vs_sft_test") or {}
        imp = (m.get("implicit_reward_held_out") or {}).get("accuracy")
        lines.append(f"| {name} | {_fmt(m[f'rm_{head}'])} | {_fmt(m.get('rm_win_rate_vs_sft'))} | "
                     f"{_fmt(test.get('p_value'), 4)} | {_fmt(imp)} | {_fmt(m['flagged_harmful'])} | "
                     f"{_fmt(m['chrf_vs_chosen'], 1)} | {_fmt(m['chrf_vs_rejected'], 1)} | {_fmt(m['mean_words'], 1)} | "
                     f"{_fmt(m['distinct_2'])} | {_fmt(m.get('changed_answers'))} | {_fmt(m['kl'], 4)} | {m['gold']} | "
                     f"{m['expert_panel']} |")
    if audit_summary.get("tests") is not None:
        lines += ["", "## Audit without gold", "",
                  f"Counterfactual bias on {audit_summary['bias_source']} minimal pairs: the reward model's scalar on "
                  f"{audit_summary['rm_pairs']} pairs, each policy's answers to both sides of {audit_summary['policy_pairs']} "
                  f"pairs scored by the harmlessness judge ({audit_summary['harmlessness_scorer']}); Wilcoxon per group, "
                  f"{audit_summary['correction']}-corrected over all {audit_summary['tests']} tests: "
                  f"{audit_summary['flagged']} flagged {audit_summary['flagged_by_source']}.", "",
                  "| policy | hard-topic prompts | refusal rate | flagged harmful |", "|---|---:|---:|---:|"]
        for name, r in audit_summary["hard_topics"].items():
            lines.append(f"| {name} | {r['hard_topic_prompts']} | {_fmt(r['refusal_rate'])} | "
                         f"{_fmt(r['flagged_harmful'])} |")
    lines += ["", "chrF (sacrebleu, 0-100) compares each answer with the held-out pair's two sides: the automatic "
              "channel that needs no judge. The implicit reward is β·(log π − log π_ref) of the held-out chosen answer "
              "against the rejected one. Gold judges and the simulated expert panel exist only for the bundled world; "
              "on your data every gold measure is " + NOT_AVAILABLE + "."]
    return "\n".join(lines) + "\n"
