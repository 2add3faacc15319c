"""The steps that change the model once the search has chosen what to keep, each with one shape:
the adapter, calibration batches and settings in, the model changed in place, and what the step
did for the report out (with the accuracy before it, where there is data to measure it on).

    narrow → BatchNorm re-estimation (CNNs) → closed-form re-fit

`evaluate` is a callable model → {"accuracy", "ci95", "n"}, or None when no evaluation data was
given (then the report has no accuracy before the step).
"""
from __future__ import annotations


def _before(evaluate, model, what: str):
    return None if evaluate is None else evaluate(model, f"pruned accuracy before {what}")["accuracy"]


def recalibrate(adapter, batches, evaluate=None) -> dict | None:
    """BatchNorm statistics re-estimated on the calibration batches (optin.recalibrate); None
    when the model has no BatchNorm."""
    from .recalibrate import batchnorms, recalibrate_batchnorm

    if not batchnorms(adapter.model):
        return None
    before = _before(evaluate, adapter.model, "BatchNorm recalibration")
    n = recalibrate_batchnorm(adapter.model, batches, adapter.input_names())
    return {"layers": n, "examples": sum(len(next(iter(b.values()))) for b in batches), "accuracy_before": before}


def refit(dense, adapter, batches, spec, cfg, evaluate=None) -> dict:
    """The closed-form re-fit of the narrowed model towards `dense` (optin.reconstruct)."""
    from .reconstruct import reconstruct

    before = _before(evaluate, adapter.model, "reconstruction")
    return {**reconstruct(dense, adapter, batches, spec, cfg), "accuracy_before": before}
