"""Selection that knows about the re-fit: which units of a block to keep, chosen while the
reconstruction walks up the model, on inputs that the blocks below have already been re-fit to.

The global search (optin.search) decides how many heads and neurons each block keeps, from the
trajectory scores of the dense model. Which ones is then decided here, block by block from the
bottom, by the error that is left *after* the closed-form re-fit (optin.reconstruct): a unit
whose contribution the others can stand in for is cheap to drop even when it is large. For a
least-squares consumer y = [X 1] W with Gram A = [X 1]ᵀ[X 1] + λI and solution W = A⁻¹ C,
dropping the input columns S (a head's columns, or one neuron's) and re-solving the rest
raises the error by exactly

    Δ(S) = tr(W_Sᵀ (A⁻¹)_SS⁻¹ W_S),

(Optimal Brain Surgeon's formula for a linear layer, as in OBS / SparseGPT / SlimGPT). Units are
dropped greedily, the cheapest first, updating A⁻¹ and W after each drop by the same
block-elimination formula, so every step sees the units already gone. The bias column is never
dropped: it absorbs the mean of what goes. Greedy elimination in chunks: up to 1/64 of the
units still to drop go at once, each step exact for the union it drops.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .narrow import narrow_heads, narrow_neurons

CHUNKS = 8  # drop up to 1/CHUNKS of what is left to drop per elimination step


def greedy_keep(eq, width: int, n_keep: int, damp: float) -> list[int]:
    """Units (of `width` input columns each, in column order) to keep, from a sublayer's normal
    equations `eq` (optin.reconstruct._Normal over every unit, bias column last if any)."""
    g, c, w8 = eq.g, eq.c, eq.weight
    n_cols = g.shape[0] - int(eq.bias)
    n_units = n_cols // width
    if n_keep >= n_units:
        return list(range(n_units))
    if n_keep <= 0:
        return []
    diag = g.diagonal()[:n_cols]
    lam = max(damp * float(diag.mean()), 1e-9 * max(float(diag.max()), 1e-30))
    ainv = torch.linalg.inv(g + lam * torch.eye(g.shape[0], dtype=g.dtype))
    w = ainv @ c                      # [cols (+1), out]
    units = torch.arange(n_units)     # the units still there, in the order of ainv's column blocks
    while len(units) > n_keep:
        n = len(units)
        cost = _costs(ainv, w, w8, n, width)
        drop = torch.argsort(cost)[:max(1, (n - n_keep) // CHUNKS)]
        idx = (drop[:, None] * width + torch.arange(width)).reshape(-1)
        a_col = ainv[:, idx]
        s_inv = torch.linalg.inv(a_col[idx])
        w -= a_col @ (s_inv @ w[idx])
        ainv.addmm_(a_col, s_inv @ a_col.T, alpha=-1.0)
        # the dropped units' rows and columns are done with: shrink, so each step costs less
        stay = torch.ones(n, dtype=torch.bool)
        stay[drop] = False
        cols = torch.cat([(stay.nonzero().flatten()[:, None] * width + torch.arange(width)).reshape(-1),
                          torch.arange(n * width, ainv.shape[0])])  # the bias column stays
        ainv, w, units = ainv[cols][:, cols], w[cols], units[stay]
    return units.tolist()


def _costs(ainv, w, w8, n_units, width) -> torch.Tensor:
    """Δ of dropping each remaining unit alone."""
    if width == 1:
        d = ainv.diagonal()[:n_units].clamp(min=1e-30)
        return (w[:n_units] ** 2 * w8).sum(1) / d
    cost = torch.empty(n_units, dtype=w.dtype)
    for u in range(n_units):
        idx = torch.arange(u * width, (u + 1) * width)
        wu = w[idx] * w8.sqrt()
        cost[u] = torch.trace(wu.T @ torch.linalg.solve(ainv[idx][:, idx], wu))
    return cost


class Reselect:
    """A `select` for optin.reconstruct.reconstruct: keeps, in each block, as many heads and
    neurons as `spec` does, chosen by `greedy_keep`, and narrows the block. `chosen` ends as
    the (heads, neurons) kept per block; `spec()` gives the PruneSpec of what was kept."""

    def __init__(self, adapter, spec, damp: float):
        self.adapter, self.base, self.damp = adapter, spec, damp
        d = adapter.dims()
        self.heads = [list(h) for h in spec.heads]
        self.neurons = [list(n) for n in spec.neurons]
        self.parts = {}
        self.dims = d
        self.bar = tqdm(total=d.num_layers, desc="re-selecting units", unit="block", leave=False)

    def __call__(self, i, k, site, accumulate) -> None:
        d = self.dims
        if k == 0:
            self.parts[i] = self.adapter.parts(i)  # before the heads go (an emptied attention names none)
        if not isinstance(site.consumer, torch.nn.Linear):  # a conv's channels: the search's choice stands
            if k == 0:
                narrow_neurons(self.adapter, i, self.neurons[i], self.parts.get(i))
                self.bar.update()
            return
        if site.reads == "heads" and d.layer_heads[i] > 0:
            want = len(self.base.heads[i])
            if 0 < want < d.layer_heads[i]:
                self.heads[i] = greedy_keep(accumulate(site), d.layer_head_dim[i], want, self.damp)
            narrow_heads(self.adapter, i, self.heads[i])
        elif site.reads == "neurons":
            want = len(self.base.neurons[i])
            if 0 < want < d.layer_ffn[i]:
                self.neurons[i] = greedy_keep(accumulate(site), 1, want, self.damp)
            narrow_neurons(self.adapter, i, self.neurons[i], self.parts.get(i))
            self.bar.update()

    def spec(self):
        from dataclasses import replace

        self.bar.close()
        return replace(self.base, heads=tuple(tuple(h) for h in self.heads),
                       neurons=tuple(tuple(n) for n in self.neurons))
