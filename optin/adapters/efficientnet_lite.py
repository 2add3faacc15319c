"""EfficientNet-Lite image classifiers (`optin.models.efficientnet_lite`, model type "efficientnet_lite").

Layers are the MBConv blocks that expand (expand ratio > 1): each owns its expanded channels, made by
the 1×1 expand conv and its BatchNorm, carried one to one through the k×k depthwise conv and its
BatchNorm, and read by the 1×1 project conv: one run per block (optin.adapters.conv). Block outputs
feed the identity residuals of their stage and stay dense, as do the stem, the head conv and the
classifier. EfficientNet-Lite0's first block does not expand: its depthwise channels are the stem's
outputs, so it runs with the stem (`embed`) and is not pruned; a non-expanding block after an
expanding one is not supported (no Lite model has one).

A block left with no expanded channel has a constant branch: its project BatchNorm applied to zeros
(`ConstantBranch`), plus the residual where the block has one.
"""
from __future__ import annotations

import torch

from ..errors import UnsupportedModel
from ..models import efficientnet_lite as _model  # registers the model with the Auto classes
from .base import Channels, Sublayer
from .conv import ConstantBranch, ConvAdapter, apply_eval, conv_bn
from .registry import register


@register
class EfficientNetLiteAdapter(ConvAdapter):
    model_types = (_model.EfficientNetLiteConfig.model_type,)
    auto_class = "AutoModelForImageClassification"

    @classmethod
    def auto_model(cls):
        return _model.EfficientNetLiteForImageClassification


    def __init__(self, model):
        super().__init__(model)
        args = self.config.block_args()
        expands = [e != 1 for _, _, e, _, _ in args]
        self._lead = expands.index(True) if any(expands) else len(args)  # stem-coupled blocks
        if not all(expands[self._lead:]):
            raise UnsupportedModel("EfficientNet-Lite with a non-expanding MBConv block after an expanding "
                                   "one is not supported (its channels are the previous block's outputs)")
        self._args = args

    @property
    def net(self):
        return self.model.efficientnet

    def layers(self):
        return list(self.net.blocks)[self._lead:]

    def _arg(self, i):
        return self._args[self._lead + i]

    def layer_width(self, i):
        return self._arg(i)[4]

    def run_widths(self, i):
        k, s, e, cin, cout = self._arg(i)
        return [cin * e]

    def runs(self, i):
        b = self.layers()[i]
        k, s, e, cin, cout = self._arg(i)
        return [Channels((b.expand_conv, b.bn0, b.depthwise_conv, b.bn1), b.project_conv, cin * e)]

    # --- grids and MACs (dense, from the config: TF SAME padding gives ceil(size / stride)) -------
    def _sizes(self):
        """Grid entering each block (all of them), and after the last one; the stem's output first."""
        size = -(-self.config.image_size // 2)
        out = [size]
        for _, s, _, _, _ in self._args:
            size = -(-size // s)
            out.append(size)
        return out

    def grids(self):
        return [(n, n) for n in self._sizes()[self._lead:]]

    def unit_macs(self, i):
        k, s, e, cin, cout = self._arg(i)
        sizes = self._sizes()
        hin, hout = sizes[self._lead + i], sizes[self._lead + i + 1]
        # expand 1×1 (cin in), depthwise k×k (one in), project 1×1 (cout out), per expanded channel
        return [hin * hin * cin + hout * hout * (k * k + cout)]

    def fixed_macs(self):
        c = self.config
        sizes = self._sizes()
        stem = self.config.stem_size * self.config.num_channels * 9  # 3×3 stem conv, per output position
        total = sizes[0] * sizes[0] * stem
        for j in range(self._lead):  # non-expanding blocks: depthwise + project
            k, s, e, cin, cout = self._args[j]
            total += sizes[j + 1] ** 2 * cin * (k * k + cout)
        total += sizes[-1] ** 2 * self._args[-1][4] * c.head_size
        return total + c.head_size * c.num_labels

    # --- block-wise forward -----------------------------------------------------------------------
    def embed(self, batch):
        h = self.net.stem(batch["pixel_values"])
        for block in list(self.net.blocks)[:self._lead]:
            h = block(h)
        return h, {}

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden)

    def head(self, hidden, ctx):
        return self.model.classifier(self.model.dropout(self.net.pool(hidden)))

    # --- reconstruction ---------------------------------------------------------------------------
    def sublayers(self, i, spec=None):
        """The project conv (bias-free, then bn2) ends the branch; the block's output is the
        branch plus the identity residual where there is one."""
        b = self.layers()[i]
        if b.branch is not None:
            return [Sublayer(b.branch, b, "output")]
        keep = None if spec is None else torch.tensor(spec.neurons[i])
        # the expand conv makes the channels (the depthwise conv carries them one to one: not re-fit)
        return [conv_bn(b.project_conv, b.bn2, total=b,
                        producers=(conv_bn(b.expand_conv, b.bn0, keep_out=keep, reads="hidden"),))]

    # --- narrowing --------------------------------------------------------------------------------
    def empty_runs(self, i, runs):
        b = self.layers()[i]
        w = b.bn2.weight
        const = apply_eval([b.bn2], torch.zeros(1, b.bn2.num_features, 1, 1, dtype=w.dtype, device=w.device))
        b.branch = ConstantBranch(const, self._arg(i)[1])
        for name in ("expand_conv", "bn0", "depthwise_conv", "bn1", "project_conv", "bn2"):
            setattr(b, name, None)
