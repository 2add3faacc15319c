"""Units re-chosen by the error left after the re-fit (optin.reselect)."""
import copy
import itertools

import torch

from conftest import awkward_spec, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.reconstruct import _Normal, reconstruct
from optin.reselect import Reselect, greedy_keep


def _problem(n_units=6, width=2, rows=80, out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n_units * width, generator=g, dtype=torch.float64)
    x[:, :width] *= 3  # one strong unit ...
    x[:, width:2 * width] = x[:, :width] * 0.9 + 0.05 * torch.randn(rows, width, generator=g, dtype=torch.float64)
    t = x @ torch.randn(n_units * width, out, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        rows, out, generator=g, dtype=torch.float64)
    eq = _Normal(n_units * width, out, True)
    eq.add(x, t)
    return eq, x, t


def _refit_error(x, t, cols, lam):
    """Error of the ridge re-fit on columns `cols` plus a bias, solved directly."""
    xb = torch.cat([x[:, cols], torch.ones(len(x), 1, dtype=x.dtype)], 1)
    a = xb.T @ xb + lam * torch.eye(xb.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(a, xb.T @ t)
    return float(((xb @ w - t) ** 2).sum() + lam * (w ** 2).sum())


def test_one_drop_is_the_unit_whose_refit_error_is_smallest():
    eq, x, t = _problem()
    width, n = 2, 6
    keep = greedy_keep(eq, width, n - 1, damp=1e-3)
    lam = 1e-3 * float(eq.g.diagonal()[:n * width].mean())
    errs = {u: _refit_error(x, t, [c for v in range(n) if v != u for c in range(v * width, (v + 1) * width)], lam)
            for u in range(n)}
    dropped = (set(range(n)) - set(keep)).pop()
    assert dropped == min(errs, key=errs.get)


def test_greedy_is_close_to_the_best_subset():
    eq, x, t = _problem(n_units=7, width=1, seed=2)
    lam = 1e-3 * float(eq.g.diagonal()[:7].mean())
    keep = greedy_keep(eq, 1, 3, damp=1e-3)
    best = min(_refit_error(x, t, list(s), lam) for s in itertools.combinations(range(7), 3))
    assert len(keep) == 3 and _refit_error(x, t, keep, lam) <= 1.05 * best


def test_reselected_model_keeps_the_counts_reloads_and_beats_its_own_start(attention_family, tmp_path):
    from optin.io import load_pruned, save_pruned
    from optin.narrow import narrow

    model = tiny_model(attention_family)
    dense = adapter_for(copy.deepcopy(model))
    spec = awkward_spec(attention_family)
    calib = tiny_batches(n_batches=4, batch=16, model_type=attention_family)
    plain = adapter_for(copy.deepcopy(model))
    narrow(plain, spec)
    base = reconstruct(dense, plain, calib, spec)
    adapter = adapter_for(model)
    sel = Reselect(adapter, spec, 1e-2)
    rep = reconstruct(dense, adapter, calib, spec, select=sel)
    kept = sel.spec()
    assert kept.kept_heads == spec.kept_heads and kept.kept_neurons == spec.kept_neurons
    # the first block sees the same inputs either way: its re-chosen attention is chosen for the
    # error left after the re-fit, so it is not (much) worse than the search's choice
    assert rep["layers"][0][0]["after"] <= 1.1 * base["layers"][0][0]["after"] + 1e-9
    save_pruned(model, None, kept, str(tmp_path))
    b = {k: v for k, v in tiny_batches(model_type=attention_family)[1].items() if k != "labels"}
    assert torch.equal(load_pruned(str(tmp_path))(**b).logits, model(**b).logits)
