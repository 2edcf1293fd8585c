"""The paper's reference numbers (DisCL, ICCV 2025, §6 of DISCL.md), in %, labelled as the paper's.

They are shown beside ours, never mixed into our numbers. Our long-tail experiments (digits_lt, imagenet_lt) are
set against the paper's ImageNet-LT ResNet-10 table; iWildCam against its CLIP ViT-B/16 table.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class PaperTable:
    title: str
    metrics: dict[str, str]  # our metric name → the paper's column name
    rows: dict[str, dict[str, str]]  # the paper's row → column → value as printed
    # (our method, train.loss) → the paper's row; loss None matches any loss
    match: dict[tuple[str, str | None], str]


IMAGENET_LT = PaperTable(
    title="paper: ImageNet-LT, ResNet-10, top-1 % (Many / Med / Few / All)",
    metrics={"test/acc_many": "Many", "test/acc_medium": "Med", "test/acc_few": "Few", "test/acc": "All"},
    rows={
        "CE": {"Many": "57.70", "Med": "26.60", "Few": "4.40", "All": "35.80"},
        "CE + text-only (λ=0)": {"Many": "56.63", "Med": "30.69", "Few": "17.90", "All": "39.10"},
        "CE + all levels mixed": {"Many": "56.77", "Med": "30.88", "Few": "19.17", "All": "39.40"},
        "CE + DisCL adaptive": {"Many": "56.21", "Med": "30.43", "Few": "16.78", "All": "38.65"},
        "CE + DisCL specific→diverse": {"Many": "56.71", "Med": "30.67", "Few": "18.36", "All": "39.18"},
        "CE + DisCL diverse→specific": {"Many": "56.78", "Med": "30.73", "Few": "23.64", "All": "39.82"},
        "BS (Balanced Softmax)": {"Many": "51.14", "Med": "37.02", "Few": "19.29", "All": "39.80"},
        "BS + DisCL": {"Many": "52.68", "Med": "37.68", "Few": "21.36", "All": "41.33"},
    },
    match={
        ("plain", "ce"): "CE",
        ("text_only", "ce"): "CE + text-only (λ=0)",
        ("all_levels", "ce"): "CE + all levels mixed",
        ("discl_adaptive", "ce"): "CE + DisCL adaptive",
        ("discl_specific_to_diverse", "ce"): "CE + DisCL specific→diverse",
        ("discl_diverse_to_specific", "ce"): "CE + DisCL diverse→specific",
        ("plain", "balanced_softmax"): "BS (Balanced Softmax)",
        ("discl_diverse_to_specific", "balanced_softmax"): "BS + DisCL",
    },
)

IWILDCAM = PaperTable(
    title="paper: iWildCam, CLIP ViT-B/16 (FLYP), macro F1 %, mean (std) over 3 seeds",
    metrics={"test_ood/f1_macro": "OOD", "test_id/f1_macro": "ID"},
    rows={
        "FLYP": {"OOD": "35.5 (1.1)", "ID": "52.2 (0.6)"},
        "FLYP + ALIA": {"OOD": "36.9 (0.3)", "ID": "52.6 (0.4)"},
        "+ text-only": {"OOD": "34.2 (0.4)", "ID": "51.4 (0.3)"},
        "+ fixed guidance": {"OOD": "36.0 (0.3)", "ID": "50.8 (0.6)"},
        "+ all levels mixed": {"OOD": "36.5 (0.6)", "ID": "53.4 (0.5)"},
        "DisCL easy-to-hard (non-adaptive)": {"OOD": "35.2 (0.9)", "ID": "51.4 (0.5)"},
        "DisCL random": {"OOD": "35.9 (0.1)", "ID": "52.1 (0.2)"},
        "FLYP + DisCL adaptive": {"OOD": "38.2 (0.5)", "ID": "54.3 (1.4)"},
    },
    match={
        ("plain", None): "FLYP",
        ("text_only", None): "+ text-only",
        ("fixed_guidance", None): "+ fixed guidance",
        ("all_levels", None): "+ all levels mixed",
        ("discl_diverse_to_specific", None): "DisCL easy-to-hard (non-adaptive)",
        ("discl_random", None): "DisCL random",
        ("discl_adaptive", None): "FLYP + DisCL adaptive",
    },
)


def table_for(dataset: str, metrics: list[str]) -> PaperTable | None:
    """The paper table our runs compare to: by dataset name, else by which metrics the runs logged."""
    if "iwildcam" in dataset or any(m in IWILDCAM.metrics for m in metrics):
        return IWILDCAM
    if any(m in IMAGENET_LT.metrics for m in metrics):
        return IMAGENET_LT
    return None


def paper_row(table: PaperTable, method: str, loss: str) -> str | None:
    return table.match.get((method, loss), table.match.get((method, None)))


def as_frame(table: PaperTable) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(table.rows, orient="index")
    frame.index.name = "paper row"
    return frame
