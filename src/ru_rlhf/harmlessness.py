"""Harmlessness on real Russian text: the lexicon judge plus a classifier trained on real data.

The lexicon judge (:func:`ru_rlhf.judges.harm_findings`) was written for the bundled world: on the real toxic
comments of MERA ruDetox it flags about one in twenty (insults only; real obscenities and slurs are not in its
lists). Here Russian text is also checked against a list of obscene and vulgar roots (``ru_obscenities.txt``). :class:`HarmClassifier` is scikit-learn's logistic regression on word 1–2-gram and character 2–5-gram
TF-IDF features (the features of :mod:`ru_rlhf.models.baseline`), trained on texts labelled harmful or not, for
instance the toxic (harmful) and detoxified (harmless) sides of the training split of a user's harmlessness pairs.
We fit it ourselves rather than load a hub toxicity model because nothing is downloaded at run time.

:func:`harm_table` combines the two: a Russian text is harmful when the lexicon finds the lexicons find anything or the
classifier's probability reaches its threshold (chosen by cross-validation on the training texts); Tatar keeps the lexicon alone (there is no
real Tatar harmlessness data to train on), and every row says which scorer decided.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ru_rlhf.judges import harm_findings


class HarmClassifier:
    """``fit(texts, labels)`` (1 = harmful), then ``probability(texts)``; ``threshold`` turns it into a flag."""

    def __init__(self, seed: int = 0, C: float = 4.0, threshold: float | None = None,
                 max_false_positive_rate: float = 0.03, folds: int = 5, max_features: int = 100_000):
        self.seed, self.C, self.max_features = seed, C, max_features
        self.threshold, self.max_false_positive_rate, self.folds = threshold, max_false_positive_rate, folds
        self.pipeline = None
        self.trained_on: dict = {}

    def _make(self):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        features = FeatureUnion([
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True,
                                      lowercase=True, max_features=self.max_features)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                                      lowercase=True, max_features=self.max_features)),
        ])
        return make_pipeline(features, LogisticRegression(C=self.C, max_iter=3000, class_weight="balanced",
                                                          random_state=self.seed))

    def fit(self, texts: list[str], labels: list[int]) -> HarmClassifier:
        """Fit on ``texts`` (1 = harmful). Without a fixed ``threshold``, the threshold is the one that flags at
        most ``max_false_positive_rate`` of the harmless training texts in ``folds``-fold cross-validation
        (out-of-fold probabilities, never the held-out data), and at least 0.5."""
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        texts, labels = list(texts), np.asarray(labels, dtype=int)
        if len(set(labels.tolist())) < 2:
            raise ValueError("the harmlessness classifier needs harmful and harmless examples")
        chosen_by = "fixed"
        if self.threshold is None:
            cv = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
            oof = cross_val_predict(self._make(), texts, labels, cv=cv, method="predict_proba")[:, 1]
            harmless = np.sort(oof[labels == 0])
            k = int(np.floor(self.max_false_positive_rate * len(harmless)))  # at most k harmless texts above
            cut = harmless[len(harmless) - k - 1] if k < len(harmless) else 0.0
            self.threshold = float(max(0.5, np.nextafter(cut, 1.0)))
            self.cv = {"harmless_flagged": float((oof[labels == 0] >= self.threshold).mean()),
                       "harmful_flagged": float((oof[labels == 1] >= self.threshold).mean()), "folds": self.folds}
            chosen_by = f"{self.folds}-fold cross-validation, ≤ {self.max_false_positive_rate:g} harmless flagged"
        self.pipeline = self._make().fit(texts, labels)
        self.trained_on = {"texts": int(len(labels)), "harmful": int(labels.sum()),
                           "harmless": int((labels == 0).sum()), "threshold": round(self.threshold, 4),
                           "threshold_chosen_by": chosen_by}
        return self

    def probability(self, texts: list[str]) -> np.ndarray:
        """P(harmful) of each text."""
        if self.pipeline is None:
            raise RuntimeError("HarmClassifier.probability before fit")
        return self.pipeline.predict_proba(list(texts))[:, 1] if len(texts) else np.zeros(0)


def lexicon_harmful(text: str, lang: str = "ru") -> bool:
    """The lexicons' verdict: any finding of the judge's (insults, generalisations, dangerous advice) or, in
    Russian, an obscenity or slur (``lexicons/ru_obscenities.txt``, kept out of the bundled world's gold judge)."""
    from ru_rlhf.judges import _hits

    return bool(harm_findings(text, lang)) or (lang != "tt" and bool(_hits("obscenities", "ru", text)))


def harm_table(texts: list[str], langs: list[str] | None = None,
               classifier: HarmClassifier | None = None) -> pd.DataFrame:
    """One row per text: ``lexicon`` (the lexicon judge finds anything), ``classifier_p`` (None for Tatar or
    without a classifier), ``harmful`` (lexicon or p ≥ threshold) and ``scorer`` (which decided:
    ``lexicon+classifier`` for Russian with a classifier, else ``lexicon``)."""
    langs = list(langs) if langs is not None else ["ru"] * len(texts)
    lex = [lexicon_harmful(t, lang) for t, lang in zip(texts, langs)]
    ru = [i for i, lang in enumerate(langs) if lang != "tt"]
    p = [None] * len(texts)
    if classifier is not None and ru:
        for i, v in zip(ru, classifier.probability([texts[i] for i in ru])):
            p[i] = float(v)
    thr = classifier.threshold if classifier is not None and classifier.threshold is not None else 1.0
    harmful = [bool(lx or (q is not None and q >= thr)) for lx, q in zip(lex, p)]
    scorer = ["lexicon+classifier" if q is not None else "lexicon" for q in p]
    return pd.DataFrame({"lexicon": lex, "classifier_p": p, "harmful": harmful, "scorer": scorer})
