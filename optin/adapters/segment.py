"""Swin semantic segmenters (`optin.models.swin_seg`, model type "swin_seg"): the Swin backbone's
heads and FFN neurons are pruned exactly as for a Swin classifier (optin.adapters.swin: layers,
parts, narrowing, sublayers for the re-fit, windowed-attention MACs); the decoder is fixed.

What differs is around the blocks:
- The output is per-pixel logits [B, classes, H, W]; `task` (optin.tasks.SEGMENTATION) makes the
  KD term of the trajectory score a per-pixel distillation (one class distribution per pixel),
  the evaluation mIoU and pixel accuracy, and the labels per-pixel maps.
- The decoder reads every stage's output, not only the last: `run_layer` keeps each stage's
  output (before its patch merging) in the batch context as `stage{s}`, which `head` reads. The
  context of a cached batch then holds the dense pyramid, so a candidate re-run from block i
  (exact scoring) recomputes the stages from i on and reuses the earlier ones, which a mask at
  block i cannot change; `repeat_batch` stacks them like every other context tensor.
- The trajectory's Gram features are the backbone blocks' outputs (`features`, as for Swin).
- MACs: the blocks as Swin's; fixed: patch embedding, patch mergings and the decoder (each
  stage's Linear at its own grid, the fuse and classifier Linears at stage 0's grid). Bilinear
  upsampling and LayerNorm are not counted (nor by fvcore's matmul count).
"""
from __future__ import annotations

from ..models import swin_seg as _model  # registers the model with the Auto classes
from ..tasks import SEGMENTATION
from .registry import register
from .swin import SwinAdapter


@register
class SwinSegAdapter(SwinAdapter):
    model_types = (_model.SwinSegConfig.model_type,)
    auto_class = "AutoModelForSemanticSegmentation"
    task_suffix = "ForSemanticSegmentation"
    task = SEGMENTATION

    @classmethod
    def auto_model(cls):
        return _model.SwinSegForSemanticSegmentation

    @classmethod
    def load_processor(cls, path, config):
        from ..segdata import SegProcessor

        return SegProcessor.for_model(config, path)

    def run_layer(self, i, hidden, ctx):
        s, j, depth = self._stages()[i]
        if j < depth - 1:
            return super().run_layer(i, hidden, ctx)
        grid = ctx["grid"]
        for _ in range(s):
            grid = _model.half(grid)
        stage = self.encoder_model.encoder.layers[s]
        hidden = stage.blocks[j](hidden, grid)[0]
        ctx[f"stage{s}"] = hidden  # the decoder's input from this stage
        return hidden if stage.downsample is None else stage.downsample(hidden, grid)

    def head(self, hidden, ctx):
        m = self.model
        n = len(self.config.depths)
        stages = [m.decode_head.norms[s](ctx[f"stage{s}"]) for s in range(n - 1)] + [m.swin.layernorm(hidden)]
        grids = [tuple(g) for g in self._grids()]
        return m.decode_head(stages, grids, self.image_size())

    def head_macs(self):
        """Patch embedding, patch mergings (Swin's) and the decoder's Linears, per example."""
        c = self.config
        grids = self._grids()
        d = c.decoder_hidden_size
        top = grids[0][0] * grids[0][1]
        decoder = sum(h * w * self._dim(s) * d for s, (h, w) in enumerate(grids))
        decoder += top * (len(grids) * d * d + d * c.num_labels)
        return super().head_macs() - self._dim(len(c.depths) - 1) * c.num_labels + decoder
