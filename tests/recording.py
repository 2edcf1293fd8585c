"""What the trainer is handed, recorded while a test trains for real; and what a run logs (``Recorder``)."""

from __future__ import annotations

from harness.engine.train import Part, Trainer


def recorded_parts(monkeypatch) -> list[list[Part]]:
    """Every epoch's parts, as the trainer is handed them (the list fills as training runs)."""
    seen, original = [], Trainer.train_epoch

    def recording(self, parts, epoch, *args, **kwargs):
        seen.append(parts)
        return original(self, parts, epoch, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", recording)
    return seen


def recorded_trainers(monkeypatch) -> list[Trainer]:
    """Every trainer ``fine_tune`` makes (the list fills as it runs), to read its steps and schedule after."""
    import harness.phases.fine_tune as phase

    made = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(phase, "Trainer", Recording)
    return made


class Recorder:
    """An MLflow run as the phases use it: the metrics it was given, by name (the last value of each)."""

    id = "recorded"

    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step=0):
        self.metrics.update(metrics)
