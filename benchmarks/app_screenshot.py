"""Try the A/B app as a new user would and save a screenshot of the page (docs/app_ab.png).

Starts ``python -m ru_rlhf.app`` on the base run's policies with a throw-away store, opens it in
Debian's Chromium (Playwright, headless), draws a random test prompt, gets the answers, rates them,
picks the best, votes, and saves the page. Prints what it saw. Not a test: the browser test is
``tests/app/test_app.py``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    store = Path(tempfile.mkdtemp()) / "votes.sqlite"
    port = 7861
    server = subprocess.Popen([sys.executable, "-m", "ru_rlhf.app", "--store", str(store), "--port", str(port)],
                              cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--headless", "--no-sandbox", "--disable-gpu",
                                               "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.locator("#random").click()
            page.wait_for_function("document.querySelector('#prompt textarea').value.length > 0", timeout=30000)
            page.locator("#serve").click()
            page.wait_for_function("document.querySelector('#answer_C textarea').value.length > 0", timeout=120000)
            answers = [page.locator(f"#answer_{s} textarea").input_value() for s in "ABC"]
            for s, vals in zip("ABC", ((4, 4, 5), (3, 2, 5), (2, 3, 5))):
                for crit, v in zip(("helpfulness", "truthfulness", "harmlessness"), vals):
                    page.locator(f"#rate_{s}_{crit} label").filter(has_text=str(v)).first.click()
            page.locator("#best label").filter(has_text="A").first.click()
            page.locator("#comment textarea").fill("Первый ответ точнее.")
            page.locator("#vote").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('Голос')", timeout=30000)
            status = page.locator("#status").inner_text()
            out = ROOT / "docs" / "app_ab.png"
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        print("prompt answered by 3 anonymous policies:", [a[:60] for a in answers])
        print("status:", status)
        print("screenshot:", out.relative_to(ROOT))
    finally:
        server.terminate()
        server.wait(timeout=30)
    from ru_rlhf.io.feedback_store import FeedbackStore

    v = FeedbackStore(store).votes().iloc[0]
    print("stored vote: models", v["models"], "choice", v["choice"], "chosen", v["chosen_model"], "ratings", v["ratings"])


if __name__ == "__main__":
    main()
