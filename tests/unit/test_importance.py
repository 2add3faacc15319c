"""Importance methods: determinism, dead units score lowest, depth modes, registry errors."""
import pytest
import torch

from conftest import tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.errors import BadInput
from optin.importance import METHODS, ScoreConfig, get_method
from optin.importance.trajectory import DEPTH_MODES, combine, rescore

CFG = ScoreConfig(group_size=8, rows_per_batch=16)


def _dead_head_model(family):
    """Head 1 of layer 1 contributes nothing: its output-projection columns are zero."""
    model = tiny_model(family)
    a = adapter_for(model)
    d = a.dims()
    with torch.no_grad():
        hd = d.layer_head_dim[1]
        a.parts(1).o.weight[:, hd:2 * hd] = 0
    return model, a


@pytest.mark.parametrize("method", ["optin", "optin-est", "optin-fast", "optin-fast-depth", "fisher", "fisher-batch"])
def test_dead_head_scores_zero(attention_family, method):
    family = attention_family  # heads only
    model, a = _dead_head_model(family)
    s = get_method(method)(a, tiny_batches(), CFG)
    assert s.heads.shape == (3, 4) and s.neurons.shape == (3, 48)
    # zero up to rounding: batched candidate passes round differently from the dense reference
    assert s.heads[1, 1] <= 1e-6 * s.heads.max()
    present = a.dims().present()  # units beyond a narrower layer's width (Swin) score -inf
    assert torch.equal(torch.isfinite(s.heads), present[0]) and torch.equal(torch.isfinite(s.neurons), present[1])
    assert (s.heads[present[0]].sort().values[1:] > 0).all()


def test_trajectory_deterministic():
    a = adapter_for(tiny_model("bert"))
    s1 = get_method("optin")(a, tiny_batches(), CFG)
    s2 = get_method("optin")(a, tiny_batches(), CFG)
    assert torch.equal(s1.heads, s2.heads) and torch.equal(s1.neurons, s2.neurons)


def test_trajectory_leaves_model_unmasked():
    model = tiny_model("bert")
    a = adapter_for(model)
    b = tiny_batches()[0]
    before = a.forward(b)
    get_method("optin")(a, tiny_batches(), CFG)
    assert torch.equal(before, a.forward(b))


def test_depth_modes_and_rescore():
    a = adapter_for(tiny_model("bert"))
    s = get_method("optin")(a, tiny_batches(), CFG)
    raw = s.meta["raw"]
    # terms before a candidate's own layer are exactly zero (nothing upstream changes)
    for c, layer in enumerate(raw["layer"].tolist()):
        assert (raw["md"][c, :layer] == 0).all() and (raw["md"][c, layer:] > 0).all()
    outs = {m: rescore(raw, m, 0.1).heads for m in DEPTH_MODES}
    assert torch.allclose(outs["normalized"], s.heads)
    assert not torch.allclose(outs["sum"], outs["final"])
    with pytest.raises(BadInput, match="depth mode"):
        combine(raw["md"], raw["kd"], raw["layer"], "bogus", 0.1)


def test_sum_mode_penalises_late_layers_normalized_does_not():
    # two candidates with identical per-layer disturbance, one in layer 0, one in layer 2
    md = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    kd = torch.tensor([1.0, 1.0])
    layer = torch.tensor([0, 2])
    s_sum = combine(md, kd, layer, "sum", 0.1)
    s_norm = combine(md, kd, layer, "normalized", 0.1)
    assert s_sum[0] > s_sum[1]
    assert s_norm[0] == pytest.approx(s_norm[1])


def test_unknown_method_lists_known():
    with pytest.raises(BadInput, match="fisher"):
        get_method("nope")
    assert {"optin", "fisher", "magnitude", "random"} <= set(METHODS)


def test_batched_candidates_match_one_at_a_time(family):
    """Stacking candidates in one pass changes only rounding, never a score's meaning."""
    a = adapter_for(tiny_model(family))
    one = get_method("optin")(a, tiny_batches(), ScoreConfig(group_size=8, rows_per_batch=16, candidates_per_pass=1))
    many = get_method("optin")(a, tiny_batches(), ScoreConfig(group_size=8, rows_per_batch=16, candidates_per_pass=5))
    r1, r2 = one.meta["raw"], many.meta["raw"]
    assert torch.allclose(r1["md"], r2["md"], rtol=1e-4, atol=1e-9)
    # a KL between float32 log-probabilities that agree to rounding is ~1e-8, not 0 (a candidate
    # that changes nothing, as a dead channel of a tiny CNN)
    assert torch.allclose(r1["kd"], r2["kd"], rtol=1e-4, atol=1e-7)
    assert torch.equal(one.heads.argsort(1), many.heads.argsort(1))


def _spearman(x, y):
    rx, ry = (t.flatten().argsort().argsort().double() for t in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def test_estimate_tracks_exact_scores(family):
    """The Gauss-Newton/Hutchinson estimate ranks neurons like exact masking does (exact scoring
    here uses groups of one neuron), and is deterministic for a seed. Heads, a large perturbation
    of a tiny random model, are where the linearisation is weakest (checked by the dead-head test)."""
    a = adapter_for(tiny_model(family))
    cfg = ScoreConfig(group_size=1, rows_per_batch=16)
    exact = get_method("optin")(a, tiny_batches(), cfg)
    est = get_method("optin-est")(a, tiny_batches(), cfg)
    present = torch.isfinite(exact.neurons)  # units beyond a narrower layer's width (Swin) score -inf
    assert _spearman(est.neurons[present], exact.neurons[present]) > 0.8
    again = get_method("optin-est")(a, tiny_batches(), cfg)
    assert torch.equal(est.neurons, again.neurons) and torch.equal(est.heads, again.heads)


@pytest.mark.parametrize("method", ["optin-fast", "optin-fast-depth"])
def test_fast_estimate_tracks_exact_scores(family, method):
    """optin-fast (one backward pass per probe for every layer, per-example masks) ranks neurons like
    exact masking, and is deterministic for a seed."""
    a = adapter_for(tiny_model(family))
    cfg = ScoreConfig(group_size=1, rows_per_batch=16)
    exact = get_method("optin")(a, tiny_batches(), cfg)
    fast = get_method(method)(a, tiny_batches(), cfg)
    present = torch.isfinite(exact.neurons)
    assert _spearman(fast.neurons[present], exact.neurons[present]) > 0.8
    again = get_method(method)(a, tiny_batches(), cfg)
    assert torch.equal(fast.neurons, again.neurons) and torch.equal(fast.heads, again.heads)
    raw = fast.meta["raw"]
    for c, layer in enumerate(raw["layer"].tolist()):  # nothing before a unit's own layer changes
        assert (raw["md"][c, :layer] == 0).all()


@pytest.mark.parametrize("method", ["optin-fast", "optin-fast-depth"])
def test_fast_estimate_reads_the_batches_as_given(method):
    """A batch's Gram matrix spans its examples and its rows are drawn per batch, so the one-pass
    scorer reads optin-est's batches as they are, to estimate the same objective: the same
    examples batched by length give other terms, for both scorers (re-forming the batches inside,
    as this scorer once did to save padding, would make the two batchings score alike)."""
    a = adapter_for(tiny_model("bert"))
    cfg = ScoreConfig(rows_per_batch=16)
    batches = tiny_batches(n_batches=3)
    rows = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    order = torch.argsort(rows["attention_mask"].sum(1), stable=True)
    by_length = [{k: v[order[i:i + 4]] for k, v in rows.items()} for i in range(0, len(order), 4)]
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, by_length))
    for m in (method, "optin-est"):
        raw = get_method(m)(a, batches, cfg).meta["raw"]
        assert torch.equal(raw["md"], get_method(m)(a, [dict(b) for b in batches], cfg).meta["raw"]["md"])
        assert not torch.allclose(raw["md"], get_method(m)(a, by_length, cfg).meta["raw"]["md"], rtol=1e-3)


def test_fast_estimate_length_groups_change_only_rounding(family):
    """The one-pass scorer runs a text batch in groups of similar length, each trimmed to its
    longest member, and assembles the whole batch's Gram matrices: the terms are those of one
    pass over the padded batch, up to float rounding."""
    from optin.importance.fast import length_groups, trajectory_fast

    a = adapter_for(tiny_model(family))
    cfg = ScoreConfig(rows_per_batch=16)
    batches = tiny_batches()
    if "attention_mask" in batches[0]:
        assert len(length_groups(batches[0], 4)) == 4
    one = trajectory_fast(a, batches, cfg, groups=lambda b: [torch.arange(len(b["labels"]))]).meta["raw"]
    grouped = trajectory_fast(a, batches, cfg).meta["raw"]
    for k in ("md", "kd"):
        assert torch.allclose(grouped[k], one[k], rtol=1e-3, atol=1e-9 * float(one[k].abs().max()))


def test_depth_assignment_gives_each_layer_its_share():
    """"depth": late target layers get more of each probe's examples, every layer some, in the
    proportions depth_shares gives; examples move between layers from probe to probe."""
    from optin.importance.fast import assignment, depth_shares

    L, B, P = 12, 32, 8
    shares = depth_shares(L)
    assert float(shares.sum()) == pytest.approx(1.0) and (shares[1:] > shares[:-1]).all()
    layers = assignment(L, B, P, "depth", torch.Generator().manual_seed(0))
    for lp in layers:
        assert (torch.bincount(lp, minlength=L) - shares * B).abs().max() < 1.0
    total = sum(torch.bincount(lp, minlength=L) for lp in layers)  # layer 0's share is under one per probe
    assert (total >= 1).all() and (total - shares * B * P).abs().max() <= 1.0
    assert all(len(set(int(lp[b]) for lp in layers)) > 1 for b in range(B))
    rot = assignment(3, 6, 3, "rotation", torch.Generator().manual_seed(0))
    assert all(torch.equal(torch.bincount(lp, minlength=3), torch.tensor([2, 2, 2])) for lp in rot)


def test_fast_kd_is_exact_for_two_classes():
    """With two classes one backward pass over per-example masks gives ½ Σ_c p_c (∂ log p_c/∂m_u)²
    exactly: here against each example's own backward passes, one per class."""
    from optin.masking import mask_variables

    a = adapter_for(tiny_model("bert", labels=2))
    batches = tiny_batches(labels=2)
    fast = get_method("optin-fast")(a, batches, ScoreConfig(rows_per_batch=16), probes=1)
    d = a.dims()
    want_h, want_n = torch.zeros(d.num_layers, d.num_heads), torch.zeros(d.num_layers, d.ffn_size)
    for b in batches:
        for j in range(len(b["labels"])):
            ex = {k: v[j:j + 1] for k, v in b.items()}
            with mask_variables(a) as (hm, nm):
                logp = torch.log_softmax(a.forward(ex).float(), -1)[0]
                for c in range(2):
                    gh, gn = torch.autograd.grad(logp[c], [hm, nm], retain_graph=True)
                    want_h += 0.5 * logp[c].exp().detach() * gh ** 2 / len(b["labels"]) / len(batches)
                    want_n += 0.5 * logp[c].exp().detach() * gn ** 2 / len(b["labels"]) / len(batches)
    got = fast.meta["raw"]["kd"]
    # float32 rounding of batched vs one-example passes: ~1e-4; a probed KD would be off by tens of per cent
    assert torch.allclose(got, torch.cat([want_h.flatten(), want_n.flatten()]), rtol=1e-3, atol=1e-10)


def test_fisher_batch_of_one_is_fisher():
    """Kwon et al.'s batched Fisher squares each batch's gradient: on batches of one example it is
    the per-example Fisher (which trims padding; the batched form masks it)."""
    a = adapter_for(tiny_model("bert"))
    singles = [{k: v[j:j + 1] for k, v in b.items()} for b in tiny_batches() for j in range(len(b["labels"]))]
    per_example = get_method("fisher")(a, tiny_batches(), CFG)
    batched = get_method("fisher-batch")(a, singles, CFG)
    assert torch.allclose(per_example.heads, batched.heads, rtol=1e-3, atol=1e-10)
    assert torch.allclose(per_example.neurons, batched.neurons, rtol=1e-3, atol=1e-10)
    whole = get_method("fisher-batch")(a, tiny_batches(), CFG)
    assert not torch.allclose(whole.neurons, per_example.neurons, rtol=1e-2)  # squaring after averaging differs
