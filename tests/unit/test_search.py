"""Mask search: budget respected, optimal for additive scores, alignment, infeasible budgets."""
import itertools

import pytest
import torch

from optin.errors import InfeasibleBudget
from optin.search import search
from profiling.macs import mac_cost_model


def _setup(seed=0, L=3, H=4, F=16):
    g = torch.Generator().manual_seed(seed)
    cm = mac_cost_model(L, 32, 8, 16, fixed=1000)
    return torch.rand(L, H, generator=g), torch.rand(L, F, generator=g) * 0.05, cm, cm.total([H] * L, [F] * L)


@pytest.mark.parametrize("frac", [0.2, 0.45, 0.6, 0.9])
def test_budget_respected_and_best_split(frac):
    hs, ns, cm, dense = _setup()
    r = search(hs, ns, cm, frac * dense)
    kh, kn = r.head_mask.sum(1).tolist(), r.neuron_mask.sum(1).tolist()
    assert cm.total(kh, kn) <= frac * dense * (1 + 1e-6)
    assert r.cost == pytest.approx(cm.total(kh, kn))
    # brute force over the number of kept heads: the search's total is the best
    best = -1.0
    hsort, nsort = hs.flatten().sort(descending=True).values, ns.flatten().sort(descending=True).values
    for h in range(hs.numel() + 1):
        left = frac * dense * (1 + 1e-6) - cm.fixed - h * cm.per_head[0]
        if left < 0:
            break
        n = min(int(left // cm.per_neuron[0]), ns.numel())
        best = max(best, float(hsort[:h].sum() + nsort[:n].sum()))
    got = float((hs * r.head_mask).sum() + (ns * r.neuron_mask).sum())
    assert got == pytest.approx(best, rel=1e-6)


def test_full_budget_keeps_everything():
    hs, ns, cm, dense = _setup()
    r = search(hs, ns, cm, dense)
    assert r.head_mask.all() and r.neuron_mask.all()


@pytest.mark.parametrize("align", [4, 8])
def test_align_keeps_multiples(align):
    hs, ns, cm, dense = _setup(seed=3)
    r = search(hs, ns, cm, 0.5 * dense, align=align)
    assert all(int(n) % align == 0 for n in r.neuron_mask.sum(1))
    assert r.cost <= 0.5 * dense * (1 + 1e-6)
    # kept neurons in a layer are that layer's best
    for i in range(ns.shape[0]):
        kept, dropped = ns[i][r.neuron_mask[i] > 0], ns[i][r.neuron_mask[i] == 0]
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()


def test_infeasible_budget_raises():
    hs, ns, cm, dense = _setup()
    with pytest.raises(InfeasibleBudget, match="unprunable"):
        search(hs, ns, cm, cm.fixed * 0.5)


def test_more_budget_never_less_score():
    hs, ns, cm, dense = _setup(seed=5)
    totals = []
    for frac in (0.3, 0.5, 0.7):
        r = search(hs, ns, cm, frac * dense)
        totals.append(float((hs * r.head_mask).sum() + (ns * r.neuron_mask).sum()))
    assert totals == sorted(totals)
    assert not any(a == b for a, b in itertools.pairwise(totals))


def test_even_allocation_spreads_the_budget_and_keeps_each_layers_best():
    """Scores that fall with depth: the global ranking empties the last layer, the even one keeps
    about the same share in every layer, each layer's best units by score."""
    hs, ns, cm, dense = _setup(seed=5)
    ns = ns * torch.tensor([[100.0], [10.0], [1.0]])  # layer 0 ≫ layer 2
    hs = hs * 0 + 10  # heads alike: the neurons decide
    g = search(hs, ns, cm, 0.3 * dense)
    e = search(hs, ns, cm, 0.3 * dense, allocation="even")
    assert g.neuron_mask[2].sum() == 0 and g.neuron_mask[0].all()
    kept = e.neuron_mask.sum(1)
    assert int(kept.max() - kept.min()) <= 1 and kept.min() > 0
    assert e.cost <= 0.3 * dense * (1 + 1e-6)
    for i in range(ns.shape[0]):
        k, d = ns[i][e.neuron_mask[i] > 0], ns[i][e.neuron_mask[i] == 0]
        assert k.min() >= d.max()


def test_unknown_allocation_is_one_line():
    from optin.errors import BadInput

    hs, ns, cm, dense = _setup()
    with pytest.raises(BadInput, match="--allocation"):
        search(hs, ns, cm, dense, allocation="uniform")


def test_resnet_allocates_evenly_by_default():
    from optin.adapters.base import Adapter
    from optin.adapters.efficientnet_lite import EfficientNetLiteAdapter
    from optin.adapters.resnet import ResNetAdapter

    assert ResNetAdapter.default_allocation == "even"
    assert Adapter.default_allocation == EfficientNetLiteAdapter.default_allocation == "global"


@pytest.mark.parametrize("frac", [0.2, 0.6])
def test_search_splits_are_the_best_splits_in_order_each_within_budget(frac):
    from optin.search import search_splits

    hs, ns, cm, dense = _setup()
    splits = search_splits(hs, ns, cm, frac * dense, k=4)
    first = search(hs, ns, cm, frac * dense)
    assert torch.equal(splits[0].head_mask, first.head_mask) and torch.equal(splits[0].neuron_mask, first.neuron_mask)
    totals = [float((hs * r.head_mask).sum() + (ns * r.neuron_mask).sum()) for r in splits]
    feasible = sum(cm.fixed + h * cm.per_head[0] <= frac * dense * (1 + 1e-6) for h in range(hs.numel() + 1))
    assert totals == sorted(totals, reverse=True) and len({r.kept_heads for r in splits}) == len(splits) == min(4, feasible)
    for r in splits:
        assert cm.total(r.head_mask.sum(1).tolist(), r.neuron_mask.sum(1).tolist()) <= frac * dense * (1 + 1e-6)
