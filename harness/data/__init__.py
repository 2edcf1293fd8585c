"""Datasets register themselves on import."""
from harness.data import digits_lt  # noqa: F401
from harness.data import digits_field  # noqa: F401
from harness.data import imagenet_lt  # noqa: F401
from harness.data import iwildcam  # noqa: F401
from harness.data.base import DataError, DatasetBundle, LabeledImages  # noqa: F401


def load_dataset(cfg) -> DatasetBundle:
    from harness.registry import get_dataset

    return get_dataset(cfg.data.name)(cfg)
