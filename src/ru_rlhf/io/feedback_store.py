"""The feedback store of the A/B app: SQLite with a rollback journal, one row per vote.

Below the app and the pipelines: the app (:mod:`ru_rlhf.app`) writes it, the catalog's ``AppFeedbackDataset``
and ``python -m ru_rlhf.app export`` read it.

Two tables:

* ``served``: every set of responses the server showed (a random token, the prompt, the hidden
  model ids in display order, the texts). A vote must name a served token, once.
* ``votes``: one row per vote: timestamp, annotator, prompt, the hidden model ids, ratings 1–5 per
  response and criterion, the chosen response (its slot and model id), the comment exactly as typed.

Every write is one ``BEGIN IMMEDIATE`` transaction, so a killed server leaves whole rows or none
(SQLite's journal rolls back a torn transaction when the store is opened again).

The store checks its file before every operation: a file deleted or replaced while the app runs
(another inode at the path) is noticed, the open connection is dropped and the file at the path is
opened again with its tables created, so that nothing is written into a deleted file and reported
saved. Responses served from the lost file cannot be voted on any more (:class:`VoteError`, rule
``store_reset``). A store that cannot be opened or written (an impossible path, a read-only file or
folder, a full disk) raises :class:`StoreError`, whose message names the file and the rule.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ru_rlhf.vocabulary import CRITERIA

__all__ = ["MAX_COMMENT", "MAX_PROMPT", "FeedbackStore", "StoreError", "VoteError"]
log = logging.getLogger(__name__)

MAX_COMMENT = 1000  # characters of the comment as typed
MAX_PROMPT = 4000
MAX_LOST_TOKENS = 100_000  # unvoted tokens remembered from a store file that vanished

TABLES = ("served", "votes")
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
    comment TEXT NOT NULL DEFAULT ''  -- exactly as typed (escape it wherever it is shown)
);
"""


class VoteError(ValueError):
    """A vote the store refuses, with the rule it breaks."""


class StoreError(sqlite3.DatabaseError):
    """The store cannot be used (no such folder, read-only, file gone during a write, disk full).

    ``rule`` is one of ``store_unavailable``, ``store_read_only``, ``store_lost``, ``store_full`` or
    ``store_error``; the message names the file and the rule.
    """

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FeedbackStore:
    """A thread-safe handle on the SQLite feedback store (rollback journal, ``journal_mode=DELETE``).

    Not WAL: with a write-ahead log, a store file replaced (``mv``, ``cp``) while the app runs could be read
    or even written back together with the old file's log pages (a reader would see the old votes; a
    copied-in file could be corrupted). With a rollback journal SQLite re-reads a file changed under it,
    and nothing but the file itself holds votes between writes.

    One connection per handle, used under a lock: SQLite serialises writers anyway, and one
    connection can be checked against the file (and dropped) in one place.

    Args:
        path: the SQLite file; its folder is created unless ``read_only``.
        read_only: open with ``mode=ro`` (readers, the export): nothing is created and every write
            raises :class:`StoreError` (rule ``store_read_only``).

    Raises:
        StoreError: the folder cannot be created, the file cannot be opened, or (``read_only``)
            there is no store at ``path``.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file self._db has open
        self._lost_tokens: set[str] = set()
        self.resets: list[dict] = []  # {"ts", "why"} each time the file vanished or was replaced under us
        with self._lock:
            self._open()

    # ----------------------------------------------------------------- the connection
    def _fail(self, what: str, err: BaseException | str, rule: str) -> StoreError:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return StoreError(f"{self.path}: {what} ({reason}) (rule: {rule})", rule)

    def _explain(self, err: sqlite3.Error, doing: str) -> sqlite3.Error:
        """A clear :class:`StoreError` for an SQLite error the person cannot fix by voting again
        (read-only, cannot open, disk full); other errors (a corrupt file) come back as they are."""
        if isinstance(err, StoreError):
            return err
        name = getattr(err, "sqlite_errorname", "") or ""
        text = str(err).lower()
        read_only = f"cannot {doing}: the file or its folder is read-only; make both writable by the app"
        if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
            return self._fail(read_only, err, "store_read_only")
        if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
            folder = self.path.parent
            if self.path.exists() and not (os.access(self.path, os.W_OK) and os.access(folder, os.W_OK)):
                return self._fail(read_only, err, "store_read_only")
            return self._fail(f"cannot {doing}: the file cannot be opened; check that {folder} is a writable folder",
                              err, "store_unavailable")
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return self._fail(f"cannot {doing}: the disk is full", err, "store_full")
        if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
            return self._fail(f"cannot {doing}: the file could not be read or written", err, "store_error")
        return err

    def _open(self) -> None:
        """Open the file at ``self.path`` (creating it and its tables unless read-only)."""
        if self.read_only:
            if not self.path.is_file():
                raise self._fail("cannot open the feedback store read-only", "no such file", "store_unavailable")
        else:
            try:
                if not self.path.parent.is_dir():  # (mkdir of an existing folder on a read-only mount fails)
                    self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise self._fail(f"cannot create the store's folder {self.path.parent}", err,
                                 "store_unavailable") from None
            if self.path.exists() and not self.path.is_file():
                raise self._fail("cannot open the feedback store", "a folder or something else not a file is there",
                                 "store_unavailable")
        con = None
        try:
            if self.read_only:
                con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                      isolation_level=None, check_same_thread=False)
            else:
                con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA busy_timeout=30000")
            if not self.read_only:
                con.execute("PRAGMA journal_mode=DELETE")  # see the class docstring: not WAL
            con.execute("PRAGMA synchronous=FULL")
            self._ensure_schema(con)
            st = os.stat(self.path)
        except (sqlite3.Error, OSError) as err:
            if con is not None:
                con.close()
            if isinstance(err, OSError):
                raise self._fail("cannot open the feedback store", err, "store_unavailable") from None
            raise self._explain(err, "open the feedback store") from None
        self._db, self._ident = con, (st.st_dev, st.st_ino)

    def _ensure_schema(self, con: sqlite3.Connection) -> None:
        have = {r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('served', 'votes')")}
        if have == set(TABLES):
            return
        if self.read_only:
            raise self._fail("cannot read the feedback store", f"no table {', '.join(sorted(set(TABLES) - have))}",
                             "store_unavailable")
        if have:  # one table left: the file was emptied or rewritten under the app
            log.warning("%s: table(s) %s missing; creating them", self.path, sorted(set(TABLES) - have))
        con.executescript(SCHEMA)  # IF NOT EXISTS: idempotent, its own transaction

    def _same_file(self) -> bool:
        """Whether the file at ``self.path`` is still the one the connection has open."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise self._fail("cannot check the feedback store file", err, "store_unavailable") from None
        return (st.st_dev, st.st_ino) == self._ident

    def _reset(self) -> None:
        """The file at the path is gone or another one: drop the connection, open the path again."""
        why = "replaced" if self.path.exists() else "deleted"
        old, self._db, self._ident = self._db, None, None
        if old is not None:
            try:  # the responses served from the lost file: their votes are refused with the reason
                rows = old.execute("SELECT token FROM served WHERE voted = 0 ORDER BY ts DESC LIMIT ?",
                                   (MAX_LOST_TOKENS,)).fetchall()
                self._lost_tokens.update(r[0] for r in rows)
            except sqlite3.Error as err:  # their votes are then refused as an unknown token instead
                log.warning("%s: could not list the lost file's unvoted pages (%s)", self.path, err)
            try:
                old.close()
            except sqlite3.Error as err:
                log.warning("%s: closing the lost file's connection failed (%s)", self.path, err)
        self.resets.append({"ts": _now(), "why": why})
        log.error("%s: the feedback store file was %s while the app was running; its votes are not in the "
                  "store any more (responses served from it cannot be voted on); opening the file at the path "
                  "again", self.path, why)
        self._open()

    def _con(self) -> sqlite3.Connection:
        """The connection, checked against the file at the path (reopened if that file changed)."""
        with self._lock:
            if self._db is None:
                self._open()
            elif not self._same_file():
                self._reset()
            else:
                try:
                    self._ensure_schema(self._db)
                except sqlite3.Error as err:
                    raise self._explain(err, "read the feedback store") from None
            return self._db

    @contextmanager
    def _tx(self, doing: str):
        """One ``BEGIN IMMEDIATE`` transaction on the checked connection; commits only while the
        connection still has the file at the path open, and checks it again after the commit."""
        with self._lock:
            con = self._con()
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise self._explain(err, doing) from None
            try:
                yield con
                if not self._same_file():
                    raise self._fail(f"cannot {doing}: the feedback store file was deleted or replaced "
                                     "during the write", "nothing was written", "store_lost")
                con.execute("COMMIT")
            except BaseException as err:
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error as rb:  # no open transaction (BEGIN or COMMIT failed): the error below says why
                    log.debug("%s: rollback after %r: %s", self.path, err, rb)
                if isinstance(err, sqlite3.Error):
                    raise self._explain(err, doing) from None
                raise
            if not self._same_file():  # committed into a file that has just gone away
                raise self._fail(f"cannot {doing}: the feedback store file was deleted or replaced "
                                 "during the write", "the write went to the old file", "store_lost")

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a vote could be written now (the app calls it at start)."""
        if self.read_only:
            raise self._fail("cannot write votes: the feedback store is opened read-only", "read_only=True",
                             "store_read_only")
        with self._tx("write votes") as con:
            con.execute("UPDATE served SET voted = voted WHERE 0")  # a write that changes nothing

    # ----------------------------------------------------------------- writes
    def serve(self, prompt: str, prompt_id: str | None, models: list[str], responses: list[str]) -> str:
        """Record a set of responses shown to a person; returns the token their vote must name.

        Raises:
            VoteError: not 2 or 3 responses, or not one model id per response.
            StoreError: the store cannot be written.
        """
        if len(models) != len(responses) or not 2 <= len(models) <= 3:
            raise VoteError("2 or 3 responses are served at a time")
        token = secrets.token_urlsafe(16)
        with self._tx("record the served responses") as con:
            con.execute("INSERT INTO served (token, ts, prompt_id, prompt, models, responses) VALUES (?,?,?,?,?,?)",
                        (token, _now(), prompt_id, prompt, json.dumps(models), json.dumps(responses, ensure_ascii=False)))
        return token

    def vote(self, token: str, annotator: str, ratings: list[dict], choice: int, comment: str = "") -> int:
        """Store one vote; returns its row id (for the store's users, never for the voter's page).

        The comment is stored exactly as typed (whoever shows it escapes it).

        Raises:
            VoteError: an unknown or already used token (the server did not serve these responses,
                they were voted on, or they were served from a store file that has since been deleted
                or replaced: rule ``store_reset``), ratings that are not 1–5 for every response and
                criterion, a choice that is not one of the served slots, or a comment over
                ``MAX_COMMENT`` characters.
            StoreError: the store cannot be written; nothing was stored.
        """
        comment = "" if comment is None else comment
        if not isinstance(comment, str):
            raise VoteError(f"the comment must be text, got {type(comment).__name__}")
        if len(comment) > MAX_COMMENT:
            raise VoteError(f"comment longer than {MAX_COMMENT} characters ({len(comment)})")
        annotator = (annotator or "anonymous").strip()[:64] or "anonymous"
        with self._tx("save the vote") as con:
            row = con.execute("SELECT prompt_id, prompt, models, responses, voted FROM served WHERE token = ?",
                              (token,)).fetchone()
            if row is None:
                if token in self._lost_tokens:
                    last = self.resets[-1]
                    raise VoteError(f"these responses were served from a feedback store file that was {last['why']} "
                                    f"at {last['ts']} while the app was running; they are lost with it and the vote "
                                    "is not saved: get new responses (unknown token) (rule: store_reset)")
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
            vote_id = int(cur.lastrowid)
        return vote_id

    # ----------------------------------------------------------------- reads
    def _read(self, fn, doing: str):
        with self._lock:
            con = self._con()
            try:
                return fn(con)
            except sqlite3.Error as err:
                raise self._explain(err, doing) from None

    def count(self) -> int:
        return int(self._read(lambda con: con.execute("SELECT COUNT(*) FROM votes").fetchone()[0], "count the votes"))

    def votes(self):
        """Every vote as a DataFrame (JSON columns decoded, the comment as typed)."""
        import pandas as pd

        df = self._read(lambda con: pd.read_sql_query("SELECT * FROM votes ORDER BY id", con), "read the votes")
        for col in ("models", "responses", "ratings"):
            df[col] = df[col].map(json.loads)
        return df

    def integrity(self) -> str:
        return str(self._read(lambda con: con.execute("PRAGMA integrity_check").fetchone()[0], "check its integrity"))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db, self._ident = None, None
