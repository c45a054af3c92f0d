"""Nodes of the publish pipeline: Hugging Face cards from this run's numbers, and hub-ready folders.

Every card (``huggingface_hub`` ``ModelCard`` / ``DatasetCard``, YAML metadata + markdown) says
what the artifact is for, what it was trained on, the criteria, this run's metrics, the biases and
limitations the ethics audit measured, the licence, and — for the default run — that the models
are small, trained from scratch on a synthetic corpus, with SIMULATED annotators and experts.
:func:`assemble_bundles` lays each artifact out in its own folder (the card as ``README.md`` plus
the saved files), ready for ``HfApi.upload_folder``; ``python -m ru_rlhf.publish`` pushes them
(or, with ``--dry-run``, lists what would be uploaded and its size).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from ru_rlhf.params import Params

log = logging.getLogger(__name__)

CRITERIA = ("helpfulness", "truthfulness", "harmlessness")
SKIP = {"checkpoints", "resume", "__pycache__"}


class Bundle(Params):
    kind: str  # dataset | reward_model | policy
    source: str
    method: str | None = None


class PublishParams(Params):
    publish_root: str
    hub_namespace: str = "your-hf-user"
    repo_prefix: str = "ru-rlhf"
    license: str = "mit"
    policy_tokenizer: str | None = None
    bundles: dict[str, Bundle]


def _f(v, nd: int = 3) -> str:
    try:
        return f"{float(v):.{nd}f}"
    except (TypeError, ValueError):
        return "n/a"


def _gain_words(al: dict) -> str:
    """The gain over SFT with its interval and the test's verdict (alignment_summary's ``_test``)."""
    ci = al.get("gold_gain_ci95") or [None, None]
    verdict = "better than SFT" if al.get("beats_sft") else "worse than SFT" if al.get("worse_than_sft") else \
        "not distinguishable from SFT"
    return (f" (gain over SFT {_f(al.get('gold_gain'))}, 95 % CI [{_f(ci[0])}, {_f(ci[1])}]; {verdict} by a paired "
            f"t-test, Holm-corrected across methods, p = {_f(al.get('gold_gain_p_holm'))})")


def _sci(x) -> str:
    """A small positive number in scientific notation (KLs of 1e-6 would print as 0.000)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else f"{v:.2e}" if v and abs(v) < 1e-3 else f"{v:.4f}"


def _limitations(small: bool, base: str | None = None) -> list[str]:
    lines = ["## Limitations", ""]
    if small and base is None:
        lines += ["- This is the project's **default run**: a small model (a few million parameters) built from a config",
                  "  and trained from scratch on the **synthetic bundled corpus** (`data/01_raw`), not a hub model."]
    elif small:
        lines += [f"- The policy started from `{base}` (loaded with `from_pretrained`) and was trained further on the",
                  "  **synthetic bundled corpus** (`data/01_raw`)."]
    if small:
        lines += ["- Preference labels come from **SIMULATED annotators** (with simulated length and sycophancy",
                  "  biases) and the expert channel from **SIMULATED experts**; no person labelled this data."]
    lines += ["- Russian and Tatar only; Tatar is the smaller share of the data.",
              "- Not for production use or for decisions about people: a research artifact of the RLHF loop."]
    return lines


def _correction(bias: pd.DataFrame) -> str:
    return str(bias["correction"].iloc[0]) if "correction" in bias and len(bias) else "multiple-comparison"


def _ethics_lines(bias: pd.DataFrame, hacking: pd.DataFrame, syc: pd.DataFrame, model: str | None,
                  rm: bool) -> list[str]:
    lines = ["## Biases and risks (from this run's ethics audit)", ""]
    if rm:
        b = bias[(bias["source"] == "reward_model") & bias["flag"]] if len(bias) else bias
        lines.append(f"- Counterfactual bias tests on the reward model: {len(bias[bias['source'] == 'reward_model']) if len(bias) else 0} "
                     f"run, {len(b)} flagged (Wilcoxon on paired swaps of gender / nationality, "
                     f"{_correction(bias)}-corrected across the audit's tests)"
                     + (": " + ", ".join(sorted(set(b['group'])))[:300] if len(b) else "."))
        if len(hacking):
            flagged = hacking[hacking["flag"]]
            lines.append(f"- Reward-hacking probes: {len(flagged)} of {len(hacking)} (probe × head) raised the score "
                         "without raising gold (one-sided Wilcoxon, Holm-corrected)" + (": " + ", ".join(sorted(set(flagged["perturbation"]))) if len(flagged) else "."))
    if model is not None and len(bias):
        b = bias[bias["source"] == model]
        if len(b):
            lines.append(f"- Counterfactual bias tests on this policy's answers: {len(b)} run, {int(b['flag'].sum())} "
                         f"flagged ({_correction(bias)}-corrected).")
    if model is not None and len(syc):
        s = syc[(syc["model"] == model) & (syc["lang"] == "all")]
        if len(s):
            lines.append(f"- Sycophancy: agrees with a false premise in {_f(100 * s['agree_rate'].iloc[0], 1)} % of probes "
                         f"(change vs SFT {_f(100 * s['agree_vs_sft'].iloc[0], 1)} points).")
    lines.append("- The full audit is `08_reporting/ethics_appendix.md` of the run.")
    return lines


def _front_matter(data) -> str:
    return f"---\n{data.to_yaml()}\n---\n"


def _backbone_words(reward_metrics: dict) -> str:
    """How the reward model's backbone is described on its card."""
    backbone, pooling = reward_metrics.get("backbone", "bert"), reward_metrics.get("pooling", "mean")
    what = ("the SFT policy's own transformer, without its LM head" if backbone == "policy"
            else "a separately pre-trained BERT encoder")
    return f"{what}; {pooling} pooling"


def write_cards(curation: dict, agreement: dict, reward_metrics: dict, alignment: dict, evaluation: dict,
                bias: pd.DataFrame, hacking: pd.DataFrame, sycophancy: pd.DataFrame, emissions: pd.DataFrame,
                sft_summary: dict, params: dict) -> dict[str, str]:
    """One Hugging Face card per bundle (markdown with YAML metadata), from this run's reports."""
    from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

    p = PublishParams.model_validate(params)
    small = True  # the configs this pipeline publishes are built from scratch (hub models are published by their owners)
    lic = p.license
    ds_repo = f"{p.hub_namespace}/{p.repo_prefix}-preference-pairs"
    cards: dict[str, str] = {}
    energy = {r.method: r for r in emissions.itertuples(index=False)} if len(emissions) else {}
    for name, b in p.bundles.items():
        if b.kind == "dataset":
            a_after = agreement.get("after", {})
            body = [f"# {p.repo_prefix}: preference pairs (Russian and Tatar)", "",
                    "Preference pairs in TRL's `prompt / chosen / rejected` format, per criterion (helpfulness,",
                    "truthfulness, harmlessness) and overall, with the pair's margin, vote count and agreement.", "",
                    "## Intended use", "", "Training and evaluating reward models and preference-optimised policies "
                    "(DPO, IPO, PPO via a reward model) for Russian and Tatar; studying annotator agreement and bias.", "",
                    "## Data", "",
                    f"- Pairs: {curation.get('pairs')} ({', '.join(f'{k}: {v}' for k, v in curation.get('by_criterion', {}).items())})",
                    f"- Overall pairs by split: {curation.get('overall_pairs_by_split')}; by language: {curation.get('overall_pairs_by_lang')}",
                    f"- Ratings: {curation.get('ratings')} from {agreement.get('annotators_after')} annotators "
                    f"({curation.get('ratings_by_source')}); quarantined ratings: {curation.get('quarantined_ratings')}",
                    "", "## Agreement (Krippendorff's α, ordinal, this run)", "",
                    "| criterion | α before the gate | α after |", "|---|---|---|"]
            body += [f"| {c} | {_f(agreement.get('before', {}).get(c))} | {_f(a_after.get(c))} |" for c in CRITERIA]
            biases = curation.get("biases", {})
            dropped = [d.get("annotator_id", str(d)) if isinstance(d, dict) else str(d) for d in agreement.get("dropped", [])]
            body += ["", f"Annotators dropped by the gate: {', '.join(dropped) or 'none'}; threshold "
                     f"{agreement.get('threshold')}.", "", "## Biases", "",
                     f"- Length: the panel chose the longer answer in {_f(biases.get('length', {}).get('panel_chooses_longer'))} "
                     f"of pairs, gold in {_f(biases.get('length', {}).get('gold_chooses_longer'))}.",
                     f"- Sycophancy: the panel chose the flattering answer in "
                     f"{_f(biases.get('sycophancy', {}).get('panel_chooses_flattering'))} of such pairs.",
                     f"- Panel agrees with gold on {_f(biases.get('panel_agrees_with_gold'))} of overall pairs.", "",
                     *_limitations(small), "", "## Licence", "", f"{lic.upper()} (the bundled corpus is generated by this project)."]
            data = DatasetCardData(language=["ru", "tt"], license=lic, task_categories=["text-generation"],
                                   tags=["rlhf", "preference", "dpo", "reward-model", "synthetic", "simulated-annotators"],
                                   pretty_name=f"{p.repo_prefix} preference pairs")
            cards[name] = str(DatasetCard(_front_matter(data) + "\n".join(body) + "\n"))
        elif b.kind == "reward_model":
            mh = reward_metrics.get("multi_head", {})
            cal = reward_metrics.get("calibration", {})
            body = [f"# {p.repo_prefix}: multi-head reward model (H, T, S)", "",
                    f"A transformer backbone ({_backbone_words(reward_metrics)}) with a linear head of three outputs "
                    "(helpfulness, truthfulness, harmlessness), trained with a Bradley–Terry loss per criterion; the "
                    "scalar reward is the weighted sum of z-scored heads (weights, pooling and normalisation in "
                    "`reward_config.json`).", "",
                    "## Intended use", "", "Scoring Russian and Tatar answers for PPO / best-of-n and for research on "
                    "reward over-optimisation. Load with `ru_rlhf.models.reward.load_reward_model`.", "",
                    "## Training data", "", f"[{ds_repo}](https://huggingface.co/datasets/{ds_repo}) (this run's pairs).", "",
                    "## Metrics (this run)", "", "| head | validation accuracy | validation AUC | test accuracy | test AUC |",
                    "|---|---|---|---|---|"]
            for c in CRITERIA:
                v, t = mh.get(c, {}).get("validation", {}), mh.get(c, {}).get("test", {})
                body.append(f"| {c} | {_f(v.get('accuracy'))} | {_f(v.get('auc'))} | {_f(t.get('accuracy'))} | {_f(t.get('auc'))} |")
            body += ["", f"Accuracy is on pairs whose gold scores differ; calibration (ECE) {_f(cal.get('ece_before'))} "
                     f"before, {_f(cal.get('ece_after'))} after Platt scaling.", "",
                     *_ethics_lines(bias, hacking, sycophancy, None, rm=True), "", *_limitations(small), "",
                     "## Licence", "", lic.upper()]
            data = ModelCardData(language=["ru", "tt"], license=lic, library_name="transformers",
                                 tags=["reward-model", "rlhf", "multi-head", "synthetic"], datasets=[ds_repo])
            cards[name] = str(ModelCard(_front_matter(data) + "\n".join(body) + "\n"))
        else:
            m = b.method or name
            ev = evaluation.get("models", {}).get(m, {})
            al = alignment.get(m, {})
            how = {"sft": "supervised fine-tuning on demonstrations (TRL `SFTTrainer`) after pre-training on the corpus",
                   "dpo": "DPO (TRL `DPOTrainer`, sigmoid loss) from the SFT policy",
                   "ipo": "IPO (TRL `DPOTrainer`, `loss_type=['ipo']`) from the SFT policy",
                   "coh": "Chain of Hindsight (TRL `SFTTrainer` on both answers of each preference pair, each after "
                          "its feedback phrase) from the SFT policy",
                   "ppo": "PPO (the project's own: value head, GAE, clipped ratio, adaptive KL) against the reward model",
                   "reinforce": "REINFORCE with a moving-average baseline against the reward model",
                   "cem": "the cross-entropy method: sample, keep the reward model's elite, SFT on it, iterate"}.get(m, m)
            facts = sft_summary.get("policy") or {}
            what = (f"`{facts['architecture']}`, {facts['parameters'] / 1e6:.2f} M parameters, "
                    + (f"from `{facts['base']}`" if facts.get("base") else "built from a config")
                    if facts else "Llama-style")
            body = [f"# {p.repo_prefix}: policy `{m}`", "", f"A causal LM ({what}) trained by {how}.", "",
                    "## Intended use", "", "Research on alignment methods for Russian and Tatar (comparison against SFT "
                    "on the same prompts). Not a general assistant.", "",
                    "## Training data", "", f"Demonstrations and [{ds_repo}](https://huggingface.co/datasets/{ds_repo}) "
                    "(preference methods) or the reward model's scores (PPO, REINFORCE, CEM).", "",
                    "## Metrics (this run, test prompts)", "",
                    f"- Gold reward: {_f(ev.get('gold'))}" + (_gain_words(al) if m != "sft" else ""),
                    f"- KL to the SFT reference (per token): {_sci(ev.get('kl'))}",
                    f"- Win rate against SFT (SIMULATED experts): {_f(ev.get('win_rate_vs_sft'))}",
                    f"- Expert Likert mean (SIMULATED experts): {_f(ev.get('likert_mean'))}",
                    f"- BERTScore F1 {_f(ev.get('bertscore_f1'))}, MAUVE {_f(ev.get('mauve'))}, trigger-phrase rate "
                    f"{_f(ev.get('trigger_rate'))}"]
            cue = al.get("inference_cue") or {}
            if cue:
                body.append("- At inference the prompt is followed by the positive feedback phrase ("
                            + ", ".join(f"{lang}: «{phrase}»" for lang, phrase in cue.items())
                            + "); it is in `config.json` (`ru_rlhf_inference_cue`) and the project's generators add it")
            if m == "sft":
                body.append(f"- QA answer rate {_f(sft_summary.get('qa_answer_rate'))}, validation perplexity "
                            f"{_f(sft_summary.get('sft_validation_perplexity'), 1)}")
            e = energy.get(m)
            if e is not None:
                body.append(f"- Training cost (CodeCarbon estimate): {e.seconds:.0f} s, {1000 * e.energy_kwh:.2f} Wh, "
                            f"{1000 * e.co2_kg:.2f} g CO₂ ({e.country})")
            base = facts.get("base")
            body += ["", *_ethics_lines(bias, hacking, sycophancy, m, rm=False), "", *_limitations(small, base), "",
                     "## Licence", "", lic.upper()]
            # `base_model` names a hub id only (a local folder means nothing on the hub)
            hub_base = base if base and not str(base).startswith((".", "/")) and not Path(base).exists() else None
            data = ModelCardData(language=["ru", "tt"], license=lic, library_name="transformers", pipeline_tag="text-generation",
                                 tags=["rlhf", m, "synthetic", *([facts["model_type"]] if facts.get("model_type") else [])],
                                 datasets=[ds_repo], **({"base_model": hub_base} if hub_base else {}))
            cards[name] = str(ModelCard(_front_matter(data) + "\n".join(body) + "\n"))
    return cards


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def assemble_bundles(cards: dict[str, str], params: dict) -> pd.DataFrame:
    """Write one folder per bundle under ``publish_root`` (card as README.md + the saved files).

    Each folder is written to a temporary sibling and renamed into place. Policies also get the
    tokenizer. Checkpoints are never copied.

    Returns:
        The manifest: ``bundle, repo_id, repo_type, file, bytes, sha256`` (one row per file).

    Raises:
        FileNotFoundError: a bundle's saved directory is missing (names it and what writes it).
    """
    p = PublishParams.model_validate(params)
    root = Path(p.publish_root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, b in p.bundles.items():
        src = Path(b.source)
        if not src.is_dir():
            raise FileNotFoundError(f"publish: {name}'s source {src} does not exist; run the pipeline that writes it first")
        tmp, final = root / f".{name}.tmp{os.getpid()}", root / name
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=lambda d, names: [n for n in names if n in SKIP or n.startswith(".")])
        if b.kind == "policy" and p.policy_tokenizer:
            for f in Path(p.policy_tokenizer).iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        (tmp / "README.md").write_text(cards[name], encoding="utf-8")
        old = root / f".{name}.old{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        repo_type = "dataset" if b.kind == "dataset" else "model"
        repo_id = f"{p.hub_namespace}/{p.repo_prefix}-{name}"
        for f in sorted(x for x in final.rglob("*") if x.is_file()):
            rows.append({"bundle": name, "repo_id": repo_id, "repo_type": repo_type,
                         "file": str(f.relative_to(final)), "bytes": f.stat().st_size, "sha256": _sha256(f)})
    manifest = pd.DataFrame(rows)
    log.info("publish: %d bundles, %d files, %.1f MB under %s", len(p.bundles), len(manifest),
             manifest["bytes"].sum() / 1e6 if len(manifest) else 0, root)
    return manifest
