"""The Gradio page: a prompt, 2–3 anonymous answers, ratings 1–5 per criterion, the best one, a comment.

Blind by construction: the page and every API payload carry only the texts and a per-session
token held server-side (``gr.State``); which policy wrote which answer stays in the store.
"""

import logging
from pathlib import Path

import gradio as gr  # at module level, unpostponed annotations: Gradio injects `gr.Request` by its annotation

from ru_rlhf.app.service import ABService
from ru_rlhf.app.store import CRITERIA, MAX_COMMENT, VoteError

log = logging.getLogger(__name__)

SLOTS = ("A", "B", "C")
CRITERIA_RU = {"helpfulness": "Полезность", "truthfulness": "Правдивость", "harmlessness": "Безвредность"}
GUIDELINES = Path(__file__).resolve().parents[3] / "docs" / "annotation_guidelines.md"


def _guidelines() -> str:
    try:
        return GUIDELINES.read_text(encoding="utf-8")
    except OSError:
        return "Инструкция: docs/annotation_guidelines.md"


def build_app(service: ABService):
    """The Blocks app over ``service``."""
    with gr.Blocks(title="ru-rlhf: слепое сравнение ответов") as demo:
        gr.Markdown("## Сравните ответы\nВведите запрос или возьмите случайный, оцените каждый ответ по трём "
                    "критериям (1–5) и выберите лучший. Какая модель написала ответ, не показывается.")
        with gr.Accordion("Инструкция для разметчиков (annotation guidelines)", open=False, elem_id="guidelines"):
            gr.Markdown(_guidelines())
        token = gr.State("")
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
            retrain_status = gr.Markdown("", elem_id="retrain_status")

        def on_random():
            _, text = service.random_prompt()
            return text

        def on_serve(text: str):
            try:
                tok, texts = service.serve(text)
            except VoteError as err:
                return ("", *[""] * len(SLOTS), f"⚠️ {err}")
            texts = texts + [""] * (len(SLOTS) - len(texts))
            return (tok, *texts, "Оцените ответы и выберите лучший.")

        def on_vote(tok: str, a_h, a_t, a_s, b_h, b_t, b_s, c_h, c_t, c_s, best_slot, note, request: gr.Request):
            rates = [a_h, a_t, a_s, b_h, b_t, b_s, c_h, c_t, c_s]  # slots A, B, C × criteria (as CRITERIA)
            if not tok:
                return tok, "⚠️ Сначала получите ответы (no responses were served in this session)."
            ratings = []
            for i in range(len(SLOTS)):
                vals = rates[i * len(CRITERIA):(i + 1) * len(CRITERIA)]
                if all(v is None for v in vals) and i >= 2:
                    continue  # a two-answer page
                ratings.append({c: (int(v) if v is not None else None) for c, v in zip(CRITERIA, vals)})
            choice = SLOTS.index(best_slot) if best_slot in SLOTS else -1
            user = getattr(request, "username", None) or "anonymous"
            try:
                vote_id = service.vote(tok, user, ratings, choice, note or "")
            except VoteError as err:
                return tok, f"⚠️ {err}"
            return "", f"Спасибо! Голос №{vote_id} сохранён."

        def on_load(request: gr.Request):
            user = getattr(request, "username", None)
            return gr.update(visible=bool(user) and user in service.config.admins)

        def on_retrain(request: gr.Request):
            user = getattr(request, "username", None)
            if not user or user not in service.config.admins:
                return "⚠️ Только для администратора."
            if not service.retrainer.start():
                return "Переобучение уже идёт."
            return "Переобучение запущено."

        def retrain_state():
            st = service.retrainer.state
            if st["status"] == "done":
                rows = "\n".join(f"| {h} | {m['accuracy']} | {m['auc']} |" for h, m in (st["metrics"] or {}).items())
                return ("Готово: новая модель вознаграждения (test).\n\n| head | accuracy | AUC |\n|---|---|---|\n"
                        + rows)
            if st["status"] == "failed":
                return f"Ошибка переобучения:\n\n```\n{st['log_tail'][-600:]}\n```"
            return f"Статус: {st['status']}"

        random_btn.click(on_random, None, prompt, api_name="random_prompt")
        serve_btn.click(on_serve, prompt, [token, *answers, status], api_name="serve")
        vote_btn.click(on_vote, [token, *radios, best, comment], [token, status], api_name="vote")
        retrain_btn.click(on_retrain, None, retrain_status, api_name=False)
        demo.load(on_load, None, admin_box, api_name=False)
        timer = gr.Timer(5.0)
        timer.tick(retrain_state, None, retrain_status, api_name=False)
    return demo
