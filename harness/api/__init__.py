"""All that a method, dataset, generator, scorer or model plugin imports.

A plugin subclasses a base here, registers it with its decorator (or names it in an entry point of the group
``discl_harness.methods``, ``.datasets``, ``.generators``, ``.scorers`` or ``.models``), and raises a
``HarnessError`` for anything its user can fix.
"""

from harness.core.errors import DataError, HarnessError
from harness.core.registry import (
    get_dataset,
    get_generator,
    get_method,
    get_model,
    get_scorer,
    list_datasets,
    list_generators,
    list_methods,
    list_models,
    list_scorers,
    register_dataset,
    register_generator,
    register_method,
    register_model,
    register_scorer,
)
from harness.data.base import DatasetBundle, FileImages, LabeledImages, TensorImages
from harness.generators.base import GenerationItem, Generator, Sampling
from harness.models.base import Classifier, HarnessModel
from harness.phases.curriculum import REAL, Curriculum, StageContext
from harness.scorers.base import Scorer

__all__ = [
    "REAL",
    "Classifier",
    "Curriculum",
    "DataError",
    "DatasetBundle",
    "FileImages",
    "GenerationItem",
    "Generator",
    "HarnessError",
    "HarnessModel",
    "LabeledImages",
    "Sampling",
    "Scorer",
    "StageContext",
    "TensorImages",
    "get_dataset",
    "get_generator",
    "get_method",
    "get_model",
    "get_scorer",
    "list_datasets",
    "list_generators",
    "list_methods",
    "list_models",
    "list_scorers",
    "register_dataset",
    "register_generator",
    "register_method",
    "register_model",
    "register_scorer",
]
