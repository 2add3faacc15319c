"""Mask search under a cost budget (Kwon et al. 2022, Algorithm 1, generalised to per-layer costs).

Heads and FFN neurons are ranked globally by importance. For every number h of kept heads, the
budget left after the h best heads is filled with the best neurons; the (h, n) with the highest
total kept importance wins. With `align` > 1, neurons are taken in blocks of `align` per layer
(the block score is the sum of its neurons, blocks follow each layer's own ranking), so every
layer keeps a multiple of `align` neurons, as GEMM kernels prefer. Units scored -inf (beyond a
layer's own width, where widths differ across layers) are never ranked, so never kept.

`allocation="even"` first replaces each layer's scores by their percentile within the layer (times
the mean score, so heads and neurons keep their relative scale): the budget then spreads evenly
over the layers and the scores only choose which units each layer keeps. ResNet uses it
(`Adapter.default_allocation`): there the scores of late, wide blocks are small, so the global
ranking empties them, which neither BatchNorm re-estimation nor the re-fit can undo (resnet-fmnist
on dev, after the re-fit: 28.3% global vs 90.8% even at 0.3 of MACs; docs/reconstruction.md).
Elsewhere global wins on dev: vit-fmnist at 0.2, 84.8% vs 66.4%; lite0-fmnist (EfficientNet-Lite)
at 0.6 / 0.4, 90.7 / 88.6 vs 89.8 / 87.9.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BadInput, InfeasibleBudget


@dataclass
class SearchResult:
    head_mask: torch.Tensor
    neuron_mask: torch.Tensor
    cost: float
    budget: float
    kept_heads: int
    kept_neurons: int


def _rank(scores: torch.Tensor, costs, block: int):
    """Blocks of `block` units per layer in each layer's own order, then sorted globally.
    Returns (layer, unit-index tensor) per block, their cumulative score and cost."""
    L = scores.shape[0]
    blocks, bscore, bcost = [], [], []
    for i in range(L):
        order = torch.argsort(scores[i], descending=True, stable=True)
        order = order[scores[i, order] > float("-inf")]  # units the layer does not have
        for j, s in enumerate(range(0, len(order), block)):
            idx = order[s:s + block]
            blocks.append((i, j, idx))
            bscore.append(float(scores[i, idx].sum()))
            bcost.append(float(costs[i]) * len(idx))
    # stable global order; within a layer, block j precedes j+1 on ties
    perm = sorted(range(len(blocks)), key=lambda b: (-bscore[b], blocks[b][0], blocks[b][1]))
    blocks = [blocks[b] for b in perm]
    zero = torch.zeros(1, dtype=torch.float64)
    cum_s = torch.cat([zero, torch.tensor([bscore[b] for b in perm], dtype=torch.float64).cumsum(0)])
    cum_c = torch.cat([zero, torch.tensor([bcost[b] for b in perm], dtype=torch.float64).cumsum(0)])
    return blocks, cum_s, cum_c


ALLOCATIONS = ("global", "even")


def check_allocation(name: str) -> None:
    if name not in ALLOCATIONS:
        raise BadInput(f"unknown --allocation {name!r}; choose one of: {', '.join(ALLOCATIONS)}")


def layer_percentiles(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's scores → their percentile within the layer (1: its best unit) times the mean
    score over all layers; absent units (-inf) stay absent."""
    out = scores.clone()
    valid = scores[scores > float("-inf")]
    scale = float(valid.mean()) if valid.numel() else 1.0
    for i in range(scores.shape[0]):
        ok = scores[i] > float("-inf")
        n = int(ok.sum())
        if n:
            out[i, ok] = scale * (torch.argsort(torch.argsort(scores[i, ok], stable=True)) + 1).to(out.dtype) / n
    return out


def search(head_scores, neuron_scores, cost_model, budget: float, align: int = 1,
           allocation: str = "global") -> SearchResult:
    """budget: allowed cost in the cost model's units (e.g. MACs per example)."""
    return search_splits(head_scores, neuron_scores, cost_model, budget, align, allocation, 1)[0]


def search_splits(head_scores, neuron_scores, cost_model, budget: float, align: int = 1,
                  allocation: str = "global", k: int = 1) -> list[SearchResult]:
    """The k best masks over the number of kept heads (each filled with the best neurons the
    budget leaves), best first: the first is `search`'s. A re-fit-aware selection
    (optin.refit_split) chooses among them."""
    if align < 1:
        raise BadInput(f"--align must be a positive integer, got {align}")
    check_allocation(allocation)
    if allocation == "even":
        head_scores, neuron_scores = layer_percentiles(head_scores), layer_percentiles(neuron_scores)
    if budget < cost_model.fixed:
        raise InfeasibleBudget(f"budget {budget:.4g} is below the model's unprunable cost {cost_model.fixed:.4g} "
                               "(embeddings/classifier); raise the budget")
    hblocks, hs, hc = _rank(head_scores, cost_model.per_head, 1)
    nblocks, ns, nc = _rank(neuron_scores, cost_model.per_neuron, align)
    # float slack so that a budget equal to the dense cost keeps everything
    left = budget - cost_model.fixed - hc + 1e-6 * budget
    feasible = left >= 0
    kn_at = torch.searchsorted(nc, left.clamp(min=0), right=True) - 1
    total = torch.where(feasible, hs + ns[kn_at.clamp(min=0)], torch.tensor(float("-inf"), dtype=torch.float64))
    order = torch.argsort(total, descending=True, stable=True)[:max(1, min(k, int(feasible.sum())))]
    out = []
    for h in order.tolist():
        kn = int(kn_at[h])
        hm = torch.zeros_like(head_scores)
        nm = torch.zeros_like(neuron_scores)
        for i, _, idx in hblocks[:h]:
            hm[i, idx] = 1.0
        for i, _, idx in nblocks[:kn]:
            nm[i, idx] = 1.0
        cost = cost_model.fixed + float(hc[h]) + float(nc[kn])
        out.append(SearchResult(hm, nm, cost, budget, h, int(nm.sum())))
    return out
