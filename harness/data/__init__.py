"""Datasets: each registers with ``@register_dataset`` and is listed in the package's entry points."""

from harness.data.base import DataError, DatasetBundle, LabeledImages  # noqa: F401


def load_dataset(cfg) -> DatasetBundle:
    """The dataset with the configured train and eval transforms attached (None where none is configured)."""
    from harness.config.transforms import build_transform
    from harness.core.registry import get_dataset

    bundle = with_shot_groups(get_dataset(cfg.data.name)(cfg), cfg)
    d = cfg.data
    if d.train_transform is not None:
        bundle.train_transform = build_transform(d.train_transform, d.image_size, "data.train_transform")
    if d.eval_transform is not None:
        bundle.eval_transform = build_transform(d.eval_transform, d.image_size, "data.eval_transform")
    return bundle


def with_shot_groups(bundle: DatasetBundle, cfg) -> DatasetBundle:
    """``data.shot_groups.many_inclusive`` on the bundle, whichever loader built it (a plugin's too)."""
    bundle.many_inclusive = cfg.data.shot_groups.many_inclusive
    return bundle
