"""Selection that knows about the re-fit, at the one place where it is cheap to ask: how the budget
is shared between heads and neurons (`--select refit-split`).

The search (optin.search) puts heads and neurons on one additive scale and keeps the split with
the highest total score. Near that optimum the totals are almost flat: one head more or less
trades for tens of FFN neurons at a total score within a percent, and the additive scores cannot
say which side the re-fit repairs better. On the shipped vit-fmnist at 0.2 of MACs the default's
split keeps 13 heads and 36 FFN neurons (every FFN but the first emptied); with the per-layer
counts of Fisher's mask (12 heads, 104 neurons) the same scores reach Fisher's accuracy after the
re-fit (bench/README.md). So the k best splits are each narrowed and re-fit on the first
`fit_examples` re-fit examples, and the one whose output is closest to the dense model's (the KL
of the task's class distributions, on all re-fit examples) wins; the usual narrow → re-fit then
runs on it in optin.prune. Nothing here knows a family: narrowing, BatchNorm re-estimation and
the re-fit are the shared steps, on a copy.

Cost: k narrowings and k re-fits on `fit_examples` examples, and k + 1 forward passes over the
re-fit examples; a model with one possible split (a CNN: no heads) costs nothing. Not with a
token schedule (`--token-share`: refused by PruneConfig.check).
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .calibration import take
from .devices import model_device
from .narrow import narrow
from .recalibrate import batchnorms, recalibrate_batchnorm
from .reconstruct import reconstruct
from .search import search_splits
from .spec import PruneSpec


@torch.no_grad()
def _log_probs(adapter, batches) -> list[torch.Tensor]:
    mode = adapter.model.training
    adapter.model.eval()
    try:
        return [F.log_softmax(adapter.task.rows(adapter.forward(b)).float(), -1) for b in batches]
    finally:
        adapter.model.train(mode)


def kl_to_dense(dense_logp: list[torch.Tensor], adapter, batches) -> float:
    """Mean KL(dense ‖ model) per row of class logits (an example; a pixel for a segmenter)."""
    total = sum(float(F.kl_div(q, p, log_target=True, reduction="sum"))
                for p, q in zip(dense_logp, _log_probs(adapter, batches)))
    return total / sum(len(p) for p in dense_logp)


def refit_split_masks(adapter, scores, costs, budget: float, align: int, allocation: str, recon_batches,
                      recon_cfg, k: int = 5, fit_examples: int = 128):
    """(head_mask, neuron_mask, candidates): of the k best head/neuron splits of `scores` under
    `budget` (optin.search.search_splits), the one whose re-fit model is closest to the dense one.

    adapter: over the dense model (left as it is); recon_batches / recon_cfg: the re-fit's data
    and settings (the candidates are re-fit on the first `fit_examples`). candidates: per split,
    its rank in the search, head and neuron counts, KL and seconds; the kept one marked chosen."""
    splits = search_splits(scores.heads, scores.neurons, costs, budget, align, allocation, k)
    if len(splits) == 1:
        return splits[0].head_mask, splits[0].neuron_mask, []
    fit = take(recon_batches, fit_examples)
    dense_logp = _log_probs(adapter, recon_batches)
    model_type, dims, dev = adapter.model.config.model_type, adapter.dims(), model_device(adapter.model)
    rows, best = [], None
    for rank, r in enumerate(tqdm(splits, desc="re-fit-aware split", unit="split")):
        t = time.time()
        spec = PruneSpec.from_masks(model_type, r.head_mask, r.neuron_mask, dims=dims)
        cand = type(adapter)(copy.deepcopy(adapter.model))
        narrow(cand, spec)
        cand.model.to(dev)
        if batchnorms(cand.model):
            recalibrate_batchnorm(cand.model, fit, adapter.input_names())
        reconstruct(adapter, cand, fit, spec, recon_cfg, desc="re-fit (candidate)")
        kl = kl_to_dense(dense_logp, cand, recon_batches)
        del cand
        rows.append({"rank": rank, "heads": r.kept_heads, "neurons": r.kept_neurons, "kl": kl,
                     "seconds": time.time() - t})
        if best is None or kl < rows[best]["kl"]:
            best = rank
    rows[best]["chosen"] = True
    return splits[best].head_mask, splits[best].neuron_mask, rows
