"""A Swin semantic segmenter as a small Hugging Face model (`model_type` "swin_seg"): transformers'
`SwinModel` as the backbone and SegFormer's all-MLP decoder (Xie et al. 2021, "SegFormer", §3.2)
on its stages, returning per-pixel class logits [B, num_labels, H, W] at the input resolution
(`SemanticSegmenterOutput.logits`, as transformers' segmenters name them).

Why not Mask2Former (the OPTIN paper's segmenter): the zoo model has to be trained from scratch
on two shared CPU cores (nothing pretrained for segmentation installs offline), and Mask2Former's
set-prediction loss (Hungarian matching of queries to masks) is known to need long schedules,
on top of a pixel decoder and a masked-attention transformer decoder that cost more per step than
this whole model. An earlier trial of a small transformers Mask2Former (its code not kept, its
numbers not re-measured) reached 16% mIoU on fmnist-seg where this model reached 36% after the
same six minutes. The backbone pruning here would apply to Mask2Former's Swin backbone unchanged;
what is missing is its adapter's head (the pixel and transformer decoders) and a KD term on its
mask/class outputs (docs/segmentation.md).

Decoder: each stage s's output (pre-downsampling, LayerNorm-ed; the last stage's norm is the
backbone's own `layernorm`) → Linear(C_s → D) → bilinear upsampling to stage 0's grid; the S maps
concatenated → Linear(S·D → D) + LayerNorm + GELU (+ dropout) → Linear(D → classes) → bilinear
upsampling to the input size. LayerNorm where SegFormer has BatchNorm: statistics re-estimated
after pruning (optin.recalibrate) would then come before the weight re-fit changes the features.

The backbone is run stage by stage (not through SwinModel.forward) so that the model and the
adapter's block-wise forward (optin.adapters.segment) are the same computation; windows are
clamped to grids smaller than the window, as in SwinModel (not SwinBackbone's always_partition).

Registered with AutoConfig and AutoModelForSemanticSegmentation by optin.models; this file itself
imports only torch and transformers (a pruned folder carries it, optin.remote_code).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import SwinConfig
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.swin.modeling_swin import SwinModel, SwinPreTrainedModel

IGNORE_INDEX = -100  # label of pixels that count in no loss (torch's cross_entropy default)


class SwinSegConfig(SwinConfig):
    model_type = "swin_seg"

    decoder_hidden_size: int = 64
    classifier_dropout: float = 0.1


def half(grid: tuple[int, int]) -> tuple[int, int]:
    """A token grid after one patch merging (odd sizes are padded first, as SwinPatchMerging does)."""
    return (grid[0] + 1) // 2, (grid[1] + 1) // 2


class AllMLPHead(nn.Module):
    def __init__(self, config: SwinSegConfig):
        super().__init__()
        dims = [int(config.embed_dim * 2 ** s) for s in range(len(config.depths))]
        d = config.decoder_hidden_size
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=config.layer_norm_eps) for c in dims[:-1])
        self.proj = nn.ModuleList(nn.Linear(c, d) for c in dims)
        self.fuse = nn.Linear(len(dims) * d, d)
        self.fuse_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(d, config.num_labels)

    def forward(self, stages: list[torch.Tensor], grids: list[tuple[int, int]], size) -> torch.Tensor:
        """stages: each stage's normalised output [B, h·w, C_s] on its grid → logits [B, classes, *size]."""
        top = grids[0]
        maps = []
        for x, (h, w), proj in zip(stages, grids, self.proj):
            y = proj(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)
            maps.append(y if (h, w) == tuple(top) else
                        nn.functional.interpolate(y, size=top, mode="bilinear", align_corners=False))
        x = torch.cat(maps, 1).flatten(2).transpose(1, 2)  # [B, h0·w0, S·D]
        x = self.classifier(self.dropout(self.act(self.fuse_norm(self.fuse(x)))))
        logits = x.transpose(1, 2).reshape(x.shape[0], -1, *top)
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SwinSegForSemanticSegmentation(SwinPreTrainedModel):
    config_class = SwinSegConfig

    def __init__(self, config: SwinSegConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.swin = SwinModel(config, add_pooling_layer=False)
        self.decode_head = AllMLPHead(config)
        self.post_init()

    def stage_outputs(self, pixel_values):
        """Each stage's normalised output [B, h·w, C_s] and its grid."""
        sw = self.swin
        hidden, grid = sw.embeddings(pixel_values.to(sw.embeddings.patch_embeddings.projection.weight.dtype))
        grid = tuple(int(g) for g in grid)
        stages, grids = [], []
        for s, stage in enumerate(sw.encoder.layers):
            for block in stage.blocks:
                hidden = block(hidden, grid)[0]
            last = s == len(sw.encoder.layers) - 1
            stages.append((sw.layernorm if last else self.decode_head.norms[s])(hidden))
            grids.append(grid)
            if stage.downsample is not None:
                hidden = stage.downsample(hidden, grid)
                grid = half(grid)
        return stages, grids

    def forward(self, pixel_values=None, labels=None, **kwargs):
        stages, grids = self.stage_outputs(pixel_values)
        logits = self.decode_head(stages, grids, pixel_values.shape[-2:])
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        return SemanticSegmenterOutput(loss=loss, logits=logits)
