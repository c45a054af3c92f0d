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
from pathlib import Path, PurePosixPath

import pandas as pd

from ru_rlhf.pipelines.publish.params import PublishParams
from ru_rlhf.templates import render
from ru_rlhf.vocabulary import CRITERIA

log = logging.getLogger(__name__)

SKIP = {"checkpoints", "resume", "__pycache__"}


def _f(v, nd: int = 3) -> str:
    try:
        return f"{float(v):.{nd}f}"
    except (TypeError, ValueError):
        return "n/a"


def _sci(x) -> str:
    """A small positive number in scientific notation (KLs of 1e-6 would print as 0.000)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else f"{v:.2e}" if v and abs(v) < 1e-3 else f"{v:.4f}"


def _correction(bias: pd.DataFrame) -> str:
    return str(bias["correction"].iloc[0]) if "correction" in bias and len(bias) else "multiple-comparison"


def _audit_facts(bias: pd.DataFrame, hacking: pd.DataFrame, syc: pd.DataFrame, model: str | None) -> dict:
    """What a card quotes from this run's ethics audit: for the reward model (``model`` None) its counterfactual
    tests and hacking probes; for a policy its answers' counterfactual tests and its sycophancy."""
    out = {"reward_model": model is None, "correction": _correction(bias), "policy_tests": None, "sycophancy": None}
    if model is None:
        rm = bias[bias["source"] == "reward_model"] if len(bias) else bias
        flagged = bias[(bias["source"] == "reward_model") & bias["flag"]] if len(bias) else bias
        hacked = hacking[hacking["flag"]] if len(hacking) else hacking
        out.update(rm_tests=len(rm), rm_flagged=len(flagged),
                   rm_flagged_groups=sorted(set(flagged["group"])) if len(flagged) else [],
                   hacking_probes=len(hacking), hacking_flagged=len(hacked),
                   hacked=sorted(set(hacked["perturbation"])) if len(hacked) else [])
        return out
    b = bias[bias["source"] == model] if len(bias) else bias
    if len(b):
        out["policy_tests"] = (len(b), int(b["flag"].sum()))
    s = syc[(syc["model"] == model) & (syc["lang"] == "all")] if len(syc) else syc
    if len(s):
        out["sycophancy"] = (100 * s["agree_rate"].iloc[0], 100 * s["agree_vs_sft"].iloc[0])
    return out


def write_cards(curation: dict, agreement: dict, reward_metrics: dict, alignment: dict, evaluation: dict,
                bias: pd.DataFrame, hacking: pd.DataFrame, sycophancy: pd.DataFrame, emissions: pd.DataFrame,
                sft_summary: dict, params: dict) -> dict[str, str]:
    """One Hugging Face card per bundle (YAML metadata and markdown from ``templates/<kind>_card.md.j2``), from
    this run's reports."""
    from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

    p = PublishParams.of(params)
    lic = p.license
    ds_repo = f"{p.hub_namespace}/{p.repo_prefix}-preference-pairs"
    energy = {r.method: r for r in emissions.itertuples(index=False)} if len(emissions) else {}
    # small: the configs this pipeline publishes are built from scratch (hub models are published by their owners)
    common = {"prefix": p.repo_prefix, "license": lic, "ds_repo": ds_repo, "small": True, "criteria": CRITERIA,
              "f": _f, "sci": _sci}
    cards: dict[str, str] = {}
    for name, b in p.bundles.items():
        if b.kind == "dataset":
            data = DatasetCardData(language=["ru", "tt"], license=lic, task_categories=["text-generation"],
                                   tags=["rlhf", "preference", "dpo", "reward-model", "synthetic", "simulated-annotators"],
                                   pretty_name=f"{p.repo_prefix} preference pairs")
            dropped = [d.get("annotator_id", str(d)) if isinstance(d, dict) else str(d)
                       for d in agreement.get("dropped", [])]
            cards[name] = str(DatasetCard(render(
                __package__, "dataset_card.md.j2", metadata=data.to_yaml(), curation=curation, agreement=agreement,
                biases=curation.get("biases", {}), dropped=dropped, **common)))
        elif b.kind == "reward_model":
            data = ModelCardData(language=["ru", "tt"], license=lic, library_name="transformers",
                                 tags=["reward-model", "rlhf", "multi-head", "synthetic"], datasets=[ds_repo])
            cards[name] = str(ModelCard(render(
                __package__, "reward_model_card.md.j2", metadata=data.to_yaml(), metrics=reward_metrics,
                heads=reward_metrics.get("multi_head", {}), calibration=reward_metrics.get("calibration", {}),
                audit=_audit_facts(bias, hacking, sycophancy, None), **common)))
        else:
            m = b.method or name
            facts = sft_summary.get("policy") or {}
            base = facts.get("base")
            # `base_model` names a hub id only (a local folder means nothing on the hub)
            hub_base = base if base and not str(base).startswith((".", "/")) and not Path(base).exists() else None
            data = ModelCardData(language=["ru", "tt"], license=lic, library_name="transformers", pipeline_tag="text-generation",
                                 tags=["rlhf", m, "synthetic", *([facts["model_type"]] if facts.get("model_type") else [])],
                                 datasets=[ds_repo], **({"base_model": hub_base} if hub_base else {}))
            al = alignment.get(m, {})
            cards[name] = str(ModelCard(render(
                __package__, "policy_card.md.j2", metadata=data.to_yaml(), method=m, facts=facts,
                evaluation=evaluation.get("models", {}).get(m, {}), alignment=al, cue=al.get("inference_cue") or {},
                sft=sft_summary, energy=energy.get(m), audit=_audit_facts(bias, hacking, sycophancy, m), **common)))
    return cards


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _folder_files(folder: Path) -> dict[str, Path]:
    """The files of a saved folder by their path relative to it, without checkpoints, resume state, caches and
    hidden files at any depth."""
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name in SKIP or f.name.startswith("."):
            continue
        if f.is_dir():
            files.update({f"{f.name}/{rel}": g for rel, g in _folder_files(f).items()})
        else:
            files[f.name] = f
    return files


def assemble_bundles(cards: dict[str, str], params: dict, **folders: Path) -> tuple[dict, pd.DataFrame]:
    """Lay out one folder per bundle: the card as README.md and the files of the saved folder it publishes;
    policies also get the tokenizer's files. Checkpoints are never copied.

    ``folders`` are the saved folders the catalog gives (the ``<dataset>_folder`` inputs, by dataset name); a
    bundle's ``source`` and ``policy_tokenizer`` name one. The ``publish_bundles`` dataset writes the folders.

    Returns:
        ``(bundles, manifest)``: ``{bundle: {file: the file to copy, or the card's text}}`` and the manifest,
        ``bundle, repo_id, repo_type, file, bytes, sha256`` (one row per file written).

    Raises:
        ValueError: a bundle's source (or the tokenizer) is not one of the saved folders the pipeline reads.
    """
    p = PublishParams.of(params)
    unknown = {b.source for b in p.bundles.values()} | ({p.policy_tokenizer} if p.policy_tokenizer else set())
    if unknown - set(folders):
        raise ValueError(f"publish: {sorted(unknown - set(folders))} are not saved folders the publish pipeline reads "
                         f"(bundle sources are one of {sorted(folders)})")
    bundles, rows = {}, []
    for name, b in p.bundles.items():
        files: dict[str, Path | str] = dict(_folder_files(Path(folders[b.source])))
        if b.kind == "policy" and p.policy_tokenizer:
            files.update({f.name: f for f in Path(folders[p.policy_tokenizer]).iterdir() if f.is_file()})
        files["README.md"] = cards[name]
        bundles[name] = files
        repo_type = "dataset" if b.kind == "dataset" else "model"
        repo_id = f"{p.hub_namespace}/{p.repo_prefix}-{name}"
        for rel in sorted(files, key=PurePosixPath):
            source = files[rel]
            text = source.encode("utf-8") if isinstance(source, str) else None
            rows.append({"bundle": name, "repo_id": repo_id, "repo_type": repo_type, "file": rel,
                         "bytes": len(text) if text is not None else source.stat().st_size,
                         "sha256": hashlib.sha256(text).hexdigest() if text is not None else _sha256(source)})
    manifest = pd.DataFrame(rows)
    log.info("publish: %d bundles, %d files, %.1f MB", len(p.bundles), len(manifest),
             manifest["bytes"].sum() / 1e6 if len(manifest) else 0)
    return bundles, manifest
