"""What the trainer is handed, recorded while a test trains for real."""

from __future__ import annotations

from harness.engine.train import Part, Trainer


def recorded_parts(monkeypatch) -> list[list[Part]]:
    """Every epoch's parts, as the trainer is handed them (the list fills as training runs)."""
    seen, original = [], Trainer.train_epoch

    def recording(self, parts, epoch, max_steps=None):
        seen.append(parts)
        return original(self, parts, epoch, max_steps)

    monkeypatch.setattr(Trainer, "train_epoch", recording)
    return seen
