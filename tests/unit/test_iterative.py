"""Selection block by block on the re-fit model (optin.iterative, `--select iterative`): its
rounds re-fit a masked full-width copy, which must give what narrowing and re-fitting give; the
masks it returns stay within the budget and start from the one-shot search."""
import copy

import pytest
import torch

from conftest import awkward_spec, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.errors import BadInput
from optin.importance import ScoreConfig, get_method
from optin.iterative import fixed_cost, iterative_masks
from optin.masking import mask_hooks
from optin.narrow import narrow
from optin.reconstruct import ReconConfig, reconstruct
from optin.search import search


def _inputs(b):
    return {k: v for k, v in b.items() if k != "labels"}


def test_masked_refit_gives_the_narrowed_refit(family):
    """The rounds' re-fit (masks in hooks, spec None) against the real one (narrow, then re-fit):
    the same logits, emptied sublayers included. A wrong column set, a producer fit at the wrong
    outputs or a mask the re-fit does not see would move them apart."""
    model = tiny_model(family, seed=2)
    dense = adapter_for(copy.deepcopy(model))
    spec = awkward_spec(family)
    calib = tiny_batches(n_batches=3, batch=8, model_type=family, seed=2)
    cfg = ReconConfig()
    b = _inputs(tiny_batches(model_type=family, seed=3)[0])

    masked = adapter_for(copy.deepcopy(model))
    with torch.no_grad(), mask_hooks(masked) as state:
        state.set(*spec.masks())
        before = masked.model(**b).logits
        reconstruct(dense, masked, calib, None, cfg)
        got = masked.model(**b).logits

    narrowed = adapter_for(model)
    narrow(narrowed, spec)
    reconstruct(dense, narrowed, calib, spec, cfg)
    with torch.no_grad():
        want = narrowed.model(**b).logits
    assert not torch.allclose(before, want, atol=1e-3)  # the re-fit moved the logits
    # exact for the transformers; a CNN's masked BatchNorm and convs round differently (1e-3 seen)
    assert torch.allclose(got, want, rtol=1e-3, atol=2.5e-3 * float(want.abs().max()))


def test_refit_of_some_blocks_leaves_the_others(family):
    model = tiny_model(family, seed=1)
    dense = adapter_for(copy.deepcopy(model))
    pruned = adapter_for(model)
    spec = awkward_spec(family)
    narrow(pruned, spec)
    blocks = pruned.layers()
    before = [[p.detach().clone() for p in blk.parameters()] for blk in blocks]
    rep = reconstruct(dense, pruned, tiny_batches(n_batches=2, batch=8, model_type=family), spec,
                      blocks=range(1, 2))
    assert {s["layer"] for blk in rep["layers"] for s in blk} == {1}
    moved = [any(not torch.equal(a, p) for a, p in zip(old, blk.parameters())) for old, blk in zip(before, blocks)]
    assert moved == [False, True, False]


def _fisher(adapter, batches):
    return get_method("fisher")(adapter, batches, ScoreConfig())


@pytest.mark.parametrize("reallocate", [True, False])
@pytest.mark.parametrize("flops", [0.3, 0.6])
def test_iterative_masks_fit_the_budget_and_start_where_one_shot_does(flops, reallocate):
    from optin.prune import cost_model_for, dense_model_macs

    model = tiny_model("bert", seed=0)
    ad = adapter_for(model)
    calib = tiny_batches(n_batches=2, batch=8, model_type="bert")
    costs = cost_model_for(ad, 10)
    budget = flops * dense_model_macs(ad, 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = _fisher(ad, calib)
    one = search(first.heads, first.neurons, costs, budget, 1, "global")
    calls = []

    def score(a):
        calls.append(a.model is model)
        return _fisher(a, calib)

    hm, nm, rounds = iterative_masks(ad, score, costs, budget, 1, "global", calib, ReconConfig(), first=first,
                                     reallocate=reallocate)
    L = ad.dims().num_layers
    assert len(rounds) == L and len(calls) == L - 1 and not any(calls)  # re-scored a copy, once per later block
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the dense model is left alone
    assert costs.fixed + fixed_cost(costs, hm, nm, L) <= budget * (1 + 1e-6)
    assert torch.equal(hm[0], one.head_mask[0]) and torch.equal(nm[0], one.neuron_mask[0])
    assert rounds[0]["planned_heads"] == one.head_mask.sum(1).int().tolist()
    if not reallocate:  # every block keeps the one-shot count; only which units may change
        assert torch.equal(hm.sum(1), one.head_mask.sum(1)) and torch.equal(nm.sum(1), one.neuron_mask.sum(1))


def test_iterative_prune_model_reports_its_rounds_and_refuses_what_it_cannot_do():
    from optin.prune import PruneConfig, prune_model

    calib = tiny_batches(n_batches=2, batch=8, model_type="bert")
    res = prune_model(tiny_model("bert"), calib, config=PruneConfig(flops=0.5, method="fisher", select="iterative",
                                                                     fvcore=False), log=lambda *_: None)
    assert res.report["reconstruction"]["layers"]  # the chosen spec is then narrowed and re-fit as always
    sel = res.report["selection"]
    assert sel["mode"] == "iterative" and [r["heads"] for r in sel["rounds"]] == res.spec.kept_heads
    assert res.report["macs"]["ratio"] <= 0.5 + 1e-6
    with pytest.raises(BadInput, match="--select"):
        PruneConfig(select="greedy").check()
    with pytest.raises(BadInput, match="--token-share"):
        PruneConfig(select="iterative", token_share=0.5).check()
