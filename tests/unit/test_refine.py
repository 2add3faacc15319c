"""Kwon et al. mask rearrangement and tuning: Fisher blocks, per-layer counts kept, the quadratic
objective never rises, least squares is optimal and lowers the error, folding = masking."""
import itertools

import pytest
import torch
from conftest import tiny_batches, tiny_model

from optin.adapters import adapter_for
from optin.errors import BadInput
from optin.importance import ScoreConfig, get_method
from optin.masking import mask_hooks
from optin.narrow import narrow
from optin.refine import (
    FisherBlocks,
    TuneConfig,
    calibration_loss,
    fisher_blocks,
    fold,
    rearrange,
    reconstruction_errors,
    removal_cost,
    tune,
)
from optin.spec import PruneSpec

L, H, F = 3, 4, 48


def _masks(seed=0, dims=None):
    """Non-uniform counts, one layer with no heads, one with every neuron; within each layer's own
    width where widths differ (dims: the model's Dims; Swin's first stage has 2 heads, 24 neurons)."""
    g = torch.Generator().manual_seed(seed)
    hm = torch.zeros(L, H)
    nm = torch.zeros(L, F)
    widths = zip(dims.layer_heads, dims.layer_ffn) if dims is not None else [(H, F)] * L
    for i, ((kh, kn), (h, f)) in enumerate(zip(((2, 20), (0, 48), (3, 7)), widths)):
        hm[i, torch.randperm(h, generator=g)[:kh]] = 1.0
        nm[i, torch.randperm(f, generator=g)[:kn]] = 1.0
    return hm, nm


def _inputs(b):
    return {k: v for k, v in b.items() if k != "labels"}


def test_fisher_blocks_diagonal_is_fisher_score():
    a = adapter_for(tiny_model("bert"))
    blocks = fisher_blocks(a, tiny_batches())
    s = get_method("fisher")(a, tiny_batches(), ScoreConfig())
    assert blocks.heads.shape == (L, H, H) and blocks.neurons.shape == (L, F, F)
    assert torch.allclose(blocks.heads.diagonal(dim1=1, dim2=2).float(), s.heads, rtol=1e-4)
    assert torch.allclose(blocks.neurons.diagonal(dim1=1, dim2=2).float(), s.neurons, rtol=1e-4, atol=1e-12)
    assert torch.allclose(blocks.neurons, blocks.neurons.transpose(1, 2))


@pytest.mark.parametrize("shrink", [False, True])
def test_rearrange_keeps_counts_and_never_raises_objective(attention_family, shrink):
    family = attention_family  # refine.py works on attention heads and Linear FFNs
    a = adapter_for(tiny_model(family))
    blocks = fisher_blocks(a, tiny_batches())
    bh, bn = blocks.matrices(shrink)  # the objective that rearrange minimises
    d = a.dims()
    for seed in range(3):
        hm, nm = _masks(seed, d)
        hm2, nm2 = rearrange(hm, nm, blocks, shrink=shrink)
        assert torch.equal(hm2.sum(1), hm.sum(1)) and torch.equal(nm2.sum(1), nm.sum(1))
        assert ((hm2 == 0) | (hm2 == 1)).all() and ((nm2 == 0) | (nm2 == 1)).all()
        assert (removal_cost(hm2, bh) <= removal_cost(hm, bh) + 1e-12).all()
        assert (removal_cost(nm2, bn) <= removal_cost(nm, bn) + 1e-12).all()
        # a fixed point: refining the result changes nothing
        hm3, nm3 = rearrange(hm2, nm2, blocks, shrink=shrink)
        assert torch.equal(hm3, hm2) and torch.equal(nm3, nm2)
    # heads are few enough to brute-force: the result is the best subset of each size
    for i in range(L):
        for k in range(1, d.layer_heads[i]):
            m = torch.zeros(L, H)
            m[i, :k] = 1.0
            got = float(removal_cost(rearrange(m, torch.ones(L, F), blocks, shrink=shrink)[0], bh)[i])
            best = min(float(removal_cost(_row(i, keep), bh)[i])
                       for keep in itertools.combinations(range(d.layer_heads[i]), k))
            assert got == pytest.approx(best, rel=1e-9, abs=1e-15)


def _row(i, keep):
    m = torch.ones(L, H)
    m[i] = 0.0
    m[i, list(keep)] = 1.0
    return m


def test_shrinkage_in_range_and_keeps_diagonal():
    blocks = fisher_blocks(adapter_for(tiny_model("bert")), tiny_batches())
    for alpha in (blocks.heads_alpha, blocks.neurons_alpha):
        assert alpha.shape == (L,) and ((alpha >= 0) & (alpha <= 1)).all()
    for raw, shrunk in zip(blocks.matrices(False), blocks.matrices(True)):
        assert torch.allclose(raw.diagonal(dim1=1, dim2=2), shrunk.diagonal(dim1=1, dim2=2))
        assert shrunk.abs().sum() <= raw.abs().sum() + 1e-9


def test_verify_keeps_only_rows_that_lower_the_loss():
    a = adapter_for(tiny_model("bert"))
    batches = tiny_batches()
    blocks = fisher_blocks(a, batches)
    hm, nm = _masks()
    loss = calibration_loss(a, batches)
    hv, nv = rearrange(hm, nm, blocks, verify=loss)
    assert loss(hv, nv) <= loss(hm, nm)
    hr, nr = rearrange(hm, nm, blocks)
    for i in range(L):  # every row is either the input's or the rearranged one
        assert torch.equal(hv[i], hm[i]) or torch.equal(hv[i], hr[i])
        assert torch.equal(nv[i], nm[i]) or torch.equal(nv[i], nr[i])
    hc, nc = rearrange(hm, nm, blocks, verify=lambda h, n: 1.0)  # nothing ever lowers it
    assert torch.equal(hc, hm) and torch.equal(nc, nm)


def test_rearrange_uses_interactions():
    """Units 0 and 1 each look important alone, but their gradients cancel, so removing both
    together costs nothing: the diagonal (what the search sees) cannot tell, the block can."""
    g = torch.tensor([[1.0, -1.0, 0.5], [2.0, -2.0, 0.5]], dtype=torch.float64)  # [examples, units]
    blocks = FisherBlocks((g.T @ g)[None], torch.zeros(1, 2, 2, dtype=torch.float64), 2)
    by_diagonal = torch.tensor([[1.0, 0.0, 0.0]])  # keeps the largest diagonal entry
    hm, _ = rearrange(by_diagonal, torch.ones(1, 2), blocks)
    assert hm.tolist() == [[0.0, 0.0, 1.0]]
    assert float(removal_cost(hm, blocks.heads)) == pytest.approx(0.0)


def test_rearrange_rejects_mismatched_blocks():
    blocks = FisherBlocks(torch.zeros(2, H, H), torch.zeros(2, F, F), 1)
    with pytest.raises(BadInput, match="same"):
        rearrange(*_masks(), blocks)


def _direct_layer0_errors(a, batches, hs, ns):
    """Layer 0's sublayer errors measured directly with forward hooks (independent of the
    normal-equation algebra): its input is the embedding in both models."""
    outs = {}

    def tap(name):
        return lambda mod, args, out: outs.__setitem__(name, out)

    p = a.parts(0)
    handles = [p.o.register_forward_hook(tap("o")), p.ffn_out.register_forward_hook(tap("f"))]
    err = torch.zeros(2, dtype=torch.float64)
    try:
        with torch.no_grad(), mask_hooks(a) as state:
            for b in batches:
                h, ctx = a.embed(b)
                valid = a.valid_tokens(b)

                def real(x):  # windowed attention (Swin) has windows, not examples, first: all real
                    return x[valid] if x.shape[:2] == valid.shape else x.reshape(-1, x.shape[-1])

                state.clear()
                a.run_layer(0, h, ctx)
                dense = (real(outs["o"]), real(outs["f"]))
                state.set(hs, ns)
                a.run_layer(0, h, ctx)
                err += torch.tensor([float(((real(outs[k]) - d).double() ** 2).sum()) for k, d in zip("of", dense)])
    finally:
        for hd in handles:
            hd.remove()
    return err


def test_tune_lowers_reconstruction_error(attention_family):
    family = attention_family  # refine.py works on attention heads and Linear FFNs
    a = adapter_for(tiny_model(family))
    batches = tiny_batches(3, 6, 12)
    hm, nm = _masks(dims=a.dims())
    hs, ns = tune(a, batches, hm, nm)
    assert hs.shape == (L, H) and ns.shape == (L, F)
    assert ((hs == 0) == (hm == 0)).all() and ((ns == 0) == (nm == 0)).all()  # pruned units stay pruned
    before = reconstruction_errors(a, batches, hm, nm)
    after = reconstruction_errors(a, batches, hm, nm, hs, ns)
    assert after[0, 0] <= before[0, 0] * (1 + 1e-9)  # same inputs: least squares cannot do worse
    assert after.sum() < 0.95 * before.sum()
    # the error algebra agrees with a direct measurement
    assert torch.allclose(reconstruction_errors(a, batches, hm, nm, hs, ns)[0], _direct_layer0_errors(a, batches, hs, ns),
                          rtol=1e-5)


def test_tune_is_the_least_squares_optimum():
    """Undamped, each layer-0 scale sits at the minimum of the directly measured error."""
    a = adapter_for(tiny_model("bert"))
    batches = tiny_batches(3, 6, 12)
    hm, nm = _masks()
    hs, ns = tune(a, batches, hm, nm, TuneConfig(damp=0.0, max_scale=float("inf")))
    base = _direct_layer0_errors(a, batches, hs, ns)
    for j in hm[0].nonzero().flatten().tolist():
        for eps in (-0.05, 0.05):
            h2 = hs.clone()
            h2[0, j] += eps
            assert _direct_layer0_errors(a, batches, h2, ns)[0] > base[0]
    for j in nm[0].nonzero().flatten()[:5].tolist():
        for eps in (-0.05, 0.05):
            n2 = ns.clone()
            n2[0, j] += eps
            assert _direct_layer0_errors(a, batches, hs, n2)[1] > base[1]


def test_tune_falls_back_to_one_when_extreme():
    a = adapter_for(tiny_model("bert"))
    hm, nm = _masks()
    hs, ns = tune(a, tiny_batches(), hm, nm, TuneConfig(max_scale=1e-3))
    assert torch.equal(hs, hm) and torch.equal(ns, nm)


def test_folded_narrowed_equals_masked_with_scales(attention_family):
    family = attention_family  # refine.py works on attention heads and Linear FFNs
    model = tiny_model(family)
    a = adapter_for(model)
    batches = tiny_batches(3, 6, 12)
    hm, nm = _masks(dims=a.dims())
    hs, ns = tune(a, batches, hm, nm)
    x = _inputs(tiny_batches(1, 5, 12, seed=7)[0])
    with torch.no_grad(), mask_hooks(a) as state:
        state.set(hs, ns)
        masked = model(**x).logits
        state.set(hm, nm)
        plain = model(**x).logits
    n_ops = sum(1 for _ in tiny_model(family).modules())
    fold(a, hs, ns)
    narrow(a, PruneSpec.from_masks(family, hm, nm, dims=a.dims()))
    with torch.no_grad():
        narrowed = model(**x).logits
    assert (narrowed - masked).abs().max() <= 1e-5
    assert (plain - masked).abs().max() > 1e-4  # the scales really changed the model
    assert sum(1 for _ in model.modules()) <= n_ops  # no extra modules
    with pytest.raises(BadInput, match="before narrowing"):
        fold(a, hs, ns)
