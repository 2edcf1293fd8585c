"""The plan of the spectrum: every image to make (``PlannedImage``), its key, seed, prompt and file, in λ order."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from harness.config import SpectrumConfig, stable_hash
from harness.data.base import DatasetBundle
from harness.engine.seeding import sample_seed
from harness.phases.spectrum.prompts import check_class_names, class_prompts


@dataclass(frozen=True)
class PlannedImage:
    key: str
    source_index: int  # into the training split
    source_id: str
    label: int
    lam: float
    seed_index: int
    seed: int
    prompt: str
    file: str
    try_index: int = 0  # ``spectrum.max_tries``: which try of the sample (the manifest's ``try``)

    @property
    def slot(self) -> str:
        """The sample this image is a try of: (source, λ, seed index)."""
        return slot_key(self.source_id, self.lam, self.seed_index)

    def row(self) -> dict:
        row = dict(self.__dict__)
        row["try"] = row.pop("try_index")
        return row

    def image_hash(self) -> str:
        """What decides this image's pixels besides the store (data, generator and its settings)."""
        return stable_hash([self.source_id, f"{self.lam:.4f}", self.seed_index, self.seed, self.prompt, self.try_index])


def slot_key(source_id: str, lam: float, seed_index: int) -> str:
    return f"{source_id}|{float(lam):.4f}|{int(seed_index)}"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def plan_spectrum(data: DatasetBundle, hard: np.ndarray, spec: SpectrumConfig) -> list[PlannedImage]:
    """Every image of the spectrum, ordered by λ (one denoising schedule per λ batches well)."""
    train = data.train
    labels = np.unique(train.labels[np.asarray(hard, dtype=np.int64)])
    check_class_names(data.class_names, labels)
    prompts = class_prompts(spec, data.class_names, labels)
    plan = []
    for lam in spec.levels:
        for i in hard:
            sid, label = train.ids[i], int(train.labels[i])
            for s in range(spec.seeds):
                options = prompts[label]
                plan.append(
                    PlannedImage(
                        key=f"{sid}|{lam:.4f}|{s}",
                        source_index=int(i),
                        source_id=sid,
                        label=label,
                        lam=float(lam),
                        seed_index=s,
                        seed=sample_seed(sid, lam, s),
                        prompt=options[s % len(options)],
                        file=f"images/{safe_name(sid)}_l{round(lam * 1000):04d}_s{s}.png",
                    )
                )
    return plan
