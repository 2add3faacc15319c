"""Physical narrowing: slice the Linear layers to the kept heads and neurons of a PruneSpec.

Generic over families: the adapter supplies the Linear layers, the head-count metadata update,
and the stand-in for a block that keeps nothing. Weights keep their dtype and device
(unlike transformers' old prune_linear_layer, which returned float32).
"""
from __future__ import annotations

import torch
from torch import nn

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


def narrow(adapter, spec: PruneSpec) -> nn.Module:
    """Narrow adapter.model in place to `spec`; returns the model."""
    dims = adapter.dims()
    if len(spec.heads) != dims.num_layers or spec.num_heads != dims.num_heads or spec.ffn_size != dims.ffn_size:
        raise BadInput(f"spec is for {len(spec.heads)} layers × {spec.num_heads} heads × {spec.ffn_size} neurons, "
                       f"the model has {dims.num_layers} × {dims.num_heads} × {dims.ffn_size}; "
                       "use the spec made for this model")
    for i in range(dims.num_layers):
        heads, neurons = list(spec.heads[i]), list(spec.neurons[i])
        p = adapter.parts(i)
        if not heads:
            adapter.empty_attention(i)
        elif len(heads) < dims.num_heads:
            cols = torch.tensor([h * dims.head_dim + j for h in heads for j in range(dims.head_dim)])
            for lin in (p.q, p.k, p.v):
                _slice_linear(lin, cols, 0)
            _slice_linear(p.o, cols, 1)
            adapter.set_num_heads(i, len(heads))
        if not neurons:
            adapter.empty_ffn(i)
        elif len(neurons) < dims.ffn_size:
            idx = torch.tensor(neurons)
            _slice_linear(p.ffn_in, idx, 0)
            _slice_linear(p.ffn_out, idx, 1)
    adapter.model.config.optin_pruned = True
    return adapter.model
