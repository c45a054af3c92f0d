"""The app end to end: blindness of every payload, 50 concurrent clients, a SIGKILL during writes,
and a real browser (Playwright driving Debian's Chromium) casting a vote."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.app.conftest import MODEL_IDS, app_client, free_port
from tests.conftest import launch_chromium, require_chromium

HIDDEN = re.compile(r"\b(sft|dpo|ipo|ppo|reinforce|grpo|rloo|cem)\b|06_models|policies/", re.IGNORECASE)
RATINGS = [5, 4, 5, 3, 4, 5, 2, 4, 5]  # A (H, T, S), B, C


@pytest.fixture()
def running_app(service):
    from ru_rlhf.app.ui import build_app

    port = free_port()
    demo = build_app(service)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}", service
    demo.close()


def _vote(client) -> str:
    client.predict("Ответь на вопрос по тексту.\nТекст: В Казани открыли мост.\nВопрос: Что открыли?",
                   api_name="/serve")
    return client.predict(*RATINGS, "B", "ок", api_name="/vote")


def test_nothing_served_names_a_model(running_app):
    url, service = running_app
    payloads = [httpx.get(url, timeout=30).text, httpx.get(f"{url}/config", timeout=30).text,
                httpx.get(f"{url}/gradio_api/info", timeout=30).text]
    client = app_client(url)
    served = client.predict("Что нового в Казани?", api_name="/serve")
    payloads.append(repr(served))
    payloads.append(repr(client.predict(*RATINGS, "A", "", api_name="/vote")))
    payloads.append(repr(client.predict(api_name="/random_prompt")))
    for text in payloads:
        found = HIDDEN.findall(text)
        assert not found, found[:5]
    # ... while the store does know which models answered
    v = service.store.votes().iloc[0]
    assert set(v["models"]) <= set(MODEL_IDS) and len(v["models"]) == 3


def test_empty_prompt_and_vote_without_serving_are_refused(running_app):
    url, service = running_app
    client = app_client(url)
    out = client.predict("   ", api_name="/serve")
    assert "пуст" in repr(out) or "empty" in repr(out)
    status = client.predict(*RATINGS, "A", "", api_name="/vote")
    assert "Сначала" in repr(status)
    assert service.store.count() == 0


@contextlib.contextmanager
def _app_process(app_data_root, store_path):
    """The app as its own process (``python -m ru_rlhf.app``), as it is deployed: its URL once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "ru_rlhf.app", "--data-root", str(app_data_root), "--store", str(store_path),
           "--port", str(port), "--max-new-tokens", "4"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url, server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_fifty_concurrent_clients_make_exactly_a_thousand_rows(app_data_root, tmp_path):
    from ru_rlhf.io.feedback_store import FeedbackStore

    errors: list[BaseException] = []
    store_path = tmp_path / "votes.sqlite"

    def worker(url):
        try:
            # httpx's 5 s default is a latency limit, not what this test checks: on a shared 2-core machine
            # 50 clients answer slower than that
            client = app_client(url, httpx_kwargs={"timeout": 120})
            for _ in range(20):
                status = _vote(client)
                assert "Голос" in repr(status), status
        except BaseException as err:  # noqa: BLE001 - collected and reported by the test
            errors.append(err)

    # the server in its own process (as deployed): in this one, 50 client threads would share its interpreter lock
    with _app_process(app_data_root, store_path) as (url, _):
        threads = [threading.Thread(target=worker, args=(url,)) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    store = FeedbackStore(store_path)
    assert store.count() == 1000
    votes = store.votes()
    assert votes["token"].is_unique and votes["id"].tolist() == list(range(1, 1001))


def test_sigkill_during_writes_leaves_no_torn_rows(app_data_root, tmp_path):
    from ru_rlhf.io.feedback_store import FeedbackStore

    store_path = tmp_path / "votes.sqlite"
    with _app_process(app_data_root, store_path) as (url, server):
        stop = threading.Event()

        def worker():
            try:
                client = app_client(url)
                while not stop.is_set():
                    _vote(client)
            except Exception:  # noqa: BLE001 - the server is killed under them: this client's work ends
                return

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while time.time() < deadline and (not store_path.exists() or FeedbackStore(store_path).count() < 20):
            time.sleep(0.2)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        stop.set()
    store = FeedbackStore(store_path)
    assert store.integrity() == "ok"
    votes = store.votes()  # every row decodes
    assert len(votes) >= 20
    voted = store._con().execute("SELECT COUNT(*) FROM served WHERE voted = 1").fetchone()[0]
    assert voted == len(votes)  # a vote and its served row were written together or not at all
    assert votes["ratings"].map(len).eq(votes["models"].map(len)).all()
    # the store opens and takes votes again after the crash
    tok = store.serve("Вопрос?", None, ["sft", "dpo"], ["a", "b"])
    store.vote(tok, "ann", [{"helpfulness": 3, "truthfulness": 3, "harmlessness": 3}] * 2, 1)
    assert store.count() == len(votes) + 1


def test_a_person_votes_in_a_real_browser(running_app, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    url, service = running_app
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page()
        page.goto(url)
        page.locator("#random").click()
        page.wait_for_function("document.querySelector('#prompt textarea').value.length > 0", timeout=30000)
        page.locator("#serve").click()
        page.wait_for_function("document.querySelector('#answer_C textarea').value.length > 0", timeout=60000)
        html = page.content()
        assert not HIDDEN.findall(html)
        for slot, block in zip("ABC", (RATINGS[0:3], RATINGS[3:6], RATINGS[6:9])):
            for crit, value in zip(("helpfulness", "truthfulness", "harmlessness"), block):
                page.locator(f"#rate_{slot}_{crit} label").filter(has_text=str(value)).first.click()
        page.locator("#best label").filter(has_text="B").first.click()
        page.locator("#comment textarea").fill("Ответ B точнее <script>")
        page.locator("#vote").click()
        page.wait_for_function("document.querySelector('#status').innerText.includes('Голос')", timeout=30000)
        page.screenshot(path=str(tmp_path / "ab.png"), full_page=True)
        browser.close()
    v = service.store.votes()
    assert len(v) == 1
    row = v.iloc[0]
    assert row["choice"] == 1 and row["ratings"][0] == {"helpfulness": 5, "truthfulness": 4, "harmlessness": 5}
    assert row["comment"] == "Ответ B точнее <script>"  # stored as typed
    assert row["prompt_id"] in {"p-test-1", "p-test-2"}  # a drawn test prompt keeps its id


def test_login_with_users_from_the_credentials_file(service, tmp_path):
    """`--auth`: users come from conf/local/credentials.yml; without a login the API refuses."""
    from ru_rlhf.app.__main__ import _credentials
    from ru_rlhf.app.ui import build_app

    creds = tmp_path / "credentials.yml"
    creds.write_text("app_users:\n  alice: secret1\n  admin: secret2\napp_admins: [admin]\n", encoding="utf-8")
    users, admins = _credentials(creds)
    assert users == [("alice", "secret1"), ("admin", "secret2")] and admins == ("admin",)
    port = free_port()
    demo = build_app(service)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, auth=users)
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{url}/config", timeout=30).status_code in (401, 403)  # no login, no app
        client = app_client(url, auth=("alice", "secret1"))
        client.predict("Что нового в Казани?", api_name="/serve")
        status = client.predict(*RATINGS, "C", "", api_name="/vote")
        assert "Голос" in repr(status)
        assert service.store.votes().iloc[0]["annotator"] == "alice"
    finally:
        demo.close()
    with pytest.raises(SystemExit, match="no credentials file"):
        _credentials(tmp_path / "missing.yml")
