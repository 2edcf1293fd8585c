"""Phase 2: which training images are hard. The rule comes from the config; the count is logged."""
from __future__ import annotations

import numpy as np

from harness.config import HardConfig
from harness.data.base import DatasetBundle


def select_hard(rule: HardConfig, data: DatasetBundle, train_probs: np.ndarray | None) -> np.ndarray:
    """Indices into the training split.

    few_shot: every image of a few-shot class (long-tail). With the base model's training-set probabilities:
    low_prob (true-class probability below ``threshold``), k_hardest (the ``k`` lowest), misclassified.
    """
    labels = data.train.labels
    if rule.rule == "few_shot":
        return np.flatnonzero(data.shot_group()[labels] == "few")
    if train_probs is None:
        raise ValueError(f"hard.rule {rule.rule!r} needs the base model's predictions")
    p_true = train_probs[np.arange(len(labels)), labels]
    if rule.rule == "low_prob":
        return np.flatnonzero(p_true < rule.threshold)
    if rule.rule == "k_hardest":
        return np.sort(np.argsort(p_true, kind="stable")[: rule.k])
    if rule.rule == "misclassified":
        return np.flatnonzero(train_probs.argmax(1) != labels)
    raise ValueError(f"unknown hard.rule {rule.rule!r}")
