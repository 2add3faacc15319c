"""Swin image classifiers (Hugging Face transformers 5.x `SwinForImageClassification`).

Layers are the blocks of every stage, in order. Widths differ by stage: stage s has hidden size
embed_dim·2^s, num_heads[s] heads of hidden / heads each and mlp_ratio·hidden FFN neurons, on a
(h/2^s) × (w/2^s) token grid; `dims()` gives them per layer (optin.adapters.base.Dims). The last
block of a stage is followed by its patch merging (2×2 tokens → one, hidden ×2), which
`run_layer` runs with the block, so a layer's output is the next layer's input. Patch merging,
the patch embedding and the classifier are not prunable: they are the fixed MACs (`head_macs`).

Blocks are pre-LayerNorm like ViT's, with attention inside non-overlapping windows of
window_size² tokens (shifted by half a window in every other block). Attention reshapes with
-1 heads, and so does the relative-position bias; its table [(2W−1)², heads] has a column per
head, which `keep_head_params` slices with the kept heads. A block that loses every head adds
only o_proj's bias, one that loses every neuron only fc2's bias. Every token is real (no
padding), and the classifier reads the mean of the final LayerNorm's tokens.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import BiasOnly, Dims, LayerParts, PassThrough
from .registry import register
from .image import pair as _pair
from .vit import ViTAdapter, _BiasAttention, attention_sublayer, mlp_sublayer


@register
class SwinAdapter(ViTAdapter):
    """Image inputs as ViT's (pixel_values, batch axis dynamic); everything else Swin's own."""

    model_types = ("swin",)
    auto_class = "SwinForImageClassification"
    base = "swin"
    token_reduction = False  # windows need the full token grid
    special_tokens = 0

    def _stages(self) -> list[tuple[int, int, int]]:
        """(stage, block within stage, blocks in stage) for each layer."""
        return [(s, j, depth) for s, depth in enumerate(self.config.depths) for j in range(depth)]

    def _grids(self) -> list[tuple[int, int]]:
        """Token grid (height, width) of each stage: patches, then halved (rounded up) by each merging."""
        (h, w), (ph, pw) = _pair(self.config.image_size), _pair(self.config.patch_size)
        grid = (-(-h // ph), -(-w // pw))  # the patch embedding pads to whole patches
        out = []
        for _ in self.config.depths:
            out.append(grid)
            grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        return out

    def _dim(self, s: int) -> int:
        return int(self.config.embed_dim * 2 ** s)

    def dims(self) -> Dims:
        c = self.config
        stages = [s for s, _, _ in self._stages()]
        hidden = [self._dim(s) for s in stages]
        heads = [c.num_heads[s] for s in stages]
        return Dims.per_layer(heads, [d // h for d, h in zip(hidden, heads)], hidden,
                              [int(c.mlp_ratio * d) for d in hidden])

    def layers(self):
        return [block for stage in self.encoder_model.encoder.layers for block in stage.blocks]

    def parts(self, i):
        layer = self.layers()[i]
        a = layer.attention
        return LayerParts(a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp.fc1, layer.mlp.fc2)

    # --- tokens ----------------------------------------------------------------------------------
    def num_patches(self) -> int:
        h, w = self._grids()[0]
        return h * w

    def seq_len(self, max_length=None) -> int:
        return self.num_patches()

    def layer_tokens(self, max_length=None) -> list[int]:
        grids = self._grids()
        return [grids[s][0] * grids[s][1] for s, _, _ in self._stages()]

    def attention_keys(self) -> list[int]:
        """Tokens per window; a stage whose grid is no larger than the window attends within one
        window of the whole grid (transformers clamps the window there)."""
        grids, ws = self._grids(), self.config.window_size
        return [min(ws, *grids[s]) ** 2 for s, _, _ in self._stages()]

    def valid_tokens(self, batch, layer=0):
        tokens = self.layer_tokens() + [self.layer_tokens()[-1]]  # no merging after the last stage
        return torch.ones(batch["pixel_values"].shape[0], tokens[layer], dtype=torch.bool)

    # --- block-wise forward ----------------------------------------------------------------------
    def embed(self, batch):
        emb = self.encoder_model.embeddings
        hidden, grid = emb(batch["pixel_values"].to(emb.patch_embeddings.projection.weight.dtype))
        return hidden, {"grid": tuple(int(g) for g in grid)}

    def run_layer(self, i, hidden, ctx):
        s, j, depth = self._stages()[i]
        grid = ctx["grid"]
        for _ in range(s):
            grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        stage = self.encoder_model.encoder.layers[s]
        hidden = stage.blocks[j](hidden, grid)[0]
        if j == depth - 1 and stage.downsample is not None:
            hidden = stage.downsample(hidden, grid)
        return hidden

    def head(self, hidden, ctx):
        m = self.encoder_model
        pooled = m.pooler(m.layernorm(hidden).transpose(1, 2)).flatten(1)
        return self.model.classifier(pooled)

    # --- narrowing -------------------------------------------------------------------------------
    def set_num_heads(self, i, n):
        a = self.layers()[i].attention
        a.num_attention_heads = n
        if hasattr(a, "all_head_size"):
            a.all_head_size = n * a.head_dim

    def keep_head_params(self, i, heads):
        bias = self.layers()[i].attention.relative_position_bias
        t = bias.relative_position_bias_table
        bias.relative_position_bias_table = nn.Parameter(t.detach()[:, heads].clone(), requires_grad=t.requires_grad)

    def empty_attention(self, i):
        layer = self.layers()[i]
        o = layer.attention.o_proj
        layer.attention = _BiasAttention(o.bias, o.out_features)
        layer.layernorm_before = PassThrough()

    def empty_ffn(self, i):
        layer = self.layers()[i]
        fc2 = layer.mlp.fc2
        layer.mlp = BiasOnly(fc2.bias, fc2.out_features)
        layer.layernorm_after = PassThrough()

    def sublayers(self, i, spec=None):
        """As ViT's, but attention runs on (shifted) windows: its rows are put back in the token
        order of the residual sum the way the block itself does (window reverse, un-shift, crop)."""
        layer = self.layers()[i]
        s, _, _ = self._stages()[i]
        # q/k/v and o_proj share the window layout: only the sum's rows need putting back
        return [attention_sublayer(layer.attention, layer.layernorm_after, rows=_window_rows(layer, self._grids()[s])),
                mlp_sublayer(layer.mlp, layer, "output")]

    def head_macs(self):
        """Patch embedding (a conv: every patch pixel × channel to embed_dim), each patch merging
        (a Linear 4d → 2d on each merged token) and the classifier, per example."""
        c = self.config
        grids = self._grids()
        macs = self.patch_embed_macs(c.embed_dim)
        for s in range(len(c.depths) - 1):
            h, w = grids[s + 1]
            macs += h * w * 4 * self._dim(s) * 2 * self._dim(s)
        return macs + self._dim(len(c.depths) - 1) * c.num_labels


def _window_rows(layer, grid):
    """[batch·windows, window², C] (the attention's layout) → [batch, h·w, C] (the block's)."""
    from transformers.models.swin.modeling_swin import window_reverse

    h, w = grid

    def rows(t):
        ws = int(layer.window_size)
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        x = window_reverse(t.reshape(-1, ws, ws, t.shape[-1]), ws, hp, wp)
        x = layer.cyclic_shift(x, reverse=True)[:, :h, :w]
        return x.reshape(x.shape[0], h * w, -1)
    return rows
