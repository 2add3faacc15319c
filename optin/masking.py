"""Head and neuron masks through forward pre-hooks (transformers 5 has no head_mask).

A head mask multiplies each head's slice of the attention context before the output
projection; a neuron mask multiplies the FFN activations before the second Linear (for a CNN
block, each run's channels before the conv that reads them, on the channel axis). Masking a
unit this way is exactly removing it, which is what `narrow` does physically.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .channels import ops


class MaskState:
    """Per-layer masks read by the hooks; None means 'leave this layer alone' (no cost)."""

    def __init__(self, num_layers: int):
        self.heads: list[torch.Tensor | None] = [None] * num_layers
        self.neurons: list[torch.Tensor | None] = [None] * num_layers

    def set(self, head_mask=None, neuron_mask=None):
        for i in range(len(self.heads)):
            self.heads[i] = None if head_mask is None else head_mask[i]
            self.neurons[i] = None if neuron_mask is None else neuron_mask[i]

    def clear(self):
        self.set(None, None)


def _per_example(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [batch, units] mask for inputs whose leading dimension holds several rows per example:
    windowed attention (Swin) folds each example's windows into it, batch-major."""
    if m.dim() == 2 and x.shape[0] != m.shape[0] and x.shape[0] % m.shape[0] == 0:
        m = m.repeat_interleave(x.shape[0] // m.shape[0], 0)
    return m


def _head_hook(state: MaskState, i: int, head_dim: int, heads: int):
    def hook(module, args):
        m = state.heads[i]
        if m is None:
            return None
        x = args[0]
        m = _per_example(m[..., :heads].to(x.dtype), x)  # the layer's own heads of a [.., max] mask
        # [heads], or [batch, heads] when each example carries its own mask (batched scoring)
        m = m[:, None] if m.dim() == 1 else m.view(m.shape[0], *[1] * (x.dim() - 2), -1, 1)
        shaped = x.view(*x.shape[:-1], -1, head_dim) * m
        return (shaped.view(x.shape),) + tuple(args[1:])
    return hook


def _neuron_hook(state: MaskState, i: int, start: int, width: int, axis: int):
    """Mask units start:start+width of layer i's neuron mask on the input's unit axis (-1 for a
    Linear, 1 for a conv's channels)."""
    def hook(module, args):
        m = state.neurons[i]
        if m is None:
            return None
        x = args[0]
        m = _per_example(m[..., start:start + width].to(x.dtype), x)
        ax = axis % x.dim()
        trail = [1] * (x.dim() - 1 - ax)  # axes after the unit axis
        # [units], or [batch, units] when each example carries its own mask (batched scoring)
        m = m.view(-1, *trail) if m.dim() == 1 else m.view(m.shape[0], *[1] * (ax - 1), -1, *trail)
        return (x * m,) + tuple(args[1:])
    return hook


@contextmanager
def mask_hooks(adapter):
    """Install hooks on every layer; yield the MaskState that controls them."""
    dims = adapter.dims()
    state = MaskState(dims.num_layers)
    handles = []
    try:
        for i in range(dims.num_layers):
            p = adapter.parts(i)
            if dims.layer_heads[i] > 0:
                handles.append(p.o.register_forward_pre_hook(
                    _head_hook(state, i, dims.layer_head_dim[i], dims.layer_heads[i])))
            start = 0
            for run in p.neuron_runs(dims.layer_ffn[i]) if dims.layer_ffn[i] > 0 else []:
                handles.append(run.consumer.register_forward_pre_hook(
                    _neuron_hook(state, i, start, run.width, ops(run.consumer).unit_axis)))
                start += run.width
        yield state
    finally:
        for h in handles:
            h.remove()


@contextmanager
def mask_variables(adapter):
    """All-ones head [layers, heads] and neuron [layers, ffn] masks that require grad, installed in
    the hooks, with the model's own parameters frozen meanwhile: gradients reach only the masks
    (and are zero for units beyond a layer's own width)."""
    d = adapter.dims()
    dev = next(adapter.model.parameters()).device
    hm = torch.ones(d.num_layers, d.num_heads, device=dev, requires_grad=True)
    nm = torch.ones(d.num_layers, d.ffn_size, device=dev, requires_grad=True)
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with mask_hooks(adapter) as state:
            state.set(hm, nm)
            yield hm, nm
    finally:
        for p in params:
            p.requires_grad_(True)
