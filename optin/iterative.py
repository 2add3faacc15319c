"""Selection that knows about the re-fit, in K-prune's order (Park et al., ICLR 2024, §4): the
mask of block l is chosen after the blocks below it are pruned and re-fit, on scores of that
partly pruned model (`--select iterative`).

One-shot selection scores every unit on the dense model and re-fits afterwards. Once blocks
0…l−1 have lost units and been re-fit, what block l's units carry has changed (the drift they
pass up, and what the re-fit put back). Round l therefore re-scores the partly pruned model,
searches the remaining budget over blocks l…L−1 (the blocks below keep what earlier rounds
fixed; their cost comes off the budget) and fixes only block l's part of that mask; block l is
then masked and re-fit, and round l+1 starts. Round 0 is the one-shot search, so block 0 keeps
what one-shot selection gives it. K-prune steps sublayer by sublayer; this steps block by block
(attention and FFN together), which halves the scorings. `reallocate=False` (`--select
iterative-units`) keeps each block's one-shot share and lets the rounds choose only which units.

The rounds mask instead of narrowing: the scorers work at the dense widths (`Dims`), so a working
copy keeps them, with the fixed masks in forward pre-hooks (optin.masking) and its re-fit written
over full-width modules (a removed unit's input is zero, so its weights do not matter). The chosen
spec then goes through the usual narrow → re-fit of the dense model (optin.prune).

Cost: one scoring per block (round 0 reuses the one-shot scores) and one re-fit's worth of Gram
accumulation over the rounds.
"""
from __future__ import annotations

import copy
import time

import torch
from tqdm.auto import tqdm

from .masking import mask_hooks
from .reconstruct import reconstruct
from .search import search


def fixed_cost(costs, head_mask: torch.Tensor, neuron_mask: torch.Tensor, upto: int) -> float:
    """Cost (the cost model's units, without its fixed part) of what blocks < upto keep."""
    kh, kn = head_mask.sum(1).tolist(), neuron_mask.sum(1).tolist()
    return sum(kh[i] * costs.per_head[i] + kn[i] * costs.per_neuron[i] for i in range(upto))


def top_units(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask of the k best-scored units (ties: the lower index, as the search breaks them)."""
    m = torch.zeros_like(scores)
    m[torch.argsort(scores, descending=True, stable=True)[:k]] = 1.0
    return m


def iterative_masks(adapter, score, costs, budget: float, align: int, allocation: str, recon_batches=None,
                    recon_cfg=None, first=None, reallocate: bool = True):
    """Head and neuron masks ([layers, heads], [layers, ffn]) chosen block by block.

    adapter: over the dense model (left as it is); score: adapter → optin.importance.Scores on the
    calibration data; costs / budget / align / allocation: as optin.search.search takes them;
    recon_batches / recon_cfg: the re-fit's data and settings (None: the rounds only re-score);
    first: the dense model's scores, when already computed; reallocate False: every block keeps
    the number of units the one-shot search gives it, and the rounds choose only which units.
    Returns (head_mask, neuron_mask, rounds), rounds saying what each chose and planned."""
    d = adapter.dims()
    L = d.num_layers
    work = type(adapter)(copy.deepcopy(adapter.model))
    dev = next(work.model.parameters()).device
    hm, nm = torch.zeros(L, d.num_heads), torch.zeros(L, d.ffn_size)
    rounds, plan = [], None  # plan: round 0's search (the one-shot masks)
    with mask_hooks(work) as state:
        for l in tqdm(range(L), desc="iterative selection", unit="block"):
            t = time.time()
            s = first if l == 0 and first is not None else score(work)
            heads, neurons = s.heads.clone().float(), s.neurons.clone().float()
            heads[:l], neurons[:l] = float("-inf"), float("-inf")  # fixed by earlier rounds
            if l == 0 or reallocate:
                r = search(heads, neurons, costs, budget - fixed_cost(costs, hm, nm, l), align, allocation)
                plan = plan or r
                hm[l], nm[l] = r.head_mask[l], r.neuron_mask[l]
            else:
                hm[l] = top_units(heads[l], int(plan.head_mask[l].sum()))
                nm[l] = top_units(neurons[l], int(plan.neuron_mask[l].sum()))
            t_score = time.time() - t
            if l + 1 < L and (hm[l].sum() < d.layer_heads[l] or nm[l].sum() < d.layer_ffn[l]):
                state.heads[l], state.neurons[l] = hm[l].to(dev), nm[l].to(dev)
                if recon_batches is not None:
                    reconstruct(adapter, work, recon_batches, None, recon_cfg, blocks=range(l, l + 1))
            rounds.append({"block": l, "heads": int(hm[l].sum()), "neurons": int(nm[l].sum()),
                           "planned_heads": (r if reallocate else plan).head_mask[l:].sum(1).int().tolist(),
                           "planned_neurons": (r if reallocate else plan).neuron_mask[l:].sum(1).int().tolist(),
                           "scoring_s": t_score, "seconds": time.time() - t})
    del work
    return hm, nm, rounds


def select_masks(mode: str, adapter, scores, score, costs, budget: float, align: int, allocation: str,
                 recon_batches=None, recon_cfg=None):
    """The masks `--select mode` gives: one-shot (optin.search on the dense model's `scores`),
    refit-split (the k best head/neuron splits of those scores, the one closest to dense after
    the re-fit: optin.refit_split), iterative or iterative-units (`iterative_masks`, round 0
    reusing `scores`). Returns (head_mask, neuron_mask, rounds); rounds is None for one-shot,
    the candidate splits for refit-split."""
    if mode == "one-shot":
        r = search(scores.heads, scores.neurons, costs, budget, align, allocation)
        return r.head_mask, r.neuron_mask, None
    if mode == "refit-split":
        from .refit_split import refit_split_masks

        return refit_split_masks(adapter, scores, costs, budget, align, allocation, recon_batches, recon_cfg)
    return iterative_masks(adapter, score, costs, budget, align, allocation, recon_batches, recon_cfg,
                           first=scores, reallocate=mode == "iterative")
