"""The dataset card (``README.md``) of an exported pool: the Hub's YAML metadata (license, task, size, the typed
features and the data files) and the text that says what the pool is and how it was made, built with
``huggingface_hub``'s ``DatasetCardData`` and ``DatasetCard.from_template``."""

from __future__ import annotations

import json
from pathlib import Path

from harness.phases.filter import acceptance_by_level

# Jinja, rendered by ``DatasetCard.from_template``: ``card_data`` is the YAML metadata, the rest ``card_values``
CARD_TEMPLATE = """---
{{ card_data }}
---
# Synthetic pool of `{{ experiment }}` (discl-harness)

Synthetic images from image-guided diffusion for the hard training images of `{{ source_data }}`: for each hard
source image, {{ seeds }} seed(s) at each guidance level λ in {{ levels }} (λ = 0: text only;
λ → 1: the source image), scored by `{{ scorer }}` and filtered at text score ≥ {{ threshold }}
(`keep`). One row per generated image, kept or not, with its provenance: source id, λ, seed, prompt, scores and
the generator's settings.
{{ tries }}

**License.** The images derive from the source dataset's images and inherit its terms: check the terms of
`{{ source_data }}` before using or redistributing them.

## Load it

```python
from datasets import load_dataset
pool = load_dataset("PATH_OR_ORG/NAME", split="train")
kept = pool.filter(lambda r: r["keep"])
```

Run an experiment on it instead of generating (no generator is loaded): `--set spectrum.pool=PATH_OR_ORG/NAME`.

## How it was made

- harness version {{ harness_version }}, git commit `{{ git_commit }}`
- pool cache key `{{ pool_key }}`, scorer key `{{ scorer_key }}`, max_tries {{ max_tries }}
- generator: {{ generator }}
- regenerate: `{{ command }}`

| λ | generated | kept | acceptance |
|---|---|---|---|
{{ counts }}
| all | {{ samples }} | {{ kept }} | {{ acceptance }} |

Resolved config of the phases that decided the pool:

```yaml
{{ config }}
```
"""


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def card_data(rows: int, features, files: list[Path], data_files: str):
    """The card's YAML metadata: license, task, size, tags, the data files and the ``datasets`` features."""
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license="other",
        license_name="source-dataset-terms",
        license_details="The images derive from the source dataset's images and inherit its terms.",
        task_categories=["image-classification"],
        size_categories=[size_category(rows)],
        tags=["synthetic", "diffusion-curriculum", "discl-harness"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
    )
    split = {"name": "train", "num_examples": rows, "num_bytes": sum(f.stat().st_size for f in files)}
    DatasetInfosDict({"default": DatasetInfo(features=features, splits=[split])}).to_dataset_card_data(data)
    return data


def tries_note(cfg, meta: dict) -> str:
    """What a row is with ``spectrum.max_tries`` (every try of a sample) or without (every row selected)."""
    if cfg.spectrum.max_tries == 1:
        return "One try per sample (`spectrum.max_tries` 1): every row is `selected`."
    return (
        f"Up to {cfg.spectrum.max_tries} tries per sample (`spectrum.max_tries`): a sample whose tries all score "
        f"≤ {cfg.filter.threshold:g} was regenerated with the next description and its own seed, and its "
        f"best-scoring try kept; every try is a row ({meta['images']} rows for {meta['samples']} samples: `try`, "
        "its `seed`, `prompt` and scores), `selected` marks the try each sample kept, and only a selected try can "
        "be `keep`."
    )


def card_values(prep, meta: dict) -> dict:
    """The card text's values: what the pool is and how it was made."""
    import yaml

    cfg, table = prep.cfg, acceptance_by_level(prep.pool)
    counts = "\n".join(
        f"| {r.lam:g} | {int(r.generated)} | {int(r.kept)} | {r.acceptance:.1%} |" for r in table.itertuples()
    )
    return {
        "experiment": cfg.name,
        "source_data": cfg.data.name,
        "seeds": cfg.spectrum.seeds,
        "levels": cfg.spectrum.levels,
        "scorer": cfg.scorer.name,
        "threshold": f"{cfg.filter.threshold:g}",
        "tries": tries_note(cfg, meta),
        **{k: meta[k] for k in ("harness_version", "git_commit", "pool_key", "scorer_key", "max_tries", "command")},
        "generator": json.dumps(meta["generator_settings"], default=str),
        "counts": counts,
        "samples": meta["samples"],
        "kept": meta["kept"],
        "acceptance": f"{meta['kept'] / max(1, meta['samples']):.1%}",
        "config": yaml.safe_dump(meta["config"], sort_keys=False, default_flow_style=None, width=120).rstrip(),
    }


def write_card(path: Path, prep, meta: dict, features, files: list[Path], data_files: str) -> None:
    """``path`` (the export's ``README.md``): the card of ``prep``'s exported pool described by ``meta``."""
    from huggingface_hub import DatasetCard

    data = card_data(meta["images"], features, files, data_files)
    # Jinja drops a template's final newline: the card keeps one
    card = DatasetCard.from_template(data, template_str=CARD_TEMPLATE + "\n", **card_values(prep, meta))
    card.save(path)
