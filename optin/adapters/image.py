"""What every image-classifier family shares: `pixel_values` in (dynamic batch only), the image
processor instead of a tokenizer, random images where no real data is at hand, and no padding
(every token of an image is real). Families give their blocks, and override `valid_tokens`
where the token count changes across layers (Swin's patch merging, a CNN's grids)."""
from __future__ import annotations

import torch

from .base import Adapter


def pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class ImageAdapter(Adapter):
    task_suffix = "ForImageClassification"
    modality = "image"

    @classmethod
    def from_config(cls, config):
        return cls.auto_model()._from_config(config)

    @classmethod
    def load_processor(cls, path, config):
        from ..images import ImageProcessor

        return ImageProcessor.for_model(config, path)

    def image_size(self) -> tuple[int, int]:
        return pair(self.config.image_size)

    # patch-embedding families (ViT, DeiT, Swin, timm) give num_patches(); CNNs override seq_len
    def seq_len(self, max_length=None) -> int:
        """Tokens entering the first block: the patches plus the prefix tokens ([CLS], ...)."""
        return self.num_patches() + self.special_tokens

    def patch_embed_macs(self, width: int) -> int:
        """MACs of the patch embedding, a conv: every patch pixel × channel to `width` outputs."""
        ph, pw = pair(self.config.patch_size)
        return self.num_patches() * self.config.num_channels * ph * pw * width

    def input_names(self):
        return ["pixel_values"]

    def dynamic_axes(self):
        return {"pixel_values": {0: "batch"}}

    def random_inputs(self, batch, seq, g, ragged=False):
        h, w = self.image_size()
        return {"pixel_values": torch.randn(batch, self.config.num_channels, h, w, generator=g)}

    def valid_tokens(self, batch, layer=0):
        return torch.ones(batch["pixel_values"].shape[0], self.seq_len(), dtype=torch.bool)
