"""ViT and DeiT image classifiers (Hugging Face transformers 5.x `ViTForImageClassification`,
`DeiTForImageClassification`).

Blocks are pre-LayerNorm: x + attn(LN(x)), then x + mlp(LN(x)). Attention reshapes with -1 heads,
so narrowing q/k/v/o_proj is all a layer needs (num_attention_heads is metadata). A block that
loses every head adds only o_proj's bias, one that loses every neuron only fc2's bias; the
LayerNorm in front of an emptied branch has no consumer left and is dropped too.

Tokens: every patch plus [CLS] (DeiT also a distillation token), all real: there is no padding,
so the valid-token mask is all ones and the sequence length MACs are counted at is fixed by the
image and patch sizes. The classifier reads the final LayerNorm of [CLS].
"""
from __future__ import annotations


from .base import BiasOnly, Dims, LayerParts, PassThrough, Sublayer, inner
from .image import ImageAdapter
from .image import pair as _pair
from .registry import register


class _BiasAttention(BiasOnly):
    """ViT's layer unpacks (output, weights) from its attention module."""

    def forward(self, x, *args, **kwargs):
        return super().forward(x), None


@register
class ViTAdapter(ImageAdapter):
    model_types = ("vit",)
    # the class itself, not AutoModelForImageClassification: for DeiT that maps to two classes
    # (with and without teacher head) and cannot build from a config that names neither
    auto_class = "ViTForImageClassification"
    base = "vit"
    token_reduction = True  # no padding, the classifier reads [CLS] only
    special_tokens = 1  # [CLS]

    @property
    def encoder_model(self):
        return getattr(self.model, self.base)

    def dims(self) -> Dims:
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return Dims(c.num_hidden_layers, c.num_attention_heads, head_dim, c.hidden_size, c.intermediate_size)

    def layers(self):
        return list(self.encoder_model.layers)

    def parts(self, i):
        layer = self.layers()[i]
        a = layer.attention
        return LayerParts(a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp.fc1, layer.mlp.fc2)

    # --- inputs ----------------------------------------------------------------------------
    def num_patches(self) -> int:
        (h, w), (ph, pw) = _pair(self.config.image_size), _pair(self.config.patch_size)
        return (h // ph) * (w // pw)


    # --- block-wise forward --------------------------------------------------------------------
    def embed(self, batch):
        emb = self.encoder_model.embeddings(batch["pixel_values"].to(self.encoder_model.embeddings.cls_token.dtype))
        return emb, {}  # no padding: no attention mask

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden, None)

    def head(self, hidden, ctx):
        return self.model.classifier(self.encoder_model.layernorm(hidden)[:, 0])

    # --- narrowing -------------------------------------------------------------------------------
    def set_num_heads(self, i, n):
        self.layers()[i].attention.num_attention_heads = n

    def empty_attention(self, i):
        layer = self.layers()[i]
        layer.attention = _BiasAttention(layer.attention.o_proj.bias, self.config.hidden_size)
        layer.layernorm_before = PassThrough()

    def empty_ffn(self, i):
        layer = self.layers()[i]
        layer.mlp = BiasOnly(layer.mlp.fc2.bias, self.config.hidden_size)
        layer.layernorm_after = PassThrough()

    def head_macs(self):
        """Patch embedding (a conv: every patch pixel × channel to hidden) and the classifier, per example."""
        c = self.config
        return self.patch_embed_macs(c.hidden_size) + c.hidden_size * c.num_labels

    def sublayers(self, i, spec=None):
        # pre-LN: the attention sum is what layernorm_after reads, the FFN sum is the block's output
        layer = self.layers()[i]
        return [attention_sublayer(layer.attention, layer.layernorm_after),
                mlp_sublayer(layer.mlp, layer, "output")]


def attention_sublayer(a, total, **kw) -> Sublayer:
    """q/k/v_proj → o_proj attention (ViT, DeiT, Swin), or the stand-in of an emptied one."""
    if isinstance(a, BiasOnly):
        return Sublayer(a, total, reads="heads", **kw)
    return Sublayer(a.o_proj, total, reads="heads", producers=inner(a.q_proj, a.k_proj, a.v_proj), **kw)


def mlp_sublayer(mlp, total, at="input", **kw) -> Sublayer:
    """fc1 → fc2 MLP, or the stand-in of an emptied one."""
    if isinstance(mlp, BiasOnly):
        return Sublayer(mlp, total, at, **kw)
    return Sublayer(mlp.fc2, total, at, producers=inner(mlp.fc1), **kw)


@register
class DeiTAdapter(ViTAdapter):
    """DeiT differs in its prefix and a distillation token beside [CLS]; the classifier still
    reads [CLS] (DeiTForImageClassification; the WithTeacher variant is not supported)."""

    model_types = ("deit",)
    auto_class = "DeiTForImageClassification"
    base = "deit"
    special_tokens = 2  # [CLS] + distillation
