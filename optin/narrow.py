"""Physical narrowing: slice the layers to the kept heads and neurons of a PruneSpec.

Generic over families: the adapter supplies the modules (the q/k/v/o Linears of the heads; the
producers and consumer of each run of neurons: Linears, or convs and BatchNorms of a CNN block),
the head-count metadata update, and the stand-in for a block or run that keeps nothing. Each
module is sliced by its type (optin.channels). Weights keep their dtype and device (unlike
transformers' old prune_linear_layer, which returned float32).
"""
from __future__ import annotations

import torch
from torch import nn

from .channels import keep as keep_units
from .errors import BadInput
from .spec import PruneSpec


def _slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> None:
    """Keep rows (dim=0, outputs) or columns (dim=1, inputs) `idx` of `lin`, in place."""
    w = lin.weight.detach().index_select(dim, idx.to(lin.weight.device)).clone()
    lin.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    if dim == 0:
        if lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias.detach()[idx].clone(), requires_grad=lin.bias.requires_grad)
        lin.out_features = len(idx)
    else:
        lin.in_features = len(idx)


def _check(spec: PruneSpec, dims) -> None:
    """The spec must be made for this model: same layers, same dense widths in every layer."""
    heads, ffn = spec.dense_widths()
    if len(spec.heads) != dims.num_layers or heads != dims.layer_heads or ffn != dims.layer_ffn:
        def shape(L, h, f):
            return f"{L} layers × {h[0] if len(set(h)) == 1 else list(h)} heads × " \
                   f"{f[0] if len(set(f)) == 1 else list(f)} neurons"
        raise BadInput(f"spec is for {shape(len(spec.heads), heads, ffn)}, the model has "
                       f"{shape(dims.num_layers, dims.layer_heads, dims.layer_ffn)}; use the spec made for this model")
    for i in range(dims.num_layers):
        if any(not 0 <= h < heads[i] for h in spec.heads[i]) or any(not 0 <= n < ffn[i] for n in spec.neurons[i]):
            raise BadInput(f"spec layer {i} keeps a head or neuron the layer does not have "
                           f"({heads[i]} heads, {ffn[i]} neurons); use the spec made for this model")


def narrow(adapter, spec: PruneSpec) -> nn.Module:
    """Narrow adapter.model in place to `spec`; returns the model."""
    dims = adapter.dims()
    _check(spec, dims)
    for i in range(dims.num_layers):
        parts = adapter.parts(i)  # before the heads go: an emptied attention has no q/k/v/o left to name
        narrow_heads(adapter, i, spec.heads[i])
        narrow_neurons(adapter, i, spec.neurons[i], parts)
    narrow_tokens(adapter, spec)
    adapter.model.config.optin_pruned = True
    return adapter.model


def narrow_tokens(adapter, spec: PruneSpec) -> None:
    """The token schedule alone: a gather in front of each block that sees fewer tokens."""
    if spec.tokens is not None:
        _keep_tokens(adapter, spec.tokens)


def narrow_heads(adapter, i: int, heads) -> None:
    """Keep heads `heads` (sorted dense indices) of block i, which must still have all of them."""
    dims = adapter.dims()  # dense widths (from the config), whatever is narrowed already
    heads = list(heads)
    if dims.layer_heads[i] == 0:
        return  # no attention (a CNN block)
    if not heads:
        adapter.empty_attention(i)
    elif len(heads) < dims.layer_heads[i]:
        p = adapter.parts(i)
        hd = dims.layer_head_dim[i]
        cols = torch.tensor([h * hd + j for h in heads for j in range(hd)])
        for lin in (p.q, p.k, p.v):
            _slice_linear(lin, cols, 0)
        _slice_linear(p.o, cols, 1)
        adapter.keep_head_params(i, heads)
        adapter.set_num_heads(i, len(heads))


def narrow_neurons(adapter, i: int, neurons, parts=None) -> None:
    """Keep neurons (channels) `neurons` (sorted dense indices) of block i, which must still have all.
    parts: block i's LayerParts taken before its heads were narrowed (an emptied attention has none)."""
    dims = adapter.dims()
    neurons = list(neurons)
    if dims.layer_ffn[i] > 0 and len(neurons) < dims.layer_ffn[i]:
        parts = parts or adapter.parts(i)
        _narrow_runs(adapter, i, parts.neuron_runs(dims.layer_ffn[i]), neurons)


def _narrow_runs(adapter, i: int, runs, neurons: list[int]) -> None:
    """Slice every run of layer i that keeps some neurons; then let the adapter replace what
    reads the runs that keep none (a zero-width module would break export)."""
    emptied, start = [], 0
    for r, run in enumerate(runs):
        idx = [n - start for n in neurons if start <= n < start + run.width]
        if not idx:
            emptied.append(r)
        elif len(idx) < run.width:
            keep_units(run, torch.tensor(idx))
        start += run.width
    if emptied:
        adapter.empty_runs(i, emptied)


def _keep_tokens(adapter, tokens) -> None:
    """Give each block the rows of its token set within the previous block's set."""
    from .tokens import check_schedule

    check_schedule(adapter, tokens)
    prev = list(range(adapter.seq_len(None)))
    for i, keep in enumerate(tokens):
        if len(keep) < len(prev):
            where = {p: r for r, p in enumerate(prev)}
            adapter.keep_tokens(i, torch.tensor([where[p] for p in keep]))
        prev = list(keep)
