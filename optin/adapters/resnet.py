"""ResNet image classifiers (Hugging Face transformers 5.x `ResNetForImageClassification`).

Layers are the residual blocks of every stage, in order; the stem (7×7 conv stride 2 + max-pool),
the shortcuts and the classifier are fixed. A block's output channels feed the residual addition
of the next block (and through the shortcuts the whole stage), so they are coupled across the
stage and are not pruned; what a block owns alone is its inner width:

- basic block (conv3×3 → BN → ReLU → conv3×3 → BN, + shortcut): conv1's output channels with
  their BatchNorm, which are conv2's input channels. One run; MACs exact and linear.
- bottleneck (conv1×1 → conv3×3 → conv1×1, widths out/4): two runs, conv1's outputs (read by
  conv2) and conv2's outputs (read by conv3). conv2 sits between the runs, so its MACs are
  m1·m2·9·H·W, not linear: the search charges each run half of conv2 at the other run's dense
  width (an upper bound, m1·m2 ≤ (m1·M2 + M1·m2)/2 for m ≤ M), and `spec_macs` reports the exact count.

A block whose run is emptied has a branch that no longer depends on its input: everything after
the emptied conv is applied to zeros once, and the branch becomes that per-channel constant on
the block's output grid (`ConstantBranch`), added to the shortcut as before.

`config.image_size` (not a ResNetConfig field; the zoo writes it) gives the input grid; 224 when absent.
"""
from __future__ import annotations

import torch

from .base import Channels, Sublayer
from .conv import (ConstantBranch, ConvAdapter, apply_eval, conv_bn, conv_macs, conv_out, per_in_channel,
                   per_out_channel, per_pair)
from .registry import register


@register
class ResNetAdapter(ConvAdapter):
    model_types = ("resnet",)
    auto_class = "ResNetForImageClassification"
    # its late blocks' channels score low and a global ranking empties them (optin.search);
    # EfficientNet-Lite keeps global: on lite0-fmnist dev it won (90.7 vs 89.8 at 0.6)
    default_allocation = "even"

    def image_size(self):
        s = getattr(self.config, "image_size", 224)
        return (s, s) if isinstance(s, int) else tuple(s)

    @property
    def bottleneck(self) -> bool:
        return self.config.layer_type == "bottleneck"

    def layers(self):
        return [block for stage in self.model.resnet.encoder.stages for block in stage.layers]

    def _convs(self, i):
        """The ResNetConvLayers (conv, BN, activation) of block i's branch; the branch replaced by a
        ConstantBranch has none."""
        branch = self.layers()[i].layer
        return list(branch) if isinstance(branch, torch.nn.Sequential) else []

    def _dense_inner(self, i) -> int:
        """Dense inner width of block i (both runs of a bottleneck have it)."""
        out = self.layer_width(i)
        return out // 4 if self.bottleneck else out  # transformers' ResNetBottleNeckLayer: reduction 4

    def layer_width(self, i):
        widths = [w for w, d in zip(self.config.hidden_sizes, self.config.depths) for _ in range(d)]
        return widths[i]

    def run_widths(self, i):
        return [self._dense_inner(i)] * (2 if self.bottleneck else 1)

    def runs(self, i):
        c = self._convs(i)
        w = self._dense_inner(i)
        first = Channels((c[0].convolution, c[0].normalization), c[1].convolution, w)
        if not self.bottleneck:
            return [first]
        return [first, Channels((c[1].convolution, c[1].normalization), c[2].convolution, w)]

    # --- grids and MACs ---------------------------------------------------------------------------
    def _conv_grids(self):
        """Per block: its input size and the output size of each of its branch convs, and the final
        size; from the dense model's conv strides and paddings (computed once per adapter)."""
        if getattr(self, "_grid_cache", None) is None:
            emb = self.dense().model.resnet.embedder
            size = conv_out(conv_out(self.image_size(), emb.embedder.convolution), emb.pooler)
            self._stem_grid = conv_out(self.image_size(), emb.embedder.convolution)
            blocks = []
            for i, block in enumerate(self.dense().layers()):
                convs, s = [], size
                for cl in self.dense()._convs(i):
                    s = conv_out(s, cl.convolution)
                    convs.append(s)
                blocks.append((size, convs))
                size = convs[-1]
            self._grid_cache = (blocks, size)
        return self._grid_cache

    def grids(self):
        blocks, last = self._conv_grids()
        return [b[0] for b in blocks] + [last]

    def unit_macs(self, i):
        blocks, _ = self._conv_grids()
        convs, out = self.dense()._convs(i), blocks[i][1]
        c1 = per_out_channel(convs[0].convolution, out[0])
        if not self.bottleneck:
            return [c1 + per_in_channel(convs[1].convolution, out[1])]
        # conv2 (3×3) sits between the runs and costs pair·m1·m2 ≤ pair·(a·m1·M + (1 − a)·M·m2) for any
        # a in [0, 1] (m ≤ M): charge run 1 the share a, run 2 the rest, a chosen so that a channel of
        # either run costs the same (then the layer's per-channel cost is exact at dense widths)
        pair = per_pair(convs[1].convolution, out[1]) * self._dense_inner(i)
        c3 = per_in_channel(convs[2].convolution, out[2])
        a = min(1.0, max(0.0, (c3 - c1 + pair) / (2 * pair)))
        return [c1 + a * pair, c3 + (1 - a) * pair]

    def fixed_macs(self):
        blocks, _ = self._conv_grids()
        dense = self.dense().model
        total = conv_macs(dense.resnet.embedder.embedder.convolution, self._stem_grid)
        for i, block in enumerate(self.dense().layers()):
            sc = getattr(block.shortcut, "convolution", None)
            if sc is not None:
                total += conv_macs(sc, blocks[i][1][-1])
        lin = dense.classifier[1]
        return total + lin.in_features * lin.out_features

    def spec_macs(self, spec, seq_len=None):
        """Exact: a bottleneck's conv2 costs m1·m2·9·H·W; a block with an emptied run costs nothing."""
        if not self.bottleneck:
            return super().spec_macs(spec)
        blocks, _ = self._conv_grids()
        total = self.fixed_macs()
        for i, kept in enumerate(spec.neurons):
            w = self._dense_inner(i)
            m1, m2 = sum(n < w for n in kept), sum(n >= w for n in kept)
            if m1 == 0 or m2 == 0:
                continue
            c, out = self.dense()._convs(i), blocks[i][1]
            total += m1 * per_out_channel(c[0].convolution, out[0])
            total += m1 * m2 * per_pair(c[1].convolution, out[1])
            total += m2 * per_in_channel(c[2].convolution, out[2])
        return int(total)

    # --- block-wise forward -----------------------------------------------------------------------
    def embed(self, batch):
        return self.model.resnet.embedder(batch["pixel_values"]), {}

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden)

    def head(self, hidden, ctx):
        return self.model.classifier(self.model.resnet.pooler(hidden))

    # --- reconstruction ---------------------------------------------------------------------------
    def sublayers(self, i, spec=None):
        """The conv that reads the last run adds (through its BatchNorm) to the shortcut before the
        block's activation; a bottleneck's middle conv also reads run 1 but feeds run 2, so it is an
        inner consumer whose target is the dense conv's output at the kept run-2 channels. The convs
        have no bias: the re-fit bias goes into the BatchNorm after them."""
        block = self.layers()[i]
        convs = self._convs(i)
        if not convs:  # emptied branch: its constant is the only thing left to fit
            return [Sublayer(block.layer, block.activation)]
        last, first = convs[-1], convs[0]
        w = self._dense_inner(i)
        run1 = None if spec is None else torch.tensor([n for n in spec.neurons[i] if n < w])
        # conv1 makes the channels the next conv reads: an inner producer
        conv1 = (conv_bn(first.convolution, first.normalization, keep_out=run1, reads="hidden"),)
        if not self.bottleneck:
            return [conv_bn(last.convolution, last.normalization, total=block.activation, at="input", producers=conv1)]
        run2 = None if spec is None else torch.tensor([n - w for n in spec.neurons[i] if n >= w])
        mid = convs[1]
        return [conv_bn(mid.convolution, mid.normalization, keep_out=run2, producers=conv1),
                conv_bn(last.convolution, last.normalization, total=block.activation, at="input")]

    # --- narrowing --------------------------------------------------------------------------------
    def empty_runs(self, i, runs):
        """Called once every run that keeps channels is sliced. The last emptied run's consumer conv
        reads only zeros, so the rest of the branch sees constants: apply it to zeros on a 1×1 grid
        (the convs after a bottleneck's 3×3 are 1×1, so the result is the same at every position)."""
        block = self.layers()[i]
        convs = self._convs(i)
        consumer = convs[max(runs) + 1]
        stride = 1
        for cl in convs:
            stride *= cl.convolution.stride[0]
        w = consumer.convolution.weight
        z = torch.zeros(1, consumer.convolution.out_channels, 1, 1, dtype=w.dtype, device=w.device)
        z = apply_eval([consumer.normalization, consumer.activation, *convs[max(runs) + 2:]], z)
        block.layer = ConstantBranch(z, stride)
