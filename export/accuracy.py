"""Task accuracy of a deployed engine: its predictions on the test split against the labels,
against the PyTorch model it was built from, and against the dense model.

Logit parity on 64 calibration samples says an FP32 engine is the model; it says little about
an INT8 or FP16 one, whose logits move by design. What counts for a classifier is the task, so
every engine is scored on the test split the pruner evaluated on (export.taskdata). Accuracies
are fractions with a 95% interval (±1.96·√(p(1−p)/n)); drops are in points (100 × difference,
positive = worse than the reference).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch


def predictions(run, batches) -> np.ndarray:
    """argmax of `run(batch)["logits"]` over every batch (any backend's session); classes are axis 1
    of a classifier's [B, C] and of a segmenter's [B, C, H, W] (one prediction per pixel)."""
    return np.concatenate([np.asarray(run(b)["logits"]).argmax(1) for b in batches])


@torch.inference_mode()
def torch_predictions(model, batches) -> np.ndarray:
    return np.concatenate([model(**{k: v for k, v in b.items() if k != "labels"}).logits.argmax(1).numpy()
                           for b in batches])


def ci95(p: float, n: int) -> float:
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _dense_accuracy(loaded, batches, labels: np.ndarray, torch_acc: float, score) -> tuple[float | None, str]:
    """The dense model's accuracy on the same examples: the model itself when it is dense; the
    pruner's report.json when it evaluated exactly these examples; else the dense source, run."""
    from optin.io import load_model, read_json

    if not loaded.pruned:
        return torch_acc, "this folder's model (dense)"
    acc = (read_json(os.path.join(loaded.path, "report.json"), {}) or {}).get("accuracy") or {}
    if acc.get("test_examples") == len(labels) and acc.get("dense") is not None:  # the same metric (optin.tasks)
        return float(acc["dense"]), "report.json (same test examples)"
    src = loaded.meta.get("source")
    if not src or not os.path.isdir(src):
        return None, "dense source unknown (optin.json has no source folder)"
    model, _ = load_model(src)
    return score(torch_predictions(model, batches))["accuracy"], f"computed from {src}"


def engine_accuracy(loaded, run, eval_limit: int | None = None, limits=None, log=print) -> dict:
    """{"available", "engine", "torch", "dense", "ci95", "n", "agreement_with_torch",
    "drop_vs_torch_points", "drop_vs_dense_points", ...} for a session `run` of loaded's model.
    limits: the engine's shape range ((min batch, min seq), (max batch, max seq))."""
    from .taskdata import batches as make, splits

    sp = splits(loaded, eval_limit)
    if not sp.test or loaded.tokenizer is None:
        why = sp.note if not sp.test else "no processor (tokenizer) in the folder"
        return {"available": False, "reason": f"no labelled test data: {why}"}
    bs = make(loaded, sp.test, 64, limits)
    labels = np.concatenate([b["labels"].numpy() for b in bs])
    inputs = [{k: v for k, v in b.items() if k != "labels"} for b in bs]
    eng = predictions(run, inputs)
    ref = torch_predictions(loaded.model, inputs)
    n = len(labels)
    # the family's metric (optin.tasks): accuracy, or a segmenter's mIoU with its bootstrap interval
    from optin.adapters import adapter_for

    task, classes = adapter_for(loaded.model).task, loaded.model.config.num_labels
    score = lambda pred: task.score(pred, labels, classes)  # noqa: E731
    got = score(eng)
    acc, torch_acc = got["accuracy"], score(ref)["accuracy"]
    dense, dense_src = _dense_accuracy(loaded, inputs, labels, torch_acc, score)
    out = {"available": True, "engine": acc, "torch": torch_acc, "dense": dense, "ci95": got["ci95"], "n": n,
           "metric": task.metric,
           "agreement_with_torch": float((eng == ref).mean()),
           "drop_vs_torch_points": 100 * (torch_acc - acc),
           "drop_vs_dense_points": None if dense is None else 100 * (dense - acc),
           "dense_source": dense_src, "data": sp.note, "eval_limit": sp.eval_limit,
           "unit": "accuracy as a fraction; drops in points (100 x difference), positive = worse"}
    log(f"optin engine: test {task.metric} {acc:.2%} (±{out['ci95']:.1%}, n={n}); PyTorch {torch_acc:.2%}"
        + ("" if dense is None else f", dense {dense:.2%}") + f"; agreement with PyTorch {out['agreement_with_torch']:.3f}")
    return out
