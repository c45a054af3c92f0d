"""The feedback store of the A/B app: SQLite in WAL mode, one row per vote.

Two tables:

* ``served``: every set of responses the server showed (a random token, the prompt, the hidden
  model ids in display order, the texts). A vote must name a served token, once.
* ``votes``: one row per vote: timestamp, annotator, prompt, the hidden model ids, ratings 1–5 per
  response and criterion, the chosen response (its slot and model id), the comment.

Every write is one ``BEGIN IMMEDIATE`` transaction, so a killed server leaves whole rows or none
(SQLite's journal rolls back a torn transaction when the store is opened again).
"""

from __future__ import annotations

import html
import json
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

CRITERIA = ("helpfulness", "truthfulness", "harmlessness")
MAX_COMMENT = 1000
MAX_PROMPT = 4000

SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    token TEXT PRIMARY KEY,
    ts TEXT NOT NULL,
    prompt_id TEXT,
    prompt TEXT NOT NULL,
    models TEXT NOT NULL,      -- JSON list of hidden model ids, in display order
    responses TEXT NOT NULL,   -- JSON list of texts, in display order
    voted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE REFERENCES served(token),
    annotator TEXT NOT NULL,
    prompt_id TEXT,
    prompt TEXT NOT NULL,
    models TEXT NOT NULL,      -- JSON list, display order
    responses TEXT NOT NULL,   -- JSON list, display order
    ratings TEXT NOT NULL,     -- JSON list (per response) of {criterion: 1..5}
    choice INTEGER NOT NULL,   -- display slot of the best response
    chosen_model TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
"""


class VoteError(ValueError):
    """A vote the store refuses, with the rule it breaks."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FeedbackStore:
    """A thread-safe handle on the SQLite feedback store (WAL mode)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._con().executescript(SCHEMA)  # IF NOT EXISTS: idempotent, its own transaction

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    @contextmanager
    def _tx(self):
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # ----------------------------------------------------------------- writes
    def serve(self, prompt: str, prompt_id: str | None, models: list[str], responses: list[str]) -> str:
        """Record a set of responses shown to a person; returns the token their vote must name."""
        if len(models) != len(responses) or not 2 <= len(models) <= 3:
            raise VoteError("2 or 3 responses are served at a time")
        token = secrets.token_urlsafe(16)
        with self._tx() as con:
            con.execute("INSERT INTO served (token, ts, prompt_id, prompt, models, responses) VALUES (?,?,?,?,?,?)",
                        (token, _now(), prompt_id, prompt, json.dumps(models), json.dumps(responses, ensure_ascii=False)))
        return token

    def vote(self, token: str, annotator: str, ratings: list[dict], choice: int, comment: str = "") -> int:
        """Store one vote; returns its row id.

        Raises:
            VoteError: an unknown or already used token (the server did not serve these responses,
                or they were voted on), ratings that are not 1–5 for every response and criterion,
                a choice that is not one of the served slots, or a comment over ``MAX_COMMENT``.
        """
        comment = comment or ""
        if len(comment) > MAX_COMMENT:
            raise VoteError(f"comment longer than {MAX_COMMENT} characters")
        comment = html.escape(comment.strip())
        annotator = (annotator or "anonymous").strip()[:64] or "anonymous"
        with self._tx() as con:
            row = con.execute("SELECT prompt_id, prompt, models, responses, voted FROM served WHERE token = ?",
                              (token,)).fetchone()
            if row is None:
                raise VoteError("these responses were not served by this server (unknown token)")
            prompt_id, prompt, models_json, responses_json, voted = row
            if voted:
                raise VoteError("these responses have already been voted on")
            models = json.loads(models_json)
            if len(ratings) != len(models):
                raise VoteError(f"expected ratings for {len(models)} responses, got {len(ratings)}")
            clean = []
            for i, r in enumerate(ratings):
                out = {}
                for c in CRITERIA:
                    v = r.get(c) if isinstance(r, dict) else None
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or not 1 <= v <= 5:
                        raise VoteError(f"response {i + 1}: rating of {c} must be an integer 1–5, got {v!r}")
                    out[c] = int(v)
                clean.append(out)
            if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(models):
                raise VoteError(f"choice must be one of the {len(models)} served responses")
            cur = con.execute(
                "INSERT INTO votes (ts, token, annotator, prompt_id, prompt, models, responses, ratings, choice, "
                "chosen_model, comment) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (_now(), token, annotator, prompt_id, prompt, models_json, responses_json, json.dumps(clean), choice,
                 models[choice], comment))
            con.execute("UPDATE served SET voted = 1 WHERE token = ?", (token,))
            return int(cur.lastrowid)

    # ----------------------------------------------------------------- reads
    def count(self) -> int:
        return int(self._con().execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def votes(self):
        """Every vote as a DataFrame (JSON columns decoded)."""
        import pandas as pd

        df = pd.read_sql_query("SELECT * FROM votes ORDER BY id", self._con())
        for col in ("models", "responses", "ratings"):
            df[col] = df[col].map(json.loads)
        return df

    def integrity(self) -> str:
        return str(self._con().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def votes_to_long(votes) -> pd.DataFrame:  # noqa: F821
    """The votes as the long annotation table (``item_id, annotator_id, criterion, score, choice``…),
    one row per response and criterion plus one ``overall`` row per vote with the chosen item.

    ``item_id`` is ``app:<vote id>:<slot>``; ``source`` is ``app``.
    """
    import pandas as pd

    rows = []
    for v in votes.itertuples(index=False):
        for slot, (model, resp, r) in enumerate(zip(v.models, v.responses, v.ratings)):
            for c in CRITERIA:
                rows.append({"item_id": f"app:{v.id}:{slot}", "prompt_id": v.prompt_id or f"app:{v.id}",
                             "response_id": f"app:{v.id}:{slot}", "annotator_id": v.annotator, "criterion": c,
                             "score": float(r[c]), "choice": None, "source": "app", "prompt": v.prompt,
                             "response": resp, "model": model, "vote_id": int(v.id), "ts": v.ts})
        rows.append({"item_id": f"app:{v.id}", "prompt_id": v.prompt_id or f"app:{v.id}",
                     "response_id": f"app:{v.id}:{v.choice}", "annotator_id": v.annotator, "criterion": "overall",
                     "score": float("nan"), "choice": f"app:{v.id}:{v.choice}", "source": "app", "prompt": v.prompt,
                     "response": v.responses[v.choice], "model": v.chosen_model, "vote_id": int(v.id), "ts": v.ts})
    cols = ["item_id", "prompt_id", "response_id", "annotator_id", "criterion", "score", "choice", "source", "prompt",
            "response", "model", "vote_id", "ts"]
    return pd.DataFrame(rows, columns=cols)


def long_to_pairs(long, margin: float = 1.0) -> pd.DataFrame:  # noqa: F821
    """Preference pairs in TRL's format from the long vote table (:func:`votes_to_long`): per
    criterion, two responses of one vote whose ratings differ by at least ``margin``; overall, the
    chosen response over each other one."""
    import pandas as pd

    rows = []
    for vote_id, g in long.groupby("vote_id", sort=True):
        rated = g[g["criterion"] != "overall"]
        text = dict(zip(rated["response_id"], rated["response"]))
        prompt, pid, annotator = g["prompt"].iloc[0], g["prompt_id"].iloc[0], g["annotator_id"].iloc[0]
        base = {"prompt_id": pid, "prompt": prompt, "n_votes": 1, "annotator_id": annotator, "source": "app"}
        for c, gc in rated.groupby("criterion", sort=True):
            sc = dict(zip(gc["response_id"], gc["score"]))
            for a, sa in sc.items():
                for b, sb in sc.items():
                    if a != b and sa - sb >= margin:
                        rows.append({**base, "pair_id": f"app:{vote_id}|{c}|{a}|{b}", "criterion": c,
                                     "chosen": text[a], "rejected": text[b], "chosen_id": a, "rejected_id": b,
                                     "margin": float(sa - sb)})
        for r in g[g["criterion"] == "overall"].itertuples(index=False):
            for b in text:
                if b != r.choice:
                    rows.append({**base, "pair_id": f"app:{vote_id}|overall|{r.choice}|{b}", "criterion": "overall",
                                 "chosen": text[r.choice], "rejected": text[b], "chosen_id": r.choice,
                                 "rejected_id": b, "margin": float("nan")})
    cols = ["pair_id", "prompt_id", "criterion", "prompt", "chosen", "rejected", "chosen_id", "rejected_id", "margin",
            "n_votes", "annotator_id", "source"]
    return pd.DataFrame(rows, columns=cols)
