"""DPO: the project's training call against a plain TRL script, same model, data and config, in one run.

    python benchmarks/bench_dpo.py [--env base] [--steps 30] [--repeats 2]

Both sides train a fresh copy of the env's SFT policy against its frozen reference on the same
DPO training pairs (the alignment node's selection: overall criterion, train split, ``max_pairs``),
with the same ``DPOConfig`` (the one :func:`ru_rlhf.models.training.run_dpo_trainer` builds). The
project's side is ``run_dpo_trainer`` as the ``alignment.dpo`` node calls it (run fingerprint,
resume check, NaN guard, history table); the plain side is ``DPOConfig`` + ``DPOTrainer`` +
``train()`` and nothing else. Runs alternate (project, plain, project, plain…); the ratio is of the
median times. Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="base")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ru_rlhf.models.policy import format_prompt, load_policy, load_tokenizer
    from ru_rlhf.models.training import run_dpo_trainer, trl_common_args

    data = ROOT / "data" / ("" if args.env == "base" else args.env)
    cfg = yaml.safe_load((ROOT / "conf" / "base" / "parameters_alignment.yml").read_text())["alignment"]
    dpo, seed = cfg["dpo"]["train"], cfg["common"]["seed"]
    pairs = pd.read_parquet(data / "03_primary" / "preference_pairs.parquet")
    pairs = pairs[(pairs["criterion"] == "overall") & (pairs["split"] == "train")]
    if len(pairs) > dpo["max_pairs"]:
        pairs = pairs.sample(n=dpo["max_pairs"], random_state=seed)
    ds = Dataset.from_pandas(pd.DataFrame({"prompt": pairs["prompt"].map(format_prompt), "chosen": pairs["chosen"],
                                           "rejected": pairs["rejected"]}), preserve_index=False)
    tok = load_tokenizer(data / "06_models" / "tokenizer")
    sft = load_policy(data / "06_models" / "sft_policy")
    ref = load_policy(data / "06_models" / "reference_policy")
    beta, bs, lr, max_length = dpo["grid"][0], dpo["batch_size"], dpo["learning_rate"], dpo.get("max_length", 512)

    def project(out: Path) -> float:
        t = time.perf_counter()
        run_dpo_trainer(copy.deepcopy(sft), ref, tok, ds, beta=beta, loss_type="sigmoid", epochs=1, batch_size=bs,
                        learning_rate=lr, max_length=max_length, seed=seed, output_dir=out, max_steps=args.steps,
                        resume=False)
        return time.perf_counter() - t

    def plain(out: Path) -> float:
        t = time.perf_counter()
        conf = DPOConfig(**trl_common_args(seed, out), beta=beta, loss_type=["sigmoid"], num_train_epochs=1,
                         max_steps=args.steps, per_device_train_batch_size=bs, learning_rate=lr,
                         lr_scheduler_type="linear", warmup_steps=0.1, logging_steps=5, save_strategy="steps",
                         save_steps=20, save_total_limit=2, max_length=max_length, eval_strategy="no")
        DPOTrainer(model=copy.deepcopy(sft), ref_model=ref, args=conf, train_dataset=ds, processing_class=tok).train()
        return time.perf_counter() - t

    times = {"project": [], "plain": []}
    tmp = Path(tempfile.mkdtemp())
    try:
        plain(tmp / "warmup")  # first-call costs (imports, tokenisation caches) paid by neither side
        for i in range(args.repeats):
            for name, fn in (("project", project), ("plain", plain)):
                out = tmp / f"{name}{i}"
                times[name].append(fn(out))
                shutil.rmtree(out, ignore_errors=True)
                print(name, f"{times[name][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["project"] / med["plain"]
    table = [("data", f"env {args.env}: {len(ds)} training pairs, batch {bs}, {args.steps} steps, beta {beta}"),
             ("model", f"the env's SFT policy, {sft.num_parameters() / 1e6:.2f}M parameters"),
             ("project (run_dpo_trainer), s", ", ".join(f"{t:.1f}" for t in times["project"])),
             ("plain TRL script, s", ", ".join(f"{t:.1f}" for t in times["plain"])),
             ("ratio project / plain (medians)", f"{ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")]
    for k, v in table:
        print(f"{k}: {v}")
    append_result("DPO: project node vs plain TRL", table)


if __name__ == "__main__":
    main()
