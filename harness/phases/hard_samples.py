"""Phase 2: which training images are hard. The rule comes from the config; the count is logged."""

from __future__ import annotations

import difflib
import logging

import numpy as np

from harness.config import ConfigError, HardConfig
from harness.data.base import DatasetBundle

log = logging.getLogger("harness")


def select_hard(rule: HardConfig, data: DatasetBundle, train_probs: np.ndarray | None) -> np.ndarray:
    """Indices into the training split. Images of ``rule.exclude_classes`` are never hard (k_hardest then takes
    the k hardest of the others).

    few_shot: every image of a few-shot class (long-tail). With the base model's training-set probabilities:
    low_prob (true-class probability below ``threshold``), k_hardest (the ``k`` lowest), misclassified.
    """
    labels = data.train.labels
    allowed = ~np.isin(labels, excluded_labels(rule.exclude_classes, data))  # a typo fails before any work
    if rule.exclude_classes:
        log.info(
            "hard samples: %d training images of hard.exclude_classes (%s) are never hard",
            int((~allowed).sum()),
            ", ".join(rule.exclude_classes),
        )
    if rule.rule == "few_shot":
        return np.flatnonzero((data.shot_group()[labels] == "few") & allowed)
    if train_probs is None:
        raise ValueError(f"hard.rule {rule.rule!r} needs the base model's predictions")
    p_true = train_probs[np.arange(len(labels)), labels]
    if rule.rule == "low_prob":
        return np.flatnonzero((p_true < rule.threshold) & allowed)
    if rule.rule == "k_hardest":
        candidates = np.flatnonzero(allowed)
        return np.sort(candidates[np.argsort(p_true[candidates], kind="stable")[: rule.k]])
    if rule.rule == "misclassified":
        return np.flatnonzero((train_probs.argmax(1) != labels) & allowed)
    raise ValueError(f"unknown hard.rule {rule.rule!r}")


def excluded_labels(names: list[str], data: DatasetBundle) -> np.ndarray:
    """The labels of ``hard.exclude_classes``; a name that is not a class is a one-line error."""
    labels = []
    for name in names:
        found = [c for c, n in enumerate(data.class_names) if n == name]
        if not found:
            close = difflib.get_close_matches(name, data.class_names, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"hard.exclude_classes: {name!r} is not a class of {data.name}{hint}")
        labels += found
    return np.asarray(labels, dtype=np.int64)
