"""Accuracy with a 95% interval (normal approximation: ±1.96·√(p(1−p)/n))."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def predictions(model, batches, desc: str = "evaluate") -> torch.Tensor:
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    out = []
    for b in tqdm(batches, desc=desc, unit="batch", leave=False):
        inputs = {k: v.to(dev) for k, v in b.items() if k != "labels"}  # one batch at a time on the device
        out.append(model(**inputs).logits.argmax(-1).cpu())
    return torch.cat(out)


def accuracy(model, batches, desc: str = "evaluate") -> dict:
    pred = predictions(model, batches, desc)
    labels = torch.cat([b["labels"].cpu() for b in batches])
    n = len(labels)
    p = float((pred == labels).float().mean())
    return {"accuracy": p, "ci95": 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n), "n": n}
