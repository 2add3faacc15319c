"""What convolutional families share (no family knowledge): images in, NCHW hidden states, layers
without attention whose "neurons" are inner channels.

A CNN layer is one residual (or MBConv) block: 0 heads, and `ffn` = its prunable inner channels,
the channels that no residual addition reads (ResNet: conv1's outputs = conv2's inputs; MBConv:
the expanded channels). Channels that feed a residual addition (block outputs, shortcuts) are
coupled across a whole stage and stay dense. A run of channels (`Channels`) is made by producer
modules (convs, depthwise convs and BatchNorms, sliced on their output channels) and read by one
consumer conv (sliced on its input channels); a bottleneck block has two runs.

Trajectory features: a block's output [B, C, H, W] becomes H·W token rows of C features
(`features`); every position is real, so `valid_tokens` is all ones at the block's grid.

MACs: a k×k conv producing an H×W map costs H·W·k²·(C_in / groups)·C_out (fvcore counts the same).
A channel of a run costs what it adds to its producers' and its consumer's convs at their own
output sizes, so MACs are exact and linear in the kept channels (except where one conv sits
between two runs: see the ResNet bottleneck).
"""
from __future__ import annotations

import torch
from torch import nn

from ..remote.optin_pruned import ConstantBranch  # noqa: F401  (shared with pruned folders' remote code)
from ..channels import BatchNormOps
from .base import Channels, Dims, LayerParts, Sublayer
from .image import ImageAdapter


def conv_macs(conv: nn.Conv2d, out_hw: tuple[int, int]) -> int:
    """MACs of one conv per example at output size out_hw (one multiply-add = one MAC)."""
    kh, kw = conv.kernel_size
    return out_hw[0] * out_hw[1] * kh * kw * (conv.in_channels // conv.groups) * conv.out_channels


def per_out_channel(conv: nn.Conv2d, out_hw) -> int:
    """MACs one output channel of `conv` costs (a depthwise conv: one channel in, one out)."""
    return conv_macs(conv, out_hw) // conv.out_channels


def per_in_channel(conv: nn.Conv2d, out_hw) -> int:
    """MACs one input channel of a dense (groups = 1) `conv` costs."""
    return conv_macs(conv, out_hw) // conv.in_channels


def per_pair(conv: nn.Conv2d, out_hw) -> int:
    """MACs of one (input channel, output channel) pair of a dense conv: H·W·k²."""
    kh, kw = conv.kernel_size
    return out_hw[0] * out_hw[1] * kh * kw


def conv_out(size: tuple[int, int], conv: nn.Conv2d | nn.MaxPool2d) -> tuple[int, int]:
    """Output size of a conv or max-pool with symmetric padding."""
    def one(n, k, s, p, d):
        return (n + 2 * p - d * (k - 1) - 1) // s + 1

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    k, s, p, d = (pair(getattr(conv, a)) for a in ("kernel_size", "stride", "padding", "dilation"))
    return one(size[0], k[0], s[0], p[0], d[0]), one(size[1], k[1], s[1], p[1], d[1])


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, keep_out=None, total=None, at="output", **kw) -> Sublayer:
    """A bias-free conv followed by its BatchNorm, for the re-fit: its bias goes into the BN's β, and
    its output is compared where the BN has applied it (so a bias folded in earlier is seen).
    keep_out: an inner conv (no residual after it) fit towards the dense BN output at those channels;
    total: the module where a residual sum is seen instead."""
    return Sublayer(conv, bn if total is None else total, at, scale=BatchNormOps.affine(bn)[0], bias_into=bn,
                    keep_out=keep_out, **kw)


@torch.no_grad()
def apply_eval(modules, x: torch.Tensor) -> torch.Tensor:
    """Apply modules in inference mode (BatchNorm with its running statistics, whatever mode the
    model is in: load_pruned narrows a freshly built one), then restore their modes."""
    for m in modules:
        mode = m.training
        m.eval()
        try:
            x = m(x)
        finally:
            m.train(mode)
    return x


class ConvAdapter(ImageAdapter):
    """Image-classifier plumbing for CNN families; subclasses give the blocks and their runs."""

    has_attention = False
    # ONNX Runtime's CPU convs run channels in blocks of 8 (NCHWc); measured: an unaligned 60% mask made
    # EfficientNet-Lite0 0.61x as fast as dense, the same budget aligned to 8 1.45x (docs/vision.md)
    default_align = 8

    # --- family knowledge ---------------------------------------------------------------------
    def runs(self, i: int) -> list[Channels]:
        """The runs of layer i's prunable channels, in the order of its neuron indices."""
        raise NotImplementedError

    def parts(self, i: int) -> LayerParts:
        """No attention; the neurons are the runs (ffn_in / ffn_out: the first run's, for readers of one)."""
        r = self.runs(i)
        return LayerParts(None, None, None, None, r[0].producers[0], r[0].consumer, runs=tuple(r))

    def run_widths(self, i: int) -> list[int]:
        """Dense width of each run of layer i, from the config (the model may be narrowed already)."""
        raise NotImplementedError

    def grids(self) -> list[tuple[int, int]]:
        """Spatial size of the hidden state entering each layer, and (last) of the final output."""
        raise NotImplementedError

    def unit_macs(self, i: int) -> list[int]:
        """MACs per example of one channel of each run of layer i (the cost model's per-neuron cost)."""
        raise NotImplementedError

    def fixed_macs(self) -> int:
        """MACs nothing prunable changes: stem, shortcuts, head conv, classifier."""
        raise NotImplementedError

    # --- inputs -----------------------------------------------------------------------------------
    def seq_len(self, max_length=None) -> int:
        """Positions of the input image (what `seq` means for a CNN; MACs do not use it)."""
        h, w = self.image_size()
        return h * w

    def layer_tokens(self, max_length=None) -> list[int]:
        return [h * w for h, w in self.grids()[:-1]]

    def valid_tokens(self, batch, layer=0):
        h, w = self.grids()[layer]
        return torch.ones(batch["pixel_values"].shape[0], h * w, dtype=torch.bool)

    def features(self, hidden):
        """[B, C, H, W] → [B, H·W, C]: each position is a token of C features."""
        return hidden.flatten(2).transpose(1, 2)

    # --- widths and costs -------------------------------------------------------------------------
    def dense(self) -> "ConvAdapter":
        """An adapter over a dense copy of the model built on the meta device (shapes only, no
        weights): the MAC counts read conv geometry from it, whatever was narrowed here."""
        if getattr(self, "_dense", None) is None:
            with torch.device("meta"):
                self._dense = type(self)(self.from_config(self.config))
        return self._dense

    def dims(self) -> Dims:
        L = len(self.layers())
        ffn = [sum(self.run_widths(i)) for i in range(L)]
        hidden = [self.layer_width(i) for i in range(L)]
        return Dims.per_layer([0] * L, [0] * L, hidden, ffn)

    def layer_width(self, i: int) -> int:
        """Channels of layer i's output."""
        raise NotImplementedError

    def neuron_costs(self) -> list[list[int]]:
        """Per layer, the MACs of each of its neurons (runs laid end to end)."""
        return [[c for w, c in zip(self.run_widths(i), self.unit_macs(i)) for _ in range(w)]
                for i in range(len(self.layers()))]

    def cost_model(self, seq_len=None, tokens=None):
        """What the search spends the budget with: per layer, the dearest of its channels' costs. Exact
        for one run (ResNet basic blocks, MBConv); an upper bound where a bottleneck's runs cost
        differently, so the exact MACs (`spec_macs`) never exceed the budget."""
        from profiling.macs import CostModel

        per = [max(c, default=0) for c in self.neuron_costs()]
        return CostModel((0,) * len(per), tuple(per), self.fixed_macs(), self.seq_len())

    def spec_macs(self, spec, seq_len=None) -> int:
        """MACs of the model narrowed to `spec`, per example."""
        costs = self.neuron_costs()
        return int(self.fixed_macs() + sum(costs[i][n] for i, kept in enumerate(spec.neurons) for n in kept))

    def head_macs(self):
        return self.fixed_macs()

    # --- narrowing: no attention ------------------------------------------------------------------
    def set_num_heads(self, i, n):
        raise NotImplementedError("CNN layers have no heads")

    def empty_attention(self, i):
        raise NotImplementedError("CNN layers have no heads")
