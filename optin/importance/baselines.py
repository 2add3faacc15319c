"""Floors: weight magnitude and random scores."""
from __future__ import annotations

import torch

from ..channels import ops
from . import Scores, register


@register("magnitude")
def magnitude(adapter, batches, cfg):
    """Squared L2 norm of each unit's weights (q/k/v rows and output columns of a head; the FFN
    row and column of a neuron). A sum, not a mean: a head holds ~2·d_h times a neuron's weights
    and costs about as many times its MACs, so the global search weighs them fairly (a mean made
    the search drop every head and collapse the model to the majority class)."""
    d = adapter.dims()
    heads = torch.zeros(d.num_layers, d.num_heads)
    neurons = torch.zeros(d.num_layers, d.ffn_size)
    with torch.no_grad():
        for i in range(d.num_layers):
            p = adapter.parts(i)
            H, hd, F = d.layer_heads[i], d.layer_head_dim[i], d.layer_ffn[i]
            if H:
                per_head = [w.view(H, hd, -1).pow(2).sum((1, 2)) for w in (p.q.weight, p.k.weight, p.v.weight)]
                per_head.append(p.o.weight.view(-1, H, hd).pow(2).sum((0, 2)))
                heads[i, :H] = sum(per_head)
            start = 0
            for run in p.neuron_runs(F) if F else []:
                # producers' rows / output channels (a BatchNorm adds nothing) + the consumer's columns
                sq = sum(ops(m).out_sq(m) for m in run.producers) + ops(run.consumer).in_sq(run.consumer)
                neurons[i, start:start + run.width] = sq
                start += run.width
    return Scores(heads, neurons, {"method": "magnitude"})


@register("random")
def random_scores(adapter, batches, cfg):
    """Uniform random scores, scaled by each unit's weight count (4·d·d_h for a head, 2·d for a
    neuron) so that the search keeps heads and neurons in proportion to their cost; unscaled, it
    would keep only the cheap neurons."""
    d = adapter.dims()
    g = torch.Generator().manual_seed(cfg.seed)
    hidden, head_dim = torch.tensor(d.layer_hidden)[:, None], torch.tensor(d.layer_head_dim)[:, None]
    return Scores(torch.rand(d.num_layers, d.num_heads, generator=g) * 4 * hidden * head_dim,
                  torch.rand(d.num_layers, d.ffn_size, generator=g) * 2 * hidden, {"method": "random"})
