"""Task items (QA, dialogue, summary) written from a document's facts, in Russian and Tatar.

The seed's instructions are fixed here, once: QA «Ответь на вопрос по тексту», dialogue «Как
вежливо ответить на это сообщение?», summarisation «Напиши кратко суть новости», each with its
Tatar equivalent. Items for bundled-world documents are written from the fact table; items for
real documents (the ``external`` env) from the document's own questions and first sentence.
"""

from __future__ import annotations

import json

from ru_rlhf.text import split_sentences
from ru_rlhf.world import lexicon as lx

INSTRUCTIONS = {
    ("qa", "ru"): "Ответь на вопрос по тексту.",
    ("qa", "tt"): "Текст буенча сорауга җавап бир.",
    ("dialogue", "ru"): "Как вежливо ответить на это сообщение?",
    ("dialogue", "tt"): "Бу хәбәргә ничек итеп әдәпле җавап бирергә?",
    ("summarization", "ru"): "Напиши кратко суть новости.",
    ("summarization", "tt"): "Яңалыкның асылын кыскача яз.",
}
_LABELS = {
    "ru": {"text": "Текст", "news": "Новость", "question": "Вопрос", "message": "Сообщение"},
    "tt": {"text": "Текст", "news": "Яңалык", "question": "Сорау", "message": "Хәбәр"},
}


def format_prompt(task: str, lang: str, text: str, task_input: str | None) -> str:
    """Assemble the prompt text: the instruction, the document, and the question or message."""
    lab = _LABELS[lang]
    if task == "qa":
        return f"{INSTRUCTIONS[task, lang]}\n{lab['text']}: {text}\n{lab['question']}: {task_input}"
    if task == "dialogue":
        return f"{INSTRUCTIONS[task, lang]}\n{lab['news']}: {text}\n{lab['message']}: {task_input}"
    return f"{INSTRUCTIONS[task, lang]}\n{lab['news']}: {text}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _item(key: str, task_input: str | None, reference: str, fact_ids: list[str],
          answer: str | None = None, answer_key: str | None = None) -> dict:
    return {"item_key": key, "input": task_input, "reference": reference,
            "fact_ids": fact_ids, "answer": answer, "answer_key": answer_key}


class _Doc:
    """A bundled-world document's facts, with the phrases the templates need."""

    def __init__(self, doc_id: str, lang: str, facts: dict[str, dict]):
        self.doc_id, self.lang, self.f = doc_id, lang, facts
        self.ev = lx.EVENTS[facts["event"]["value"]]
        self.pl = lx.PLACES[facts["place"]["value"]]
        self.date = facts["date"]["surface"]

    def fid(self, *slots: str) -> list[str]:
        return [self.f[s]["fact_id"] for s in slots if s in self.f]

    def clause(self) -> str:
        """«в Казани открыли новый мост» / «Казанда яңа күпер ачылды»."""
        if self.lang == "ru":
            return f"в {self.pl['ru_prep']} {self.ev['ru_verb']} {self.ev['ru_acc']}"
        return f"{self.pl['tt_loc']} {self.ev['tt_nom']} {self.ev['tt_verb']}"

    def quantity_sentence(self, slot: str) -> str:
        kind = self.f[slot]["kind"]
        return _cap(lx.QUANTITIES[kind][self.lang][0].format(q=self.f[slot]["surface"]))


def world_qa_items(doc: _Doc) -> list[dict]:
    """QA items: where, when, how many (each quantity), who commented, which company."""
    ru = doc.lang == "ru"
    ev, pl = doc.ev, doc.pl
    items = []
    if ru:
        items.append(_item("place", f"Где {ev['ru_verb']} {ev['ru_acc']}?", f"В {pl['ru_prep']}.",
                           doc.fid("place"), f"в {pl['ru_prep']}", pl["ru_prep"]))
        items.append(_item("date", f"Когда {ev['ru_verb']} {ev['ru_acc']}?", f"{_cap(doc.date)}.",
                           doc.fid("date"), doc.date, doc.date))
    else:
        items.append(_item("place", f"{_cap(ev['tt_nom'])} кайда {ev['tt_verb']}?", f"{pl['tt_loc']}.",
                           doc.fid("place"), pl["tt_loc"], pl["tt_loc"]))
        items.append(_item("date", f"{_cap(ev['tt_nom'])} кайчан {ev['tt_verb']}?", f"{doc.date}.",
                           doc.fid("date"), doc.date, doc.date))
    for slot in ("q1", "q2"):
        if slot in doc.f:
            row = doc.f[slot]
            question = lx.QUANTITIES[row["kind"]][f"{doc.lang}_q"]
            items.append(_item(slot, question, f"{_cap(row['surface'])}.", doc.fid(slot),
                               row["surface"], row["value"]))
    if "person" in doc.f:
        name = doc.f["person"]["value"]
        q = "Кто прокомментировал событие?" if ru else "Вакыйга турында кем фикер белдерде?"
        items.append(_item("person", q, f"{name}.", doc.fid("person"), name, name))
    if "org" in doc.f:
        org = doc.f["org"]["value"]
        if ru:
            items.append(_item("org", "Какая компания упоминается в новости?", f"Компания «{org}».",
                               doc.fid("org"), f"компания «{org}»", org))
        else:
            items.append(_item("org", "Яңалыкта кайсы компания искә алына?", f"«{org}» компаниясе.",
                               doc.fid("org"), f"«{org}» компаниясе", org))
    return items


def world_dialogue_items(doc: _Doc) -> list[dict]:
    """Dialogue items: a question about the date, about a number, a sceptical complaint, thanks."""
    ev, clause, q1 = doc.ev, doc.clause(), doc.f["q1"]
    q_question = lx.QUANTITIES[q1["kind"]][f"{doc.lang}_q"]
    if doc.lang == "ru":
        return [
            _item("ask_date", f"Здравствуйте! Говорят, {clause}. А когда это было?",
                  f"Здравствуйте! Это было {doc.date}. Спасибо за интерес к новостям!",
                  doc.fid("event", "place", "date")),
            _item("ask_quantity", f"Добрый день! Я читал про {ev['ru_acc']}. {q_question}",
                  f"Добрый день! Согласно новости, это {q1['surface']}. Хорошего дня!",
                  doc.fid("event", "q1")),
            _item("complaint", f"Опять всё делают для галочки! Зачем нам {ev['ru_nom']}?",
                  f"Понимаем ваши сомнения. В новости сказано, что {doc.date} {clause}, "
                  f"а итог — {q1['surface']}. Спасибо, что поделились мнением!",
                  doc.fid("event", "place", "date", "q1")),
            _item("thanks", f"Спасибо за новость про {ev['ru_acc']}!",
                  f"Пожалуйста! Рады, что вам интересно: {doc.date} {clause}.",
                  doc.fid("event", "place", "date")),
        ]
    nom = _cap(ev["tt_nom"])
    return [
        _item("ask_date", f"Исәнмесез! {_cap(clause)} дип сөйлиләр. Бу кайчан булды?",
              f"Исәнмесез! Бу {doc.date} булды. Яңалыкларга игътибарыгыз өчен рәхмәт!",
              doc.fid("event", "place", "date")),
        _item("ask_quantity", f"Хәерле көн! Мин {ev['tt_nom']} турында укыдым. {q_question}",
              f"Хәерле көн! Яңалык буенча, бу — {q1['surface']}. Көнегез хәерле булсын!",
              doc.fid("event", "q1")),
        _item("complaint", f"Тагын бар нәрсә дә күз буяу өчен эшләнә! {nom} безгә нигә кирәк?",
              f"Шикләрегезне аңлыйбыз. Яңалыкта {doc.date} {clause} дип әйтелгән, "
              f"нәтиҗә — {q1['surface']}. Фикерегез белән уртаклашуыгыз өчен рәхмәт!",
              doc.fid("event", "place", "date", "q1")),
        _item("thanks", f"{nom} турындагы яңалык өчен рәхмәт!",
              f"Зинһар! Сезгә кызыклы булуына шатбыз: {doc.date} {clause}.",
              doc.fid("event", "place", "date")),
    ]


def world_summary_items(doc: _Doc) -> list[dict]:
    """One summary item: the event, place and date, and the first quantity."""
    first = f"{_cap(doc.date)} {doc.clause()}."
    return [_item("summary", None, f"{first} {doc.quantity_sentence('q1')}",
                  doc.fid("event", "place", "date", "q1"))]


def _lead(text: str, max_chars: int = 300) -> str:
    sentences = split_sentences(text)
    lead = sentences[0] if sentences else text
    return lead if len(lead) <= max_chars else lead[:max_chars].rsplit(" ", 1)[0] + "…"


def real_qa_items(qas_json: str | float | None, fact_ids: list[str]) -> list[dict]:
    """QA items from a real document's own questions (SQuAD/XQuAD ``qas``)."""
    items = []
    for i, qa in enumerate(json.loads(qas_json) if isinstance(qas_json, str) and qas_json else []):
        if qa.get("question") and qa.get("answer"):
            items.append(_item(f"q{i}", qa["question"], qa["answer"], fact_ids, qa["answer"], qa["answer"]))
    return items


def real_dialogue_items(lang: str, title: str, text: str, fact_ids: list[str]) -> list[dict]:
    """A dialogue item for a real document: a reader asks for the gist; the reply gives the lead."""
    lead = _lead(text)
    title = title or lead[:60]
    if lang == "ru":
        return [_item("ask_gist", f"Здравствуйте! Я прочитал новость «{title}». Расскажите главное.",
                      f"Здравствуйте! Главное: {lead} Спасибо за вопрос!", fact_ids)]
    return [_item("ask_gist", f"Исәнмесез! Мин «{title}» яңалыгын укыдым. Төп фикерен әйтегез әле.",
                  f"Исәнмесез! Төп фикер: {lead} Сорау өчен рәхмәт!", fact_ids)]


def real_summary_items(text: str, fact_ids: list[str]) -> list[dict]:
    """A summary item for a real document: the reference is its first sentence (lead-1)."""
    return [_item("summary", None, _lead(text), fact_ids)]


def document_items(doc_id: str, lang: str, title: str, text: str, qas_json: str | None,
                   facts: list[dict]) -> dict[str, list[dict]]:
    """All task items a document supports, keyed by task.

    A document with bundled-world facts (``origin == "world"``) gets items written from its
    fact table; any other document gets items from its own questions and first sentence.
    """
    world = {f["slot"]: f for f in facts if f.get("origin") == "world"}
    if world:
        doc = _Doc(doc_id, lang, world)
        return {"qa": world_qa_items(doc), "dialogue": world_dialogue_items(doc),
                "summarization": world_summary_items(doc)}
    fact_ids = [f["fact_id"] for f in facts]
    return {"qa": real_qa_items(qas_json, fact_ids),
            "dialogue": real_dialogue_items(lang, title, text, fact_ids),
            "summarization": real_summary_items(text, fact_ids)}

