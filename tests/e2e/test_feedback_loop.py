"""The feedback loop end to end: a person votes in the real app (Playwright driving Debian's Chromium),
then the retrain command (`kedro run --env smoke --pipelines preference_curation,reward_modeling`)
turns the votes into pairs with ``source = "app"`` that the reward model trains on, and its report
names the votes.

Everything runs in a temporary data root (``RU_RLHF_DATA_ROOT``), never in the checkout's ``data/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY_SIZE, launch_chromium, require_chromium, run_kedro

# two prompts of the voter's own: their pairs train the reward model
PROMPTS = ["Расскажи коротко, что нового открыли в Казани в этом году?",
           "Какая погода бывает в Елабуге осенью? Ответь одним предложением."]
RANDOM = None  # a random test prompt drawn by the page's button: its vote is kept but held out of training
# ratings per slot (helpfulness, truthfulness, harmlessness): A clearly above B on two criteria
RATINGS = {"A": (5, 4, 3), "B": (2, 2, 3)}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    """A smoke run of ingestion and sft in a temporary data root, plus a second policy for the A/B page.

    The second policy is a stand-in (a seeded random tiny model on the run's tokenizer): what this test
    checks is the loop votes → pairs → reward model, not which policies answer.
    """
    from ru_rlhf.models.policy import load_policy, load_tokenizer

    root = tmp_path_factory.mktemp("smoke_loop")
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "ingestion,sft"], timeout=900, data_root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (root / "06_models" / "sft_policy" / "config.json").exists()
    tok = load_tokenizer(root / "06_models" / "tokenizer")
    load_policy(size=TINY_SIZE, tokenizer=tok, seed=7).save_pretrained(root / "06_models" / "policies" / "dpo")
    return root


def _browser_votes(url: str, prompts: list[str]) -> list[str]:
    """Cast one vote per prompt through the page; returns the status line after each vote."""
    from playwright.sync_api import sync_playwright

    statuses = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page()
        page.goto(url)
        for prompt in prompts:
            if prompt is RANDOM:
                page.locator("#prompt textarea").fill("")
                page.locator("#random").click()
                page.wait_for_function("document.querySelector('#prompt textarea').value.length > 0", timeout=30000)
            else:
                page.locator("#prompt textarea").fill(prompt)
            page.locator("#serve").click()
            page.wait_for_function("document.querySelector('#answer_A textarea').value.length > 0 && "
                                   "document.querySelector('#answer_B textarea').value.length > 0", timeout=120000)
            for slot, block in RATINGS.items():
                for crit, value in zip(("helpfulness", "truthfulness", "harmlessness"), block):
                    page.locator(f"#rate_{slot}_{crit} label").filter(has_text=str(value)).first.click()
            page.locator("#best label").filter(has_text="A").first.click()
            page.locator("#comment textarea").fill("A <b>лучше</b>")
            before = page.locator("#status").inner_text()
            page.locator("#vote").click()
            page.wait_for_function(f"document.querySelector('#status').innerText !== {json.dumps(before)} && "
                                   "document.querySelector('#status').innerText.length > 0", timeout=60000)
            statuses.append(page.locator("#status").inner_text())
        browser.close()
    return statuses


@pytest.mark.e2e
def test_votes_in_the_browser_reach_the_retrained_reward_model(smoke_root):
    require_chromium()
    from ru_rlhf.app.service import ABService, AppConfig
    from ru_rlhf.app.ui import build_app
    from tests.app.conftest import free_port

    store = smoke_root / "01_raw" / "feedback" / "votes.sqlite"
    service = ABService(AppConfig(data_root=str(smoke_root), store=str(store), env="smoke", max_new_tokens=16))
    port = free_port()
    demo = build_app(service)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        statuses = _browser_votes(f"http://127.0.0.1:{port}", [*PROMPTS, RANDOM])
    finally:
        demo.close()
    assert all("⚠" not in s for s in statuses), statuses
    votes = service.store.votes()
    assert len(votes) == len(PROMPTS) + 1, statuses
    held_out_prompt = votes["prompt"].iloc[-1]
    assert votes["prompt_id"].iloc[-1] is not None and held_out_prompt not in PROMPTS
    assert (votes["comment"] == "A <b>лучше</b>").all()  # stored as typed

    # the retrain, as the app's admin button and `python -m ru_rlhf.app retrain` run it
    res = run_kedro(["run", "--env", "smoke", "--pipelines", "preference_curation,reward_modeling"], timeout=900,
                    data_root=smoke_root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    pairs = pd.read_parquet(smoke_root / "03_primary" / "preference_pairs.parquet")
    app = pairs[pairs["source"] == "app"]
    # per vote: helpfulness and truthfulness differ by >= 1 (A over B), harmlessness ties; overall: A over B
    assert len(app) == 3 * (len(PROMPTS) + 1), app[["pair_id", "criterion"]]
    assert set(app["criterion"]) == {"helpfulness", "truthfulness", "overall"}
    assert set(app.loc[app["prompt"] == held_out_prompt, "split"]) == {"app_holdout"}  # a test prompt stays out
    app = app[app["prompt"] != held_out_prompt]
    assert (app["split"] == "train").all()
    assert not (app["chosen"].str.strip() == app["rejected"].str.strip()).any()
    assert set(app["prompt"]) == set(PROMPTS)

    trained = pd.read_parquet(smoke_root / "05_model_input" / "reward_training_pairs.parquet")
    app_trained = trained[trained["source"] == "app"]
    # every per-criterion app pair is in the reward model's training data (overall pairs train no head)
    assert set(app_trained["pair_id"]) == set(app.loc[app["criterion"] != "overall", "pair_id"])

    metrics = json.loads((smoke_root / "08_reporting" / "reward_model" / "metrics.json").read_text(encoding="utf-8"))
    data = metrics["training"]["data"]
    assert data["app_votes"] == len(PROMPTS) + 1 and data["app_votes_in_training"] == len(PROMPTS)
    assert data["by_source"]["app"] == 2 * len(PROMPTS) and data["app_pairs_held_out"] == 3
    summary = json.loads((smoke_root / "08_reporting" / "curation_summary.json").read_text(encoding="utf-8"))
    assert summary["app_votes"] == len(PROMPTS) + 1 and summary["pairs_by_source"]["app"] == 3 * (len(PROMPTS) + 1)
    assert summary["biases"]["skipped_no_gold"] == len(PROMPTS) + 1  # the app's overall pairs have no gold
