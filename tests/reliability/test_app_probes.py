"""Probes of the A/B app as a user reported them (issue 21, "An app that is blind and honest").

One test per probe; each asserts the clear message the app now gives (naming the key or the rule):

* blind pages: identical policies never put two identical answers on a page, the sampling seed of
  a page is not derived from the prompt, a page with one distinct answer is not votable;
* the vote confirmation names no vote number;
* a bad ``conf/local/credentials.yml`` stops the app at start with the key (no traceback);
* the retraining log reaches admins only;
* the store file deleted or replaced while the app runs: the vote is refused (never "saved"), the
  app keeps serving; a read-only store or an impossible ``--store`` path: a clear line, no traceback;
* comments are stored exactly as typed and exported in both parquet files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ru_rlhf.text import same_text
from tests.app.conftest import app_client, app_data_root, free_port, service  # noqa: F401 - fixtures used below
from tests.conftest import launch_chromium, require_chromium

PROMPT = "Ответь на вопрос по тексту.\nТекст: В Казани открыли мост.\nВопрос: Что открыли?"
GOOD = {"helpfulness": 4, "truthfulness": 4, "harmlessness": 5}
RATES = [5, 4, 5, 3, 4, 5, 2, 4, 5]  # slots A, B, C × criteria, as the page sends them


def _served(store) -> list[tuple[list, list]]:
    import json

    rows = store._con().execute("SELECT models, responses FROM served ORDER BY ts").fetchall()
    return [(json.loads(m), json.loads(r)) for m, r in rows]


@pytest.fixture()
def twin_service(app_data_root, tmp_path):  # noqa: F811 - the fixture imported above
    """A service over two policies saved from the same weights (and, as ``z``, a different one)."""
    from ru_rlhf.app.service import ABService, AppConfig

    sft = app_data_root / "06_models" / "sft_policy"
    twin = tmp_path / "twin_policy"
    shutil.copytree(sft, twin)

    def make(temperature: float = 0.7, third: bool = False, **kw) -> ABService:
        policies = {"x": str(sft), "y": str(twin)}
        if third:
            policies["z"] = str(app_data_root / "06_models" / "policies" / "dpo")
        return ABService(AppConfig(data_root=str(app_data_root), store=str(tmp_path / "votes.sqlite"),
                                   policies=policies, temperature=temperature, max_new_tokens=6, **kw))

    return make


@pytest.fixture()
def seed_spy(monkeypatch):
    """Every sampling seed the service asks ``generate`` for, per call."""
    import ru_rlhf.models.generation as generation

    real, calls = generation.generate, []

    def spy(*args, **kwargs):
        calls.append(list(kwargs["seeds"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate", spy)
    return calls


# ------------------------------------------------------------------------------------ blind pages
def test_identical_policies_never_show_two_identical_answers_and_seeds_vary_per_page(twin_service, seed_spy):
    """Before: seed = stable_seed(prompt) for every policy, so two policies with the same weights put
    the same text twice on the page, and a prompt always gave a policy the same text (a fingerprint)."""
    svc = twin_service(temperature=0.7)
    pages = [svc.serve(PROMPT) for _ in range(6)]
    for page in pages:
        assert page.votable and len(page.texts) == 2
        assert not same_text(page.texts[0], page.texts[1]), page.texts
    for _models, texts in _served(svc.store):  # what the store recorded: never two identical texts either
        assert not same_text(*texts)
    seeds = [s for call in seed_spy for s in call]
    assert len(seeds) >= 12 and len(set(seeds)) == len(seeds)  # a fresh seed on every draw, never stable_seed(prompt)
    by_model = {}
    for models, texts in _served(svc.store):
        for m, t in zip(models, texts):
            by_model.setdefault(m, set()).add(t)
    assert all(len(v) > 1 for v in by_model.values()), by_model  # nor the same text for a policy


def test_a_page_with_one_distinct_answer_is_shown_once_and_not_votable(twin_service, seed_spy):
    """Greedy decoding (temperature 0) of two identical policies: every draw is the same text."""
    from ru_rlhf.app.ui import serve_page, vote_page

    svc = twin_service(temperature=0.0)
    page = svc.serve(PROMPT)
    assert not page.votable and len(page.texts) == 1
    assert "ответили на этот запрос одинаково" in page.note
    assert len(seed_spy) <= 2 + svc.config.redraws  # a bounded number of draws
    assert svc.store.count() == 0 and _served(svc.store) == []  # nothing votable was recorded
    token, texts, status = serve_page(svc, PROMPT)
    assert token == "" and len(texts) == 1 and status.startswith("⚠️ Все модели ответили на этот запрос одинаково")
    assert vote_page(svc, token, 0, RATES, "A", "", "u")[1].startswith("⚠️ Сначала получите ответы")


def test_a_repeated_answer_is_dropped_and_the_page_says_so(twin_service, monkeypatch):
    """x and y answer the same text whatever the seed (identical weights, greedy), z another; 3 asked."""
    svc = twin_service(third=True)
    draws = []

    def sample(model_id, prompt, seed):
        draws.append(model_id)
        return "Открыли  новый мост." if model_id in ("x", "y") else "Мост через Казанку."

    monkeypatch.setattr(svc, "_sample", sample)
    page = svc.serve(PROMPT)
    assert page.votable and len(page.texts) == 2 and not same_text(*page.texts)
    assert page.note == ("Показано ответов: 2 из 3: остальные совпали с одним из показанных "
                         "(одинаковые ответы не показываются).")
    [(models, _)] = _served(svc.store)
    assert "z" in models and len(models) == 2
    assert len(draws) <= 3 + svc.config.redraws and draws.count("x") + draws.count("y") >= 2


def test_the_vote_confirmation_names_no_vote_number(service):  # noqa: F811
    """Before: «Спасибо! Голос №{vote_id} сохранён.» (the row id: how many votes the store has)."""
    from ru_rlhf.app.ui import SAVED, serve_page, vote_page

    statuses = []
    for _ in range(3):
        token, texts, _ = serve_page(service, PROMPT)
        statuses.append(vote_page(service, token, len(texts), RATES, "B", "", "u")[1])
    assert statuses == ["Спасибо! Голос сохранён."] * 3 == [SAVED] * 3
    assert not any(ch.isdigit() or ch == "№" for ch in SAVED)
    assert service.store.count() == 3


# ------------------------------------------------------------------------------------ credentials
@pytest.mark.parametrize("text,message", [
    ("app_users:\n  admin: secret\n  a: x\napp_admins: admin\n",
     "app_admins: must be a list of user names, got the string 'admin'"),
    ("app_users:\n  alice:\n  admin: secret\n", "app_users: alice: no password (`alice:` with nothing after it)"),
    ("app_users:\n  alice: 0123\n", "app_users: alice: the password must be a string, got a YAML integer; "
                                    "quote it: `alice: '<password>'`"),
    ("app_users:\n  ? [a, b]\n  : pw\n", "credentials.yml"),  # a list as a key: a message, not a traceback
    ("app_users:\n  alice: secret\napp_admins: [bob]\n", "app_admins: 'bob' not in app_users"),
    ("app_users:\n  alice: secret\napp_admin: [alice]\n", "app_admin: unknown key"),
    ("app_users:\n  alice: a\n  alice: b\n", "the key 'alice' is given twice"),
    ("app_users: alice\n", "app_users: must be a mapping of user names to passwords"),
    ("app_users:\n  '': x\n", "app_users: user name '' must be a non-empty string"),
])
def test_a_bad_credentials_file_stops_the_app_naming_the_key(tmp_path, text, message):
    """Before: `app_admins: admin` made a, d, m, i, n admins (and not admin); `alice:` got the password
    'None'; `0123` became '83'."""
    from ru_rlhf.app.__main__ import _credentials

    path = tmp_path / "credentials.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        _credentials(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value), str(exc.value)


def test_good_credentials_keep_strings_as_typed(tmp_path):
    from ru_rlhf.app.__main__ import _credentials

    path = tmp_path / "credentials.yml"
    path.write_text("app_users:\n  alice: '0123'\n  admin: s2\napp_admins: [admin]\n", encoding="utf-8")
    assert _credentials(path) == ([("alice", "0123"), ("admin", "s2")], ("admin",))
    path.write_text("app_users: {alice: s1, admin: s2}\n", encoding="utf-8")
    assert _credentials(path) == ([("alice", "s1"), ("admin", "s2")], ("admin",))  # no app_admins: admin


def test_the_cli_prints_the_credentials_problem_without_a_traceback(tmp_path):
    conf = tmp_path / "conf" / "local"
    conf.mkdir(parents=True)
    (conf / "credentials.yml").write_text("app_users:\n  admin: secret\napp_admins: admin\n", encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "ru_rlhf.app", "--auth", "--data-root", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == ("conf/local/credentials.yml: app_admins: must be a list of user "
                                                   "names, got the string 'admin'; write `app_admins: [admin]`")


# ------------------------------------------------------------------------------------ admin only
def test_the_retraining_log_reaches_admins_only(service):  # noqa: F811
    """Before: every page's status timer got the admin's failed-retrain log tail."""
    from ru_rlhf.app.ui import retrain_status

    service.retrainer.state.update(status="failed", log_tail="Traceback ... /secret/path SECRET_LOG_LINE")
    assert retrain_status(service, None) == ""
    assert retrain_status(service, "alice") == ""
    assert "SECRET_LOG_LINE" in retrain_status(service, "admin")


# ------------------------------------------------------------------------------------ store faults
@pytest.mark.parametrize("which", ["all", "main"])
def test_a_store_deleted_between_serve_and_vote_refuses_the_vote_and_keeps_serving(service, which):  # noqa: F811
    """Before: «Голос №9 сохранён» into the deleted file, then `no such table: served` on every serve."""
    from ru_rlhf.app.ui import SAVED, serve_page, vote_page
    from ru_rlhf.io.feedback_store import FeedbackStore, VoteError

    path = service.store.path
    token, texts, _ = serve_page(service, PROMPT)
    assert vote_page(service, token, len(texts), RATES, "A", "", "u")[1] == SAVED
    token, texts, _ = serve_page(service, PROMPT)
    for f in [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))][: 3 if which == "all" else 1]:
        f.unlink(missing_ok=True)
    tok_after, status = vote_page(service, token, len(texts), RATES, "A", "", "u")
    assert status.startswith("⚠️ Голос не сохранён: these responses were served from a feedback store file that "
                             "was deleted at "), status
    assert "they are lost with it and the vote is not saved: get new responses" in status
    assert status.endswith("(rule: store_reset)") and tok_after == token
    with pytest.raises(VoteError, match="rule: store_reset"):
        service.store.vote(token, "u", [GOOD] * len(texts), 0)
    # the app keeps serving and the next vote lands in the file at the path
    token, texts, status = serve_page(service, PROMPT)
    assert token and status == "Оцените ответы и выберите лучший."
    assert vote_page(service, token, len(texts), RATES, "B", "", "u")[1] == SAVED
    assert path.exists() and FeedbackStore(path).count() == 1


def test_a_store_copied_over_in_place_is_reread_and_never_reports_a_lost_vote(service, tmp_path):  # noqa: F811
    """`cp backup votes.sqlite` keeps the inode: SQLite (rollback journal) re-reads the changed file, the lost
    page's vote is refused, and the copied-in votes are intact (with WAL it was reported saved, then corrupt)."""
    import shutil

    from ru_rlhf.io.feedback_store import FeedbackStore, VoteError

    token = service.store.serve("Вопрос?", None, ["sft", "dpo"], ["a", "b"])
    other = FeedbackStore(tmp_path / "backup.sqlite")
    other.vote(other.serve("Q", None, ["sft", "dpo"], ["x", "y"]), "u", [GOOD] * 2, 0)
    other.close()
    shutil.copyfile(tmp_path / "backup.sqlite", service.store.path)
    with pytest.raises(VoteError, match="unknown token"):
        service.store.vote(token, "u", [GOOD] * 2, 0)
    assert service.store.integrity() == "ok"
    assert service.store.votes()["prompt"].tolist() == ["Q"]
    reader = FeedbackStore(service.store.path, read_only=True)  # what the retrain's catalog reads
    assert reader.votes()["prompt"].tolist() == ["Q"]
    reader.close()


def test_a_store_replaced_while_running_refuses_votes_for_its_lost_pages(service, tmp_path):  # noqa: F811
    from ru_rlhf.io.feedback_store import FeedbackStore, VoteError

    token = service.store.serve("Вопрос?", None, ["sft", "dpo"], ["a", "b"])
    other = FeedbackStore(tmp_path / "backup.sqlite")
    other.vote(other.serve("Q", None, ["sft", "dpo"], ["x", "y"]), "u", [GOOD] * 2, 0)
    other.close()
    os.replace(tmp_path / "backup.sqlite", service.store.path)
    with pytest.raises(VoteError, match=r"file that was replaced at .*\(rule: store_reset\)"):
        service.store.vote(token, "u", [GOOD] * 2, 0)
    assert service.store.count() == 1  # the store now reads the file at the path ...
    assert service.store.integrity() == "ok"  # ... and the old file's WAL was not replayed into it
    assert service.store.votes()["prompt"].tolist() == ["Q"]
    tok = service.store.serve("Вопрос?", None, ["sft", "dpo"], ["a", "b"])
    service.store.vote(tok, "u", [GOOD] * 2, 1)
    service.store.close()
    assert FeedbackStore(service.store.path).count() == 2


def test_the_running_app_answers_a_deleted_store_with_a_line_not_a_blank_error(service):  # noqa: F811
    from ru_rlhf.app.ui import build_app

    port = free_port()
    demo = build_app(service)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = app_client(f"http://127.0.0.1:{port}")
        client.predict(PROMPT, api_name="/serve")
        for f in service.store.path.parent.glob("votes.sqlite*"):
            f.unlink()
        status = client.predict(*RATES, "A", "", api_name="/vote")
        assert "⚠️ Голос не сохранён" in status and "store_reset" in status
        served = client.predict(PROMPT, api_name="/serve")
        assert served[-1] == "Оцените ответы и выберите лучший."
        assert client.predict(*RATES, "A", "", api_name="/vote") == "Спасибо! Голос сохранён."
    finally:
        demo.close()


def test_a_read_only_store_is_a_line_in_the_page_and_in_the_log(service, caplog):  # noqa: F811
    """The store turns read-only while the app runs. Tests run as root, whom chmod does not stop, so
    the store is reopened with SQLite's ``mode=ro`` (what SQLite does for a read-only file or mount)."""
    from ru_rlhf.app.ui import serve_page, vote_page
    from ru_rlhf.io.feedback_store import FeedbackStore

    token, texts, _ = serve_page(service, PROMPT)
    service.store.close()
    service.store = FeedbackStore(service.store.path, read_only=True)
    with caplog.at_level("ERROR"):
        tok, status = vote_page(service, token, len(texts), RATES, "A", "", "u")
        assert tok == token  # kept: the same vote can be sent again once the store is writable
        assert status == ("⚠️ Голос не сохранён: хранилище голосов доступно только для чтения. Сообщите "
                          "администратору. (rule: store_read_only)")
        tok, texts, status = serve_page(service, PROMPT)
        assert tok == "" and texts == []
        assert status == ("⚠️ Ответы не получены: хранилище голосов доступно только для чтения. Сообщите "
                          "администратору. (rule: store_read_only)")
    assert (f"{service.store.path}: cannot save the vote: the file or its folder is read-only; make both writable "
            "by the app (attempt to write a readonly database) (rule: store_read_only)") in caplog.text
    assert service.store.count() == 0


def _cli(args: list[str], prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "ru_rlhf.app", *args], capture_output=True,
                          text=True, timeout=300)


def test_an_impossible_store_path_stops_the_app_with_one_line(tmp_path):
    res = _cli(["--data-root", str(tmp_path), "--store", "/proc/x/votes.sqlite"])
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == ("/proc/x/votes.sqlite: cannot create the store's folder /proc/x "
                                                   "(No such file or directory) (rule: store_unavailable)")
    res = _cli(["export", "--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "out")])
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (f"{tmp_path / 'none.sqlite'}: cannot open the feedback store "
                                                   "read-only (no such file) (rule: store_unavailable)")


def test_a_read_only_file_system_stops_the_app_with_one_line(tmp_path):
    """A real read-only mount (root ignores chmod): ``unshare -rm`` and a read-only bind mount."""
    from ru_rlhf.io.feedback_store import FeedbackStore

    store_dir = tmp_path / "ro"
    store = FeedbackStore(store_dir / "votes.sqlite")
    store.vote(store.serve("Q", None, ["sft", "dpo"], ["x", "y"]), "u", [GOOD] * 2, 0)
    store.close()
    if os.geteuid() != 0:
        store_dir.chmod(0o555)
        (store_dir / "votes.sqlite").chmod(0o444)
        prefix = []
    else:
        prefix = ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(store_dir)]
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
        if not shutil.which("unshare") or probe.returncode != 0:
            pytest.skip(f"no read-only mount here (unshare -rm: {probe.stderr.strip()})")
    try:
        res = _cli(["--data-root", str(tmp_path), "--store", str(store_dir / "votes.sqlite")], prefix)
    finally:
        store_dir.chmod(0o755)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{store_dir / 'votes.sqlite'}: cannot ") and line.endswith("(rule: store_read_only)"), line
    assert "the file or its folder is read-only; make both writable by the app" in line
    assert FeedbackStore(store_dir / "votes.sqlite").count() == 1  # the votes in it are untouched


# ------------------------------------------------------------------------------------ comments
def test_comments_are_stored_as_typed_and_exported(service, tmp_path):  # noqa: F811
    """Before: html.escape in the store (`<b>` → `&lt;b&gt;`, 1 000 `<` → 4 000 characters) and no
    comment column in the export."""
    import pandas as pd

    from ru_rlhf.app.export import export_votes
    from ru_rlhf.app.ui import SAVED, serve_page, vote_page
    from ru_rlhf.io.feedback_store import MAX_COMMENT, VoteError

    comments = ["Ответ A <b>лучше</b> & точнее", "<" * MAX_COMMENT]
    for note in comments:
        token, texts, _ = serve_page(service, PROMPT)
        assert vote_page(service, token, len(texts), RATES, "A", note, "u")[1] == SAVED
    assert service.store.votes()["comment"].tolist() == comments
    token, texts, _ = serve_page(service, PROMPT)
    with pytest.raises(VoteError, match=f"comment longer than {MAX_COMMENT} characters"):
        service.store.vote(token, "u", [GOOD] * len(texts), 0, "<" * (MAX_COMMENT + 1))
    info = export_votes(service.store.path, tmp_path / "out")
    assert info["votes"] == 2
    ratings = pd.read_parquet(tmp_path / "out" / "ratings.parquet")
    pairs = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert sorted(set(ratings["comment"])) == sorted(comments)
    assert "comment" in pairs.columns and set(pairs["comment"]) <= set(comments) and len(pairs)


def test_in_the_browser_only_the_admin_gets_the_retraining_log(service, monkeypatch):  # noqa: F811
    """The page as alice and as admin: the status timer runs for the admin only, and the log reaches no one else."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    import ru_rlhf.app.ui as ui

    sent = []  # (user, what the status timer sent to that user's page)
    real = ui.retrain_status
    monkeypatch.setattr(ui, "retrain_status", lambda svc, user: sent.append((user, real(svc, user))) or sent[-1][1])
    service.retrainer.state.update(status="failed", log_tail="SECRET_LOG_LINE from the admin's run")
    port = free_port()
    demo = ui.build_app(service)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                auth=[("alice", "pw-a"), ("admin", "pw-b")])
    seen = {}
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            for user, password in (("alice", "pw-a"), ("admin", "pw-b")):
                page = browser.new_context().new_page()
                page.goto(f"http://127.0.0.1:{port}")
                page.locator("input[type=text]").first.fill(user)
                page.locator("input[type=password]").first.fill(password)
                page.keyboard.press("Enter")
                page.wait_for_selector("#serve", timeout=30000)
                page.wait_for_timeout(7000)  # more than one tick of the 5 s status timer
                seen[user] = (page.locator("#retrain").is_visible(), "SECRET_LOG_LINE" in page.content())
                page.close()
            browser.close()
    finally:
        demo.close()
    assert seen == {"alice": (False, False), "admin": (True, True)}, seen
    assert {u for u, _ in sent} == {"admin"}  # the timer runs on the admin's page only
    assert all("SECRET_LOG_LINE" in text for _, text in sent)
