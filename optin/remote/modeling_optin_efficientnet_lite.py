"""OPTIN pruned EfficientNet-Lite image classifiers: optin's model code (carried beside this file as
efficientnet_lite.py), narrowed to config.optin_narrowed (the expanded channels of each expanding
MBConv block; an emptied block's branch is a constant) before the weights load (the remote twin of
optin/adapters/efficientnet_lite.py's narrowing)."""
import torch

from .efficientnet_lite import EfficientNetLiteForImageClassification
from .optin_pruned import ConstantBranch, Layout, OptinPruned


class EfficientNetLiteLayout(Layout):
    def __init__(self, model):
        super().__init__(model)
        # the blocks before the first expanding one run with the stem and are not layers
        expands = [e != 1 for _, _, e, _, _ in self.config.block_args()]
        self.lead = expands.index(True) if any(expands) else len(expands)

    def layers(self):
        return list(self.model.efficientnet.blocks)[self.lead:]

    def runs(self, i):
        b = self.layers()[i]
        return [((b.expand_conv, b.bn0, b.depthwise_conv, b.bn1), b.project_conv)]

    def empty_runs(self, i, runs):
        b = self.layers()[i]
        b.branch = ConstantBranch(torch.zeros(b.bn2.num_features), b.depthwise_conv.stride[0])
        for name in ("expand_conv", "bn0", "depthwise_conv", "bn1", "project_conv", "bn2"):
            setattr(b, name, None)


class OptinEfficientNetLiteForImageClassification(OptinPruned, EfficientNetLiteForImageClassification):
    layout = EfficientNetLiteLayout
