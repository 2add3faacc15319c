"""`--select refit-split` (optin.refit_split): of the search's best head/neuron splits, the one
whose re-fit model is closest to the dense one; on every family, and through prune_model."""
import copy

import pytest
import torch

from conftest import tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.errors import BadInput
from optin.importance import ScoreConfig, get_method
from optin.narrow import narrow
from optin.prune import PruneConfig, cost_model_for, dense_model_macs, prune_model
from optin.reconstruct import ReconConfig, reconstruct
from optin.refit_split import _log_probs, kl_to_dense, refit_split_masks
from optin.search import search_splits
from optin.spec import PruneSpec


def test_refit_split_picks_the_candidate_closest_to_dense(family):
    """Each candidate is recomputed here by hand (narrow a copy, re-fit, KL to dense): the chosen
    one has the smallest KL, and the reported KLs are those. A wrong candidate order, a KL
    against the wrong model or a re-fit on other data would break the equalities."""
    model = tiny_model(family, seed=4)
    ad = adapter_for(model)
    calib = tiny_batches(n_batches=3, batch=8, model_type=family, seed=4)
    scores = get_method("fisher")(ad, calib, ScoreConfig())
    costs, budget = cost_model_for(ad, 10), 0.4 * dense_model_macs(ad, 10)
    state = copy.deepcopy(model.state_dict())
    hm, nm, rows = refit_split_masks(ad, scores, costs, budget, 1, ad.default_allocation, calib, ReconConfig(),
                                     k=3, fit_examples=8)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the dense model is left alone
    splits = search_splits(scores.heads, scores.neurons, costs, budget, 1, ad.default_allocation, 3)
    if len(splits) == 1:  # no heads (a CNN): one possible split, nothing to choose
        assert rows == [] and torch.equal(nm, splits[0].neuron_mask)
        return
    dense_logp = _log_probs(ad, calib)
    kls = []
    for r in splits:
        cand = adapter_for(copy.deepcopy(model))
        spec = PruneSpec.from_masks(model.config.model_type, r.head_mask, r.neuron_mask, dims=ad.dims())
        narrow(cand, spec)
        reconstruct(ad, cand, calib[:1], spec, ReconConfig())
        kls.append(kl_to_dense(dense_logp, cand, calib))
    assert [r["kl"] for r in rows] == pytest.approx(kls, rel=1e-4, abs=1e-9)
    best = min(range(len(kls)), key=kls.__getitem__)
    assert [r.get("chosen", False) for r in rows] == [i == best for i in range(len(kls))]
    assert torch.equal(hm, splits[best].head_mask) and torch.equal(nm, splits[best].neuron_mask)


def test_prune_model_with_refit_split_reports_its_candidates():
    calib = tiny_batches(n_batches=2, batch=8, model_type="bert")
    res = prune_model(tiny_model("bert"), calib, config=PruneConfig(flops=0.4, method="fisher", select="refit-split",
                                                                     fvcore=False), log=lambda *_: None)
    sel = res.report["selection"]
    assert sel["mode"] == "refit-split" and len(sel["rounds"]) > 1
    chosen = [r for r in sel["rounds"] if r.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["heads"] == sum(res.spec.kept_heads)
    assert res.report["reconstruction"]["layers"] and res.report["macs"]["ratio"] <= 0.4 + 1e-6
    with pytest.raises(BadInput, match="--no-reconstruct"):
        PruneConfig(select="refit-split", reconstruct=False).check()


def test_auto_selection_splits_by_the_refit_at_low_budgets_only():
    """`--select auto` (the default): refit-split at or below SPLIT_AT_OR_BELOW of MACs with the
    re-fit on, one-shot above it, without the re-fit or with a token schedule; named modes as asked."""
    from optin.prune import SPLIT_AT_OR_BELOW

    assert PruneConfig().select == "auto"
    assert PruneConfig(flops=SPLIT_AT_OR_BELOW).selection() == "refit-split"
    assert PruneConfig(flops=0.2).selection() == "refit-split"
    assert PruneConfig(flops=SPLIT_AT_OR_BELOW + 0.05).selection() == "one-shot"
    assert PruneConfig(flops=0.2, reconstruct=False).selection() == "one-shot"
    assert PruneConfig(flops=0.2, token_share=0.5).selection() == "one-shot"
    assert PruneConfig(flops=0.2, select="one-shot").selection() == "one-shot"
    assert PruneConfig(flops=0.6, select="refit-split").selection() == "refit-split"
    for cfg in (PruneConfig(flops=0.2, reconstruct=False), PruneConfig(flops=0.2, token_share=0.5)):
        cfg.check()  # auto never refuses what one-shot accepts

    calib = tiny_batches(n_batches=2, batch=8, model_type="bert")
    low = prune_model(tiny_model("bert"), calib, config=PruneConfig(flops=0.3, method="fisher", fvcore=False),
                      log=lambda *_: None)
    assert low.report["selection"]["mode"] == "refit-split" and low.report["selection"]["asked"] == "auto"
    assert sum(r.get("chosen", False) for r in low.report["selection"]["rounds"]) == 1
    high = prune_model(tiny_model("bert"), calib, config=PruneConfig(flops=0.5, method="fisher", fvcore=False),
                       log=lambda *_: None)
    assert high.report["selection"]["mode"] == "one-shot" and high.report["selection"]["rounds"] is None
