"""The A/B service behind the app: which policies answer, blind serving, votes, the retraining run.

Model ids never leave this module towards the client: :meth:`ABService.serve` returns a token and
the texts in a random order; the token maps to the hidden ids in the store.

Blind and honest pages: every page draws its own sampling seeds (``random.SystemRandom``), so the same prompt
does not give a policy the same text on every page (no fingerprinting a policy across pages), and a
page never shows two answers that read the same (:func:`ru_rlhf.text.same_text`): an answer equal to
one already on the page is drawn again with another seed, then from another policy, a bounded
number of times; a page with fewer different answers says so, and with one answer only it is not
votable.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ru_rlhf.app.catalog import POLICIES, env_catalog
from ru_rlhf.io.feedback_store import MAX_PROMPT, FeedbackStore, VoteError
from ru_rlhf.text import same_text

log = logging.getLogger(__name__)

class AppSetupError(RuntimeError):
    """The app cannot start (too few trained policies); the message says what to run."""


@dataclass
class AppConfig:
    """Where the app finds its policies, prompts and store (the defaults are the base run's outputs)."""

    data_root: str = "data"
    store: str | None = None  # the SQLite vote store (default: the env catalog's `app_feedback`, what curation reads)
    responses: int = 3  # 2 or 3 per A/B page
    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.95
    admins: tuple[str, ...] = ("admin",)
    env: str = "base"
    policies: dict[str, str] = field(default_factory=dict)  # id -> directory (default: every trained policy)
    seed_draws: int = 2  # samples (each with a new seed) of one policy before another policy is asked
    redraws: int = 4  # extra samples per page, at most, to replace answers that repeat one on the page


@dataclass
class ServedPage:
    """What one A/B page shows: the token a vote must name, the texts in display order, a note.

    ``token`` is empty when the page cannot be voted on (fewer than two different answers); ``note``
    says so, or that fewer answers than asked are shown. Nothing here names a policy.
    """

    token: str
    texts: list[str]
    note: str = ""

    @property
    def votable(self) -> bool:
        return bool(self.token)


class ABService:
    """Loads the policies once and serves blind A/B pages.

    The policies, the tokenizer and the prompts are the catalog entries of ``config.env`` (``sft_policy``,
    ``alignment.<method>.policy``, ``policy_tokenizer``, ``prompts``) under ``config.data_root``
    (:func:`ru_rlhf.app.catalog.env_catalog`); ``config.policies`` names other directories instead.

    Raises:
        StoreError: the store cannot be opened or written (checked first, before any model loads).
        AppSetupError: fewer than two trained policies.
    """

    def __init__(self, config: AppConfig):
        self.config = config
        self.catalog = env_catalog(config.env, config.data_root)
        self.store = FeedbackStore(config.store or self.catalog.get("app_feedback").path)
        self.store.check_writable()  # a read-only or impossible store stops the app now, not at the first vote
        self.models = self._policies()
        self.tokenizer = self.catalog.load("policy_tokenizer")
        self._lock = threading.Lock()  # generation is not thread-safe on one model object
        self.prompts = (self.catalog.load("prompts").query("split == 'test'").reset_index(drop=True)
                        if self.catalog.exists("prompts") else pd.DataFrame(columns=["prompt_id", "prompt"]))
        self.retrainer = Retrainer(config.env, config.data_root, catalog=self.catalog)
        log.info("app: %d policies, %d test prompts, store %s", len(self.models), len(self.prompts), self.store.path)

    def _policies(self) -> dict:
        """The policies to serve: every trained one in the catalog, or the directories ``config.policies`` names."""
        if self.config.policies:
            from ru_rlhf.models.policy import load_policy

            found = {k: Path(v) for k, v in self.config.policies.items()}
            load = load_policy
        else:  # a method its parameters switched off is saved as not trained: it loads as None
            found = {k: name for k, name in POLICIES.items() if self.catalog.exists(name)}
            load = self.catalog.load
        models = {k: load(v) for k, v in found.items()} if len(found) >= 2 else {}
        models = {k: m for k, m in models.items() if m is not None}
        if len(models) < 2:
            raise AppSetupError(f"the app needs at least two trained policies in the catalog of the env "
                                f"{self.config.env!r} under {self.config.data_root}; run `kedro run` (or at least "
                                "the sft and alignment pipelines) first")
        return models

    def random_prompt(self, seed: int | None = None) -> tuple[str | None, str]:
        if self.prompts.empty:
            return None, ""
        r = self.prompts.iloc[random.Random(seed).randrange(len(self.prompts))]
        return str(r["prompt_id"]), str(r["prompt"])

    def _sample(self, model_id: str, prompt: str, seed: int) -> str:
        from ru_rlhf.models.generation import generate
        from ru_rlhf.models.policy import policy_prompt

        # a Chain of Hindsight policy answers after its positive feedback phrase (policy_prompt adds it)
        out, _ = generate(self.models[model_id], self.tokenizer, [policy_prompt(self.models[model_id], prompt)],
                          temperatures=[self.config.temperature], top_ps=[self.config.top_p], seeds=[seed],
                          max_new_tokens=self.config.max_new_tokens, batch_size=1, progress=False)
        return out[0] or "…"

    def serve(self, prompt: str, prompt_id: str | None = None) -> ServedPage:
        """Different answers of 2–3 randomly drawn policies in a random order, and the token for the vote.

        Each sample has its own random seed (never derived from the prompt). An answer that reads the
        same as one already on the page (:func:`~ru_rlhf.text.same_text`) is drawn again: with another
        seed (``seed_draws`` samples per policy), then from another policy, at most ``redraws`` extra
        samples per page. Fewer different answers than asked: the page shows those and says so; one
        only: the page is not votable (no token, nothing recorded).

        Raises:
            VoteError: an empty or over-long prompt.
            StoreError: the store cannot record the page.
        """
        prompt = (prompt or "").strip()
        if not prompt:
            raise VoteError("введите запрос или возьмите случайный (the prompt is empty)")
        if len(prompt) > MAX_PROMPT:
            raise VoteError(f"запрос длиннее {MAX_PROMPT} символов (the prompt is too long)")
        rng = random.SystemRandom()
        k = max(2, min(self.config.responses, len(self.models)))
        pending = rng.sample(sorted(self.models), len(self.models))  # every policy, in a random order
        budget = k + max(0, self.config.redraws)
        chosen: list[str] = []
        texts: list[str] = []
        draws = repeats = 0
        with self._lock:
            while pending and len(texts) < k and draws < budget:
                m = pending.pop(0)
                for _ in range(max(1, self.config.seed_draws)):
                    if draws >= budget:
                        break
                    draws += 1
                    text = self._sample(m, prompt, rng.randrange(1, 2**31))
                    if not any(same_text(text, t) for t in texts):
                        chosen.append(m)
                        texts.append(text)
                        break
                    repeats += 1
        if repeats:
            log.info("serve: %d sample(s) repeated an answer already on the page; %d different answer(s) from %d "
                     "sample(s)", repeats, len(texts), draws)
        if len(texts) < 2:
            return ServedPage("", texts, "Все модели ответили на этот запрос одинаково: сравнивать нечего, оценка "
                                         "для этого запроса не принимается. Попробуйте другой запрос.")
        note = ""
        if len(texts) < k:
            note = (f"Показано ответов: {len(texts)} из {k}: остальные совпали с одним из показанных "
                    "(одинаковые ответы не показываются).")
        if prompt_id is None and not self.prompts.empty:  # a drawn test prompt keeps its id
            hit = self.prompts.loc[self.prompts["prompt"].str.strip() == prompt, "prompt_id"]
            prompt_id = str(hit.iloc[0]) if len(hit) else None
        token = self.store.serve(prompt, prompt_id, chosen, texts)
        return ServedPage(token, texts, note)

    def vote(self, token: str, annotator: str, ratings: list[dict], choice: int, comment: str = "") -> int:
        """Store the vote (see :meth:`FeedbackStore.vote`); the id it returns is not for the voter's page."""
        return self.store.vote(token, annotator, ratings, choice, comment)


class Retrainer:
    """Runs ``preference_curation`` and ``reward_modeling`` in the background, one run at a time.

    The run reads and writes ``data_root`` (``RU_RLHF_DATA_ROOT``, whatever the env's default). When it
    is done, ``state["metrics"]`` has the new reward model's test accuracy and AUC per head and
    ``state["training_data"]`` what it trained on: pairs by source and how many of the app's votes
    (from the catalog's ``reward_metrics``, ``08_reporting/reward_model/metrics.json``).
    """

    def __init__(self, env: str = "base", data_root: str = "data", command: list[str] | None = None,
                 catalog=None):
        self.env, self.data_root, self._command, self._catalog = env, data_root, command, catalog
        self._lock = threading.Lock()
        self.state = {"status": "idle", "started": None, "finished": None, "returncode": None, "log_tail": "",
                      "metrics": None, "training_data": None}

    def command(self) -> list[str]:
        if self._command:
            return list(self._command)
        kedro = Path(sys.executable).with_name("kedro")
        return [str(kedro), "run", "--env", self.env, "--pipelines", "preference_curation,reward_modeling"]

    def _report(self) -> dict | None:
        if self._catalog is None:
            self._catalog = env_catalog(self.env, self.data_root)
        return self._catalog.load("reward_metrics") if self._catalog.exists("reward_metrics") else None

    def metrics(self) -> dict | None:
        """Test accuracy and AUC per head of the reward model the last run wrote."""
        m = (self._report() or {}).get("multi_head")
        if m is None:
            return None
        return {h: {k: v["test"].get(k) for k in ("accuracy", "auc")} for h, v in m.items()
                if isinstance(v, dict) and isinstance(v.get("test"), dict)}

    def training_data(self) -> dict | None:
        """What the last run's reward model trained on: pairs by source, the app's votes in training."""
        return ((self._report() or {}).get("training") or {}).get("data")

    def start(self) -> bool:
        """Start a run unless one is going; returns whether it started."""
        if not self._lock.acquire(blocking=False):
            return False
        self.state.update(status="running", started=time.time(), finished=None, returncode=None, log_tail="")

        def work():
            try:
                env = {**os.environ, "RU_RLHF_DATA_ROOT": str(self.data_root)}  # the app's data, whatever the env
                res = subprocess.run(self.command(), capture_output=True, text=True, env=env)
                # the new model's figures first: whoever sees "done" sees them too
                report = {"metrics": self.metrics(), "training_data": self.training_data()} if res.returncode == 0 else {}
                self.state.update(returncode=res.returncode, log_tail=(res.stdout + res.stderr)[-2000:], **report,
                                  status="done" if res.returncode == 0 else "failed")
            except Exception as err:  # noqa: BLE001 - shown to the admin, not swallowed
                self.state.update(status="failed", log_tail=repr(err))
            finally:
                self.state["finished"] = time.time()
                self._lock.release()

        threading.Thread(target=work, daemon=True).start()
        return True

    def running(self) -> bool:
        return self.state["status"] == "running"
