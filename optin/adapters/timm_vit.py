"""timm VisionTransformer image classifiers (ViT, DeiT, DeiT distilled), wrapped as the Hugging Face
model `optin.models.timm_vit` (model type "timm_vit").

Blocks are timm's pre-norm `Block`: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))), with
LayerScale (ls1/ls2) and drop_path where the model has them. The fused qkv is split into q, k, v
Linear layers by the wrapper; timm's Attention reshapes with `num_heads` and `attn_dim`, which
set_num_heads updates. A block that loses every head adds only ls1(proj bias), one that loses
every neuron only ls2(fc2 bias): the LayerScale stays, the norm in front goes.

Tokens: the patches plus timm's prefix tokens (class token, distillation token, register
tokens: `num_prefix_tokens`), no padding. The head is timm's own: final norm, then
`forward_head` (pooling by `global_pool`, fc_norm, classifier; the distilled model averages its
two heads). Token reduction keeps the prefix tokens and is offered only where the head reads
prefix tokens alone ('token' pooling or the distilled head); 'avg' pooling averages the patches.
"""
from __future__ import annotations


from ..models import timm_vit as _model  # registers the model with the Auto classes
from .base import BiasOnly, Dims, LayerParts, PassThrough, Sublayer, inner
from .image import ImageAdapter
from .registry import register


@register
class TimmViTAdapter(ImageAdapter):
    requires = ("timm",)  # and a torchvision that matches torch (Makefile: test-timm)
    model_types = (_model.TimmVitConfig.model_type,)
    auto_class = "AutoModelForImageClassification"

    @classmethod
    def auto_model(cls):
        return _model.TimmVitForImageClassification


    def __init__(self, model):
        super().__init__(model)
        net = self.net
        self.special_tokens = int(net.num_prefix_tokens)
        self.distilled = getattr(net, "dist_token", None) is not None
        reads_prefix = self.distilled or (net.global_pool == "token" and net.attn_pool is None)
        self.token_reduction = bool(reads_prefix and self.special_tokens > 0)

    @property
    def net(self):
        return self.model.vit

    def dims(self) -> Dims:
        c = self.config
        return Dims(c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads,
                    c.hidden_size, c.intermediate_size)

    def layers(self):
        return list(self.net.blocks)

    def parts(self, i):
        b = self.layers()[i]
        a = b.attn
        return LayerParts(a.qkv.q, a.qkv.k, a.qkv.v, a.proj, b.mlp.fc1, b.mlp.fc2)

    # --- inputs ----------------------------------------------------------------------------
    def num_patches(self) -> int:
        return int(self.net.patch_embed.num_patches)


    # --- block-wise forward --------------------------------------------------------------------
    def embed(self, batch):
        net = self.net
        x = net.patch_embed(batch["pixel_values"].to(net.patch_embed.proj.weight.dtype))
        x = net.norm_pre(net.patch_drop(net._pos_embed(x)))
        return x, {}  # no padding: no attention mask

    def run_layer(self, i, hidden, ctx):
        return self.layers()[i](hidden)

    def head(self, hidden, ctx):
        return self.net.forward_head(self.net.norm(hidden))

    # --- narrowing -------------------------------------------------------------------------------
    def set_num_heads(self, i, n):
        a = self.layers()[i].attn
        a.num_heads = n
        a.attn_dim = n * a.head_dim

    def empty_attention(self, i):
        b = self.layers()[i]
        b.attn = BiasOnly(b.attn.proj.bias, self.config.hidden_size)
        b.norm1 = PassThrough()

    def empty_ffn(self, i):
        b = self.layers()[i]
        b.mlp = BiasOnly(b.mlp.fc2.bias, self.config.hidden_size)
        b.norm2 = PassThrough()

    def head_macs(self):
        """Patch embedding (a conv: every patch pixel × channel to hidden) and the classifier(s), per example."""
        c = self.config
        heads = 2 if self.distilled else 1
        return self.patch_embed_macs(c.hidden_size) + heads * c.hidden_size * c.num_labels

    def sublayers(self, i, spec=None):
        # x + ls1(attn(norm1(x))): the attention sum is norm2's input; LayerScale scales the consumer
        b = self.layers()[i]
        a, m = b.attn, b.mlp
        att = Sublayer(a, b.norm2, reads="heads", scale=_gamma(b.ls1)) if isinstance(a, BiasOnly) else Sublayer(
            a.proj, b.norm2, reads="heads", scale=_gamma(b.ls1), producers=inner(a.qkv.q, a.qkv.k, a.qkv.v))
        ffn = Sublayer(m, b, "output", scale=_gamma(b.ls2)) if isinstance(m, BiasOnly) else Sublayer(
            m.fc2, b, "output", scale=_gamma(b.ls2), producers=inner(m.fc1))
        return [att, ffn]


def _gamma(ls):
    """LayerScale's per-channel factor; None where the block has none (nn.Identity)."""
    g = getattr(ls, "gamma", None)
    return None if g is None else g.detach()
