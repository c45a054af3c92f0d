"""The lexical baseline every reward-model report shows: a linear Bradley–Terry model on TF-IDF features.

Per head, P(chosen ≻ rejected) = σ(w · (φ(chosen) − φ(rejected))), with φ the TF-IDF of word 1–2-grams and
character 2–5-grams (within word boundaries) of the response, fitted with scikit-learn's logistic regression on
the difference vectors, each pair shown in a seeded random orientation and no intercept (so the model is
antisymmetric, as a Bradley–Terry model is). It sees only the response's words: whatever a neural reward model
gains over it is what it learned beyond lexical cues (the prompt, the document, the order of words).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class TfidfPairModel:
    """One scikit-learn pipeline per head: ``fit(pairs)``, then ``score(texts, head)``."""

    def __init__(self, seed: int = 0, C: float = 1.0, max_features: int = 50_000):
        self.seed, self.C, self.max_features = seed, C, max_features
        self.vectorizer = None
        self.models: dict[str, object] = {}

    def _vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        return FeatureUnion([
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                      max_features=self.max_features)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                                      max_features=self.max_features)),
        ])

    def fit(self, pairs: pd.DataFrame) -> TfidfPairModel:
        """Fit the features on every response of ``pairs`` and one logistic regression per criterion."""
        from sklearn.linear_model import LogisticRegression

        texts = pd.unique(pd.concat([pairs["chosen"], pairs["rejected"]], ignore_index=True))
        self.vectorizer = self._vectorizer().fit(list(texts))
        rng = np.random.default_rng(self.seed)
        for head, g in pairs.groupby("criterion"):
            diff = self.vectorizer.transform(list(g["chosen"])) - self.vectorizer.transform(list(g["rejected"]))
            flip = rng.random(len(g)) < 0.5
            sign = np.where(flip, -1.0, 1.0)
            x = diff.multiply(sign.reshape(-1, 1)).tocsr()
            y = (~flip).astype(int)
            if len(set(y)) < 2:  # one pair: both orientations
                x, y = _both(diff), np.r_[np.ones(len(g), int), np.zeros(len(g), int)]
            self.models[str(head)] = LogisticRegression(C=self.C, fit_intercept=False, max_iter=2000).fit(x, y)
        return self

    def score(self, texts: list[str], head: str) -> np.ndarray:
        """The head's linear score of each text (a reward: higher is preferred)."""
        if head not in self.models:
            return np.full(len(texts), np.nan)
        return self.vectorizer.transform(list(texts)) @ self.models[head].coef_.ravel()


def _both(diff):
    from scipy.sparse import vstack

    return vstack([diff, -diff]).tocsr()
