"""The Gradio page: a prompt, 2–3 anonymous answers, ratings 1–5 per criterion, the best one, a comment.

Blind by construction: the page and every API payload carry only the texts and a per-session
token held server-side (``gr.State``); which policy wrote which answer stays in the store. The
confirmation of a vote names no vote number (the store's row id would tell how many votes there
are). Admin-only output (the retraining status and its log) is sent to admins only. A store that
cannot be written is a ⚠️ line in the status, never a blank error; text from a person or the
server shown in the page is HTML-escaped.

The handlers are module functions (``serve_page``, ``vote_page``, ``retrain_status``) so that they
can be tested without a browser.
"""

import html
import logging
import sqlite3
from pathlib import Path

import gradio as gr  # at module level, unpostponed annotations: Gradio injects `gr.Request` by its annotation

from ru_rlhf.app.service import ABService
from ru_rlhf.io.feedback_store import MAX_COMMENT, VoteError
from ru_rlhf.vocabulary import CRITERIA

log = logging.getLogger(__name__)

SLOTS = ("A", "B", "C")
CRITERIA_RU = {"helpfulness": "Полезность", "truthfulness": "Правдивость", "harmlessness": "Безвредность"}
GUIDELINES = Path(__file__).resolve().parents[3] / "docs" / "annotation_guidelines.md"
SAVED = "Спасибо! Голос сохранён."
STORE_PROBLEMS = {
    "store_read_only": "хранилище голосов доступно только для чтения",
    "store_unavailable": "хранилище голосов недоступно",
    "store_lost": "файл хранилища голосов удалили или заменили во время записи",
    "store_full": "на диске хранилища голосов нет места",
    "store_error": "ошибка хранилища голосов",
}


def _guidelines() -> str:
    try:
        return GUIDELINES.read_text(encoding="utf-8")
    except OSError:
        return "Инструкция: docs/annotation_guidelines.md"


def esc(text: object) -> str:
    """Text for a Markdown component: HTML-escaped, so that a ``<b>`` in it is shown, not rendered."""
    return html.escape(str(text), quote=False)


def is_admin(service: ABService, user: str | None) -> bool:
    return bool(user) and user in service.config.admins


def store_problem(err: Exception, what: str) -> str:
    """The status line for a store that failed (logged with its file and rule; the page gets the rule)."""
    rule = getattr(err, "rule", "store_error")
    log.error("app: %s: %s", what, err)
    return f"⚠️ {what}: {STORE_PROBLEMS.get(rule, STORE_PROBLEMS['store_error'])}. Сообщите администратору. (rule: {rule})"


def serve_page(service: ABService, text: str) -> tuple[str, list[str], str]:
    """``(token, texts, status)`` for a prompt; the token is empty when nothing can be voted on."""
    try:
        page = service.serve(text)
    except VoteError as err:
        return "", [], f"⚠️ {esc(err)}"
    except sqlite3.Error as err:
        return "", [], store_problem(err, "Ответы не получены")
    except Exception:  # noqa: BLE001 - the person gets a line, the log the traceback
        log.exception("app: serving a page failed")
        return "", [], "⚠️ Ответы не получены: внутренняя ошибка сервера. Попробуйте ещё раз или сообщите администратору."
    if not page.votable:
        return "", page.texts, f"⚠️ {esc(page.note)}"
    status = "Оцените ответы и выберите лучший."
    return page.token, page.texts, f"{esc(page.note)} {status}" if page.note else status


def vote_page(service: ABService, token: str, shown: int, rates: list, best_slot: str | None, note: str | None,
              user: str | None) -> tuple[str, str]:
    """``(token, status)`` after a vote: the token is cleared once the vote is saved.

    ``rates`` are the ratings of slots A, B, C × criteria (as ``CRITERIA``); only the ``shown`` slots count.
    """
    if not token or not shown:
        return token, "⚠️ Сначала получите ответы (no responses were served in this session)."
    k = len(CRITERIA)
    ratings = [{c: (int(v) if v is not None else None) for c, v in zip(CRITERIA, rates[i * k:(i + 1) * k])}
               for i in range(min(shown, len(SLOTS)))]
    choice = SLOTS.index(best_slot) if best_slot in SLOTS[:shown] else -1
    try:
        service.vote(token, user or "anonymous", ratings, choice, note or "")
    except VoteError as err:
        return token, f"⚠️ Голос не сохранён: {esc(err)}"
    except sqlite3.Error as err:
        return token, store_problem(err, "Голос не сохранён")
    except Exception:  # noqa: BLE001 - the person gets a line, the log the traceback
        log.exception("app: saving a vote failed")
        return token, "⚠️ Голос не сохранён: внутренняя ошибка сервера. Сообщите администратору."
    return "", SAVED


def retrain_status(service: ABService, user: str | None) -> str:
    """The retraining status for an admin; nothing for anyone else (the log tail is the admin's only)."""
    if not is_admin(service, user):
        return ""
    st = service.retrainer.state
    if st["status"] == "done":
        rows = "\n".join(f"| {esc(h)} | {m['accuracy']} | {m['auc']} |" for h, m in (st["metrics"] or {}).items())
        data = st.get("training_data") or {}
        votes = (f"\n\nВ обучении голосов приложения: {data.get('app_votes_in_training')} из {data.get('app_votes')} "
                 f"(пар: {data.get('app_pairs_in_training')}; всего пар: {data.get('pairs')})") if data else ""
        return ("Готово: новая модель вознаграждения (test).\n\n| head | accuracy | AUC |\n|---|---|---|\n" + rows
                + votes)
    if st["status"] == "failed":
        tail = str(st["log_tail"])[-600:].replace("~~~", "~ ~ ~")
        return f"Ошибка переобучения:\n\n~~~text\n{tail}\n~~~"
    return f"Статус: {esc(st['status'])}"


def build_app(service: ABService):
    """The Blocks app over ``service``."""
    with gr.Blocks(title="ru-rlhf: слепое сравнение ответов") as demo:
        gr.Markdown("## Сравните ответы\nВведите запрос или возьмите случайный, оцените каждый ответ по трём "
                    "критериям (1–5) и выберите лучший. Какая модель написала ответ, не показывается.")
        with gr.Accordion("Инструкция для разметчиков (annotation guidelines)", open=False, elem_id="guidelines"):
            gr.Markdown(_guidelines())
        token = gr.State("")
        shown = gr.State(0)  # how many answers this page shows (2 or 3)
        with gr.Row():
            prompt = gr.Textbox(label="Запрос", lines=4, elem_id="prompt", max_length=4000)
        with gr.Row():
            random_btn = gr.Button("Случайный тестовый запрос", elem_id="random")
            serve_btn = gr.Button("Получить ответы", variant="primary", elem_id="serve")
        answers, radios = [], []
        with gr.Row():
            for s in SLOTS:
                with gr.Column():
                    answers.append(gr.Textbox(label=f"Ответ {s}", lines=6, interactive=False, elem_id=f"answer_{s}"))
                    for c in CRITERIA:
                        radios.append(gr.Radio([1, 2, 3, 4, 5], label=f"{CRITERIA_RU[c]} ({s})",
                                               elem_id=f"rate_{s}_{c}"))
        best = gr.Radio(list(SLOTS), label="Лучший ответ", elem_id="best")
        comment = gr.Textbox(label=f"Комментарий (до {MAX_COMMENT} символов)", lines=2, max_length=MAX_COMMENT,
                             elem_id="comment")
        vote_btn = gr.Button("Отправить оценку", variant="primary", elem_id="vote")
        status = gr.Markdown("", elem_id="status")
        with gr.Group(visible=False) as admin_box:
            gr.Markdown("### Администратор: переобучение\nЗапускает `preference_curation` и `reward_modeling` "
                        "с новыми голосами (один запуск за раз).")
            retrain_btn = gr.Button("Переобучить модель вознаграждения", elem_id="retrain")
            retrain_md = gr.Markdown("", elem_id="retrain_status")
        timer = gr.Timer(5.0, active=False)  # started for admins only (on_load)

        def on_random():
            _, text = service.random_prompt()
            return text

        def on_serve(text: str):
            tok, texts, line = serve_page(service, text)
            if tok:  # a votable page: its answers and their ratings
                n_answers = n_rated = len(texts)
            elif texts:  # one answer only: shown, not rated
                n_answers, n_rated = len(texts), 0
            else:  # nothing served: the empty layout
                n_answers = n_rated = len(SLOTS)
            k = len(CRITERIA)
            return (tok, len(texts) if tok else 0,
                    *[gr.update(value=texts[i] if i < len(texts) else "", visible=i < n_answers)
                      for i in range(len(SLOTS))],
                    *[gr.update(value=None, visible=i // k < n_rated) for i in range(len(radios))],
                    gr.update(choices=list(SLOTS[:max(n_rated, 1)]), value=None, visible=n_rated > 0),
                    line)

        def on_vote(tok: str, n: int, a_h, a_t, a_s, b_h, b_t, b_s, c_h, c_t, c_s, best_slot, note,
                    request: gr.Request):
            user = getattr(request, "username", None)
            return vote_page(service, tok, n, [a_h, a_t, a_s, b_h, b_t, b_s, c_h, c_t, c_s], best_slot, note, user)

        def on_load(request: gr.Request):
            admin = is_admin(service, getattr(request, "username", None))
            return gr.update(visible=admin), gr.Timer(active=admin)

        def on_retrain(request: gr.Request):
            if not is_admin(service, getattr(request, "username", None)):
                return "⚠️ Только для администратора."
            if not service.retrainer.start():
                return "Переобучение уже идёт."
            return "Переобучение запущено."

        def on_tick(request: gr.Request):
            return retrain_status(service, getattr(request, "username", None))

        random_btn.click(on_random, None, prompt, api_name="random_prompt")
        serve_btn.click(on_serve, prompt, [token, shown, *answers, *radios, best, status], api_name="serve")
        vote_btn.click(on_vote, [token, shown, *radios, best, comment], [token, status], api_name="vote")
        retrain_btn.click(on_retrain, None, retrain_md, api_name=False)
        demo.load(on_load, None, [admin_box, timer], api_name=False)
        timer.tick(on_tick, None, retrain_md, api_name=False)
    return demo
