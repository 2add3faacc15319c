"""Floors: weight magnitude and random scores."""
from __future__ import annotations

import torch

from . import Scores, register


@register("magnitude")
def magnitude(adapter, batches, cfg):
    """Mean squared weight of each unit's slices (q/k/v rows and output columns of a head; the
    FFN row and column of a neuron). A mean, not a sum, so heads and neurons share one scale."""
    d = adapter.dims()
    heads = torch.zeros(d.num_layers, d.num_heads)
    neurons = torch.zeros(d.num_layers, d.ffn_size)
    with torch.no_grad():
        for i in range(d.num_layers):
            p = adapter.parts(i)
            per_head = [w.view(d.num_heads, d.head_dim, -1).pow(2).mean((1, 2)) for w in (p.q.weight, p.k.weight, p.v.weight)]
            per_head.append(p.o.weight.view(-1, d.num_heads, d.head_dim).pow(2).mean((0, 2)))
            heads[i] = sum(per_head) / 4
            neurons[i] = (p.ffn_in.weight.pow(2).mean(1) + p.ffn_out.weight.pow(2).mean(0)) / 2
    return Scores(heads, neurons, {"method": "magnitude"})


@register("random")
def random_scores(adapter, batches, cfg):
    d = adapter.dims()
    g = torch.Generator().manual_seed(cfg.seed)
    return Scores(torch.rand(d.num_layers, d.num_heads, generator=g),
                  torch.rand(d.num_layers, d.ffn_size, generator=g), {"method": "random"})
