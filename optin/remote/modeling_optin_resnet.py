"""OPTIN pruned ResNet image classifiers (basic and bottleneck blocks): the dense transformers
class, narrowed to config.optin_narrowed (each block's inner channel runs; an emptied run makes the
branch a constant) before the weights load (the remote twin of optin/adapters/resnet.py's narrowing)."""
import torch
from transformers import ResNetForImageClassification

from .optin_pruned import ConstantBranch, Layout, OptinPruned


class ResNetLayout(Layout):
    def layers(self):
        return [block for stage in self.model.resnet.encoder.stages for block in stage.layers]

    def runs(self, i):
        c = list(self.layers()[i].layer)  # conv layers of the branch: 2 (basic) or 3 (bottleneck)
        return [((a.convolution, a.normalization), b.convolution) for a, b in zip(c, c[1:])]

    def empty_runs(self, i, runs):
        block = self.layers()[i]
        convs = list(block.layer)
        stride = 1
        for cl in convs:
            stride *= cl.convolution.stride[0]
        block.layer = ConstantBranch(torch.zeros(convs[-1].convolution.out_channels), stride)


class OptinResNetForImageClassification(OptinPruned, ResNetForImageClassification):
    layout = ResNetLayout
