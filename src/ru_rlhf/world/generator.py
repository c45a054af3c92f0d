"""Deterministic generator of the bundled world: news-style documents and their fact table.

Every document reports one event (what, where, when) with one or two quantities, and
optionally an official's quote and the organisation that did the work, in 3–8 sentences drawn
from several templates per sentence kind. The fact table lists exactly the facts a document
states; it is the ground truth that the truthfulness judge checks answers against.

The output depends only on the seed and the counts: the same call writes the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field

from ru_rlhf.world import lexicon as lx

FACT_COLUMNS = ["fact_id", "doc_id", "lang", "slot", "kind", "value", "surface"]
SOURCE = "bundled_world"
LICENSE = "CC0-1.0"


def ru_plural(n: int, forms: tuple[str, str, str]) -> str:
    """Pick the Russian noun form for a count: 1 метр, 2 метра, 5 метров."""
    n = abs(n)
    if n % 10 == 1 and n % 100 != 11:
        return forms[0]
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return forms[1]
    return forms[2]


def quantity_surface(kind: str, n: int, lang: str) -> str:
    """Render a count with its unit in the given language («350 миллионов рублей»)."""
    spec = lx.QUANTITIES[kind]
    unit = ru_plural(n, spec["ru_unit"]) if lang == "ru" else spec["tt_unit"]
    return f"{n} {unit}"


def date_surface(year: int, month: int, day: int, lang: str) -> str:
    """Render a date as a Russian («12 мая 2023 года») or Tatar («2023 елның 12 маенда») phrase."""
    if lang == "ru":
        return f"{day} {lx.RU_MONTHS_GEN[month - 1]} {year} года"
    return f"{year} елның {day} {lx.TT_MONTHS_LOC[month - 1]}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass
class Story:
    """One document's facts before they are written out as text."""

    doc_id: str
    lang: str
    event: str
    place: str
    date: tuple[int, int, int]
    q1: tuple[str, int]
    q2: tuple[str, int]
    person: tuple[str, str]  # (full name, gender)
    role: int
    org: str
    slots: list[str] = field(default_factory=list)  # which optional facts the text states

    def person_name(self) -> str:
        return self.person[0]


def _make_person(rng: random.Random, lang: str) -> tuple[str, str]:
    tatar_name = rng.random() < (0.8 if lang == "tt" else 0.3)
    first, gender = rng.choice(lx.TT_FIRST_NAMES if tatar_name else lx.RU_FIRST_NAMES)
    surname = rng.choice(lx.TT_SURNAMES if tatar_name else lx.RU_SURNAMES)
    if gender == "f":
        surname += "а"
    return f"{first} {surname}", gender


def _draw_story(rng: random.Random, doc_id: str, lang: str, used: set) -> Story:
    while True:
        event = rng.choice(sorted(lx.EVENTS))
        place = rng.choice(sorted(lx.PLACES))
        date = (rng.randint(2018, 2025), rng.randint(1, 12), rng.randint(1, 28))
        if (event, place, date) not in used:
            used.add((event, place, date))
            break
    spec = lx.EVENTS[event]
    q1 = (spec["q1"], rng.randint(*lx.QUANTITIES[spec["q1"]]["range"]))
    q2 = (spec["q2"], rng.randint(*lx.QUANTITIES[spec["q2"]]["range"]))
    return Story(doc_id, lang, event, place, date, q1, q2, _make_person(rng, lang),
                 rng.randrange(len(lx.ROLES)), rng.choice(lx.ORG_NAMES))


def _lead(rng: random.Random, s: Story) -> str:
    ev, pl = lx.EVENTS[s.event], lx.PLACES[s.place]
    d = date_surface(*s.date, s.lang)
    if s.lang == "ru":
        options = [
            f"{d} в {pl['ru_prep']} {ev['ru_verb']} {ev['ru_acc']}.",
            f"В {pl['ru_prep']} {d} {ev['ru_verb']} {ev['ru_acc']}.",
            f"{_cap(ev['ru_nom'])} {ev['ru_pass']} в {pl['ru_prep']} {d}.",
            f"Событие дня: в {pl['ru_prep']} {ev['ru_verb']} {ev['ru_acc']}, это произошло {d}.",
        ]
    else:
        options = [
            f"{d} {pl['tt_loc']} {ev['tt_nom']} {ev['tt_verb']}.",
            f"{pl['tt_loc']} {d} {ev['tt_nom']} {ev['tt_verb']}.",
            f"{_cap(ev['tt_nom'])} {d} {pl['tt_loc']} {ev['tt_verb']}.",
            f"Көннең вакыйгасы: {pl['tt_loc']} {ev['tt_nom']} {ev['tt_verb']}, бу {d} булды.",
        ]
    return _cap(rng.choice(options))


def _quote(rng: random.Random, s: Story) -> str:
    name, gender = s.person
    role_ru, _, role_tt = lx.ROLES[s.role]
    if s.lang == "ru":
        quote = rng.choice(lx.RU_QUOTES)
        said, noted, told = (("заявил", "отметил", "сообщил") if gender == "m"
                             else ("заявила", "отметила", "сообщила"))
        options = [
            f"«{quote}», — {said} {role_ru} {name}.",
            f"{_cap(role_ru)} {name} {noted}: «{quote}».",
            f"Как {told} {name}, {role_ru}, «{quote[:1].lower() + quote[1:]}».",
        ]
    else:
        quote = rng.choice(lx.TT_QUOTES)
        options = [
            f"«{quote}», — диде {role_tt} {name}.",
            f"{_cap(role_tt)} {name} билгеләп үтте: «{quote}».",
            f"{name}, {role_tt}, әйтүенчә, «{quote[:1].lower() + quote[1:]}».",
        ]
    return rng.choice(options)


def _org(rng: random.Random, s: Story) -> str:
    if s.lang == "ru":
        options = [f"Работы выполнила компания «{s.org}».",
                   f"Организатором выступила компания «{s.org}».",
                   f"Подрядчиком проекта стала компания «{s.org}»."]
    else:
        options = [f"Эшләрне «{s.org}» компаниясе башкарды.",
                   f"Оештыручы булып «{s.org}» компаниясе чыкты.",
                   f"Проектның подрядчысы «{s.org}» компаниясе булды."]
    return rng.choice(options)


def _quantity(rng: random.Random, s: Story, kind: str, n: int) -> str:
    template = rng.choice(lx.QUANTITIES[kind][s.lang])
    return _cap(template.format(q=quantity_surface(kind, n, s.lang)))


def _title(s: Story) -> str:
    ev, pl = lx.EVENTS[s.event], lx.PLACES[s.place]
    if s.lang == "ru":
        return f"{ev['ru_title']} в {pl['ru_prep']}"
    return f"{pl['tt_loc']} {ev['tt_title']}"


def _write_story(rng: random.Random, s: Story) -> str:
    n_sentences = rng.randint(3, 8)
    optional = [slot for slot in ("quote", "org", "q2") if rng.random() < 0.75]
    optional = optional[: max(0, n_sentences - 2)]
    s.slots = optional
    body = [_quantity(rng, s, *s.q1)]
    if "quote" in optional:
        body.append(_quote(rng, s))
    if "org" in optional:
        body.append(_org(rng, s))
    if "q2" in optional:
        body.append(_quantity(rng, s, *s.q2))
    fillers = lx.RU_FILLER if s.lang == "ru" else lx.TT_FILLER
    place = lx.PLACES[s.place]["tt_nom"]
    body += [f.format(place_nom=place) for f in rng.sample(fillers, n_sentences - 1 - len(body))]
    rng.shuffle(body)
    return " ".join([_lead(rng, s), *body])


def _facts(s: Story) -> list[dict]:
    ev, pl = lx.EVENTS[s.event], lx.PLACES[s.place]
    rows = [
        ("event", s.event, "", ev[f"{s.lang}_nom"]),
        ("place", s.place, "", pl["ru_prep"] if s.lang == "ru" else pl["tt_loc"]),
        ("date", "{:04d}-{:02d}-{:02d}".format(*s.date), "", date_surface(*s.date, s.lang)),
        ("q1", str(s.q1[1]), s.q1[0], quantity_surface(s.q1[0], s.q1[1], s.lang)),
    ]
    if "quote" in s.slots:
        role_ru, _, role_tt = lx.ROLES[s.role]
        rows.append(("person", s.person[0], s.person[1], s.person[0]))
        rows.append(("role", str(s.role), "", role_ru if s.lang == "ru" else role_tt))
    if "org" in s.slots:
        rows.append(("org", s.org, "", s.org))
    if "q2" in s.slots:
        rows.append(("q2", str(s.q2[1]), s.q2[0], quantity_surface(s.q2[0], s.q2[1], s.lang)))
    return [
        {"fact_id": f"{s.doc_id}/{slot}", "doc_id": s.doc_id, "lang": s.lang, "slot": slot,
         "kind": kind, "value": value, "surface": surface}
        for slot, value, kind, surface in rows
    ]


def generate_world(seed: int = 2024, n_ru: int = 1000, n_tt: int = 250) -> tuple[list[dict], list[dict]]:
    """Generate the corpus records and the fact table rows.

    Args:
        seed: the seed of the one random generator used throughout.
        n_ru: number of Russian documents.
        n_tt: number of Tatar documents.

    Returns:
        ``(documents, facts)``: documents as dicts with ``doc_id, lang, source, title, text,
        license``; facts as dicts with ``fact_id, doc_id, lang, slot, kind, value, surface``.
    """
    rng = random.Random(seed)
    used: set = set()
    docs, facts = [], []
    for lang, count in (("ru", n_ru), ("tt", n_tt)):
        for i in range(count):
            story = _draw_story(rng, f"{lang}-{i:05d}", lang, used)
            text = _write_story(rng, story)
            docs.append({"doc_id": story.doc_id, "lang": lang, "source": SOURCE,
                         "title": _title(story), "text": text, "license": LICENSE})
            facts.extend(_facts(story))
    return docs, facts


def corpus_jsonl(docs: list[dict]) -> str:
    """Serialise documents as JSONL, one object per line, keys in the documented order."""
    keys = ["doc_id", "lang", "source", "title", "text", "license"]
    return "".join(json.dumps({k: d[k] for k in keys}, ensure_ascii=False) + "\n" for d in docs)


def facts_csv(facts: list[dict]) -> str:
    """Serialise the fact table as CSV with a fixed column order and ``\\n`` line ends."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FACT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(facts)
    return buf.getvalue()
