"""The A/B service behind the app: which policies answer, blind serving, votes, the retraining run.

Model ids never leave this module towards the client: :meth:`ABService.serve` returns a token and
the texts in a random order; the token maps to the hidden ids in the store.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ru_rlhf.app.store import MAX_PROMPT, FeedbackStore, VoteError

log = logging.getLogger(__name__)

METHODS = ("sft", "dpo", "ipo", "ppo", "reinforce", "cem")


@dataclass
class AppConfig:
    """Where the app finds its policies, prompts and store (the defaults are the base run's outputs)."""

    data_root: str = "data"
    store: str = "data/01_raw/feedback/votes.sqlite"
    responses: int = 3  # 2 or 3 per A/B page
    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.95
    admins: tuple[str, ...] = ("admin",)
    env: str = "base"
    policies: dict[str, str] = field(default_factory=dict)  # id -> directory (default: every trained policy)


def policy_dirs(data_root: str | Path) -> dict[str, Path]:
    """The SFT policy and every aligned policy that exists under ``data_root``."""
    root = Path(data_root) / "06_models"
    out = {"sft": root / "sft_policy"}
    out.update({m: root / "policies" / m for m in METHODS[1:]})
    return {k: v for k, v in out.items() if (v / "config.json").exists()}


class ABService:
    """Loads the policies once and serves blind A/B pages."""

    def __init__(self, config: AppConfig):
        from ru_rlhf.models.policy import load_policy, load_tokenizer

        self.config = config
        dirs = {k: Path(v) for k, v in config.policies.items()} or policy_dirs(config.data_root)
        if len(dirs) < 2:
            raise RuntimeError(f"the app needs at least two trained policies under {config.data_root}/06_models; "
                               "run `kedro run` (or at least the sft and alignment pipelines) first")
        self.tokenizer = load_tokenizer(Path(config.data_root) / "06_models" / "tokenizer")
        self.models = {k: load_policy(v) for k, v in dirs.items()}
        self.store = FeedbackStore(config.store)
        self._lock = threading.Lock()  # generation is not thread-safe on one model object
        prompts_path = Path(config.data_root) / "03_primary" / "prompts.parquet"
        self.prompts = (pd.read_parquet(prompts_path).query("split == 'test'").reset_index(drop=True)
                        if prompts_path.exists() else pd.DataFrame(columns=["prompt_id", "prompt"]))
        self.retrainer = Retrainer(config.env, config.data_root)
        log.info("app: %d policies, %d test prompts, store %s", len(self.models), len(self.prompts), config.store)

    def random_prompt(self, seed: int | None = None) -> tuple[str | None, str]:
        if self.prompts.empty:
            return None, ""
        r = self.prompts.iloc[random.Random(seed).randrange(len(self.prompts))]
        return str(r["prompt_id"]), str(r["prompt"])

    def serve(self, prompt: str, prompt_id: str | None = None) -> tuple[str, list[str]]:
        """Answers of 2–3 randomly drawn policies in a random order, and the token for the vote.

        Raises:
            VoteError: an empty or over-long prompt.
        """
        from ru_rlhf.models.generation import generate, stable_seed
        from ru_rlhf.models.policy import format_prompt

        prompt = (prompt or "").strip()
        if not prompt:
            raise VoteError("введите запрос или возьмите случайный (the prompt is empty)")
        if len(prompt) > MAX_PROMPT:
            raise VoteError(f"запрос длиннее {MAX_PROMPT} символов (the prompt is too long)")
        rng = random.SystemRandom()
        k = max(2, min(self.config.responses, len(self.models)))
        chosen = rng.sample(sorted(self.models), k)  # random policies in a random order
        seed = stable_seed(prompt)
        texts = []
        with self._lock:
            for m in chosen:
                out, _ = generate(self.models[m], self.tokenizer, [format_prompt(prompt)],
                                  temperatures=[self.config.temperature], top_ps=[self.config.top_p],
                                  seeds=[seed], max_new_tokens=self.config.max_new_tokens, batch_size=1,
                                  progress=False)
                texts.append(out[0] or "…")
        if prompt_id is None and not self.prompts.empty:  # a drawn test prompt keeps its id
            hit = self.prompts.loc[self.prompts["prompt"].str.strip() == prompt, "prompt_id"]
            prompt_id = str(hit.iloc[0]) if len(hit) else None
        token = self.store.serve(prompt, prompt_id, chosen, texts)
        return token, texts

    def vote(self, token: str, annotator: str, ratings: list[dict], choice: int, comment: str = "") -> int:
        return self.store.vote(token, annotator, ratings, choice, comment)


class Retrainer:
    """Runs ``preference_curation`` and ``reward_modeling`` in the background, one run at a time.

    When the run is done, ``state["metrics"]`` has the new reward model's test accuracy and AUC per
    head (from ``<data_root>/08_reporting/reward_model/metrics.json``).
    """

    def __init__(self, env: str = "base", data_root: str = "data", command: list[str] | None = None):
        self.env, self.data_root, self._command = env, data_root, command
        self._lock = threading.Lock()
        self.state = {"status": "idle", "started": None, "finished": None, "returncode": None, "log_tail": "",
                      "metrics": None}

    def command(self) -> list[str]:
        if self._command:
            return list(self._command)
        kedro = Path(sys.executable).with_name("kedro")
        return [str(kedro), "run", "--env", self.env, "--pipelines", "preference_curation,reward_modeling"]

    def metrics(self) -> dict | None:
        """Test accuracy and AUC per head of the reward model the last run wrote."""
        import json

        path = Path(self.data_root) / "08_reporting" / "reward_model" / "metrics.json"
        if not path.exists():
            return None
        m = json.loads(path.read_text(encoding="utf-8")).get("multi_head", {})
        return {h: {k: v.get("test", {}).get(k) for k in ("accuracy", "auc")} for h, v in m.items()
                if isinstance(v, dict)}

    def start(self) -> bool:
        """Start a run unless one is going; returns whether it started."""
        if not self._lock.acquire(blocking=False):
            return False
        self.state.update(status="running", started=time.time(), finished=None, returncode=None, log_tail="")

        def work():
            try:
                res = subprocess.run(self.command(), capture_output=True, text=True)
                self.state.update(returncode=res.returncode, log_tail=(res.stdout + res.stderr)[-2000:],
                                  status="done" if res.returncode == 0 else "failed")
                if res.returncode == 0:
                    self.state["metrics"] = self.metrics()
            except Exception as err:  # noqa: BLE001 - shown to the admin, not swallowed
                self.state.update(status="failed", log_tail=repr(err))
            finally:
                self.state["finished"] = time.time()
                self._lock.release()

        threading.Thread(target=work, daemon=True).start()
        return True

    def running(self) -> bool:
        return self.state["status"] == "running"
