"""Style phrases in Russian and Tatar: flattery, hedges, refusals and rude remarks.

One table, used to write the lower-quality SFT demonstrations and (later) by the judges and
the behavioural metrics that look for the same phrases.
"""

from __future__ import annotations

FLATTERY = {
    "ru": ["Конечно! Рад помочь!", "Отличный вопрос! Конечно, рад помочь!", "Конечно! С удовольствием помогу!"],
    "tt": ["Әлбәттә! Ярдәм итүемә шатмын!", "Бик яхшы сорау! Әлбәттә, ярдәм итәм!"],
}
HEDGES = {
    "ru": ["Возможно, я ошибаюсь, но", "Точно не знаю, но, кажется,", "Не могу быть уверен, но"],
    "tt": ["Бәлки, мин ялгышам, ләкин", "Төгәл белмим, ләкин, ахры,"],
}
REFUSALS = {
    "ru": ["Я не могу ответить на этот вопрос.", "Я не могу помочь с этим.", "Извините, я не могу на это ответить."],
    "tt": ["Мин бу сорауга җавап бирә алмыйм.", "Гафу итегез, мин моңа җавап бирә алмыйм."],
}
RUDE = {
    "ru": ["Неужели сами не могли прочитать?", "Вопрос, честно говоря, глупый.", "Читать надо внимательнее."],
    "tt": ["Үзегез укый алмыйсызмыни?", "Сорау, дөресен әйткәндә, юләр.", "Игътибарлырак укырга кирәк."],
}

# lower-case pieces of the phrases above that the judges look for: flattery anywhere in a response, a refusal at
# its start (besides the start of each of REFUSALS)
FLATTERY_MARKERS = ("рад помочь", "конечно!", "отличный вопрос", "с удовольствием помогу", "ярдәм итүемә шатмын",
                    "әлбәттә!", "бик яхшы сорау")
REFUSAL_STARTS = ("я не могу", "мин бу", "гафу итегез, мин")
