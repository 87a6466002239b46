"""Baselines scored on the same test documents as the models: majority class and TF-IDF + logistic regression.

A neural model that cannot beat a bag of character n-grams is not worth serving; the gate says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.policy import BaselinePolicy
from flows.scoring import metric


def majority_probs(train_labels: pd.Series, labels: list[str], n: int) -> np.ndarray:
    """(n, C) one-hot rows for the train split's most frequent label (ties: first in `labels`)."""
    counts = train_labels[train_labels.isin(labels)].value_counts()
    majority = max(labels, key=lambda label: (int(counts.get(label, 0)), -labels.index(label)))
    probs = np.zeros((n, len(labels)))
    probs[:, labels.index(majority)] = 1.0
    return probs


def tfidf_lr_probs(train: pd.DataFrame, test_texts: list[str], labels: list[str], cfg: BaselinePolicy) -> np.ndarray:
    """(n, C) probabilities of TF-IDF on character n-grams + logistic regression trained on `train`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = train[train["label"].isin(labels)]
    present = sorted(set(train["label"]), key=labels.index)
    probs = np.zeros((len(test_texts), len(labels)))
    if len(present) == 1:  # logistic regression needs two classes; one class is the majority baseline
        probs[:, labels.index(present[0])] = 1.0
        return probs
    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, cfg.tfidf_ngram_max), sublinear_tf=True,
                        max_features=cfg.tfidf_max_features),
        LogisticRegression(C=cfg.tfidf_c, max_iter=1000),
    )
    model.fit(train["text"].tolist(), train["label"].tolist())
    fitted = model.predict_proba(test_texts)
    for j, label in enumerate(model.classes_):
        probs[:, labels.index(label)] = fitted[:, j]
    return probs


def baseline_scores(train: pd.DataFrame, test: pd.DataFrame, target: np.ndarray, labels: list[str],
                    cfg: BaselinePolicy, metrics: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Each baseline's `metrics` on the test documents, in the same order as `target`."""
    out = {}
    for name, probs in (("majority", majority_probs(train["label"], labels, len(test))),
                        ("tfidf_lr", tfidf_lr_probs(train, test["text"].tolist(), labels, cfg))):
        out[name] = {m: metric(m, target, probs) for m in metrics}
    return out
