"""timm VisionTransformer (ViT, DeiT, DeiT distilled) as a small Hugging Face model (`model_type` "timm_vit").

`TimmVitForImageClassification` holds a timm model (`self.vit`), built with
`timm.create_model(config.timm_model, pretrained=False, **kwargs)` where the kwargs are the
config's architecture fields (img_size, patch_size, in_chans, embed_dim, depth, num_heads,
mlp_ratio, num_classes) plus `config.timm_kwargs` (class_token, global_pool, reg_tokens,
init_values, no_embed_class, ...): the timm name gives the model's class (VisionTransformer, or
VisionTransformerDistilled for `deit_*_distilled_*`) and its defaults, the config fixes the widths.

One change to timm's modules: each block's fused `attn.qkv` Linear(dim, 3·dim) becomes `SplitQKV`,
three Linear layers q, k, v whose outputs are concatenated, which is the same function (timm's
Attention then reshapes with `attn.num_heads` and `attn.attn_dim`, which narrowing updates). The
state dict therefore has `vit.blocks.N.attn.qkv.{q,k,v}.weight`; `convert_timm_state_dict` turns a
timm state dict (fused `blocks.N.attn.qkv.weight`) into this model's keys, so real timm checkpoints
load (`optin.zoo`'s `timm:NAME` and `timm:NAME:/path/to/checkpoint`).

Supported: blocks of timm's `Block` with plain `Attention` (no scale_norm, no gate) and `Mlp` (no
hidden norm); pooling 'token', 'avg' or the distilled head; not attention pooling ('map').

Registered with AutoConfig and AutoModelForImageClassification by optin.models (like efficientnet_lite).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

try:  # optin's one-line errors; a pruned folder carries this file where optin is absent (optin.remote_code)
    from optin.errors import MissingDependency, UnsupportedModel
except ImportError:
    MissingDependency, UnsupportedModel = ImportError, ValueError


class TimmVitConfig(PreTrainedConfig):
    model_type = "timm_vit"

    timm_model: str = "vit_tiny_patch16_224"
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 192
    num_hidden_layers: int = 12
    num_attention_heads: int = 3
    intermediate_size: int = 768
    timm_kwargs: dict | None = None  # further timm.create_model keyword arguments

    def create_kwargs(self) -> dict:
        return dict(img_size=self.image_size, patch_size=self.patch_size, in_chans=self.num_channels,
                    embed_dim=self.hidden_size, depth=self.num_hidden_layers, num_heads=self.num_attention_heads,
                    mlp_ratio=self.intermediate_size / self.hidden_size, num_classes=self.num_labels,
                    **(self.timm_kwargs or {}))


def _timm():
    try:
        import timm
    except ImportError as e:
        raise MissingDependency("timm models need timm and a torchvision built for your torch: "
                                "pip install timm (see README, timm models)") from e
    return timm


class SplitQKV(nn.Module):
    """timm's fused qkv Linear(dim, 3·attn_dim) as three Linear layers; forward returns
    cat([q(x), k(x), v(x)], -1), exactly what the fused layer computes."""

    def __init__(self, qkv: nn.Linear):
        super().__init__()
        d = qkv.out_features // 3
        bias = qkv.bias is not None
        dd = dict(device=qkv.weight.device, dtype=qkv.weight.dtype)
        self.q = nn.Linear(qkv.in_features, d, bias=bias, **dd)
        self.k = nn.Linear(qkv.in_features, d, bias=bias, **dd)
        self.v = nn.Linear(qkv.in_features, d, bias=bias, **dd)
        if qkv.weight.device.type != "meta":
            with torch.no_grad():
                for j, lin in enumerate((self.q, self.k, self.v)):
                    lin.weight.copy_(qkv.weight[j * d:(j + 1) * d])
                    if bias:
                        lin.bias.copy_(qkv.bias[j * d:(j + 1) * d])

    def forward(self, x):
        return torch.cat([self.q(x), self.k(x), self.v(x)], -1)


def check_supported(net: nn.Module) -> None:
    """Raise UnsupportedModel for the timm ViT variants the adapter cannot narrow."""
    from timm.layers import Mlp
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(net, VisionTransformer):
        raise UnsupportedModel(f"timm model {type(net).__name__} is not a VisionTransformer; OPTIN supports "
                               "timm's VisionTransformer (ViT, DeiT, DeiT distilled)")
    if getattr(net, "dynamic_img_size", False):
        raise UnsupportedModel("timm ViT with dynamic_img_size is not supported (a fixed image size is)")
    if getattr(net, "attn_pool", None) is not None:
        raise UnsupportedModel("timm ViT with attention pooling (global_pool='map') is not supported")
    for i, b in enumerate(net.blocks):
        if type(b) is not Block or type(b.attn) is not Attention or type(b.mlp) is not Mlp:
            raise UnsupportedModel(f"timm ViT block {i} ({type(b).__name__}, {type(b.attn).__name__}, "
                                   f"{type(b.mlp).__name__}) is not a plain Block / Attention / Mlp")
        if not hasattr(b.attn, "attn_dim"):  # older timm reshapes the heads' output to the input width
            raise UnsupportedModel(f"timm {_timm().__version__}'s Attention has no attn_dim, so its heads cannot "
                                   "be narrowed: pip install -U timm")
        if not isinstance(b.attn.norm, nn.Identity) or getattr(b.attn, "gate", None) is not None:
            raise UnsupportedModel("timm ViT attention with scale_norm or a gate is not supported")
        if not isinstance(b.mlp.norm, nn.Identity):
            raise UnsupportedModel("timm ViT MLP with a hidden-layer norm is not supported")


def build_timm(config: TimmVitConfig) -> nn.Module:
    """The timm model of a config, fused qkv split (random weights: timm's own initialisation)."""
    net = _timm().create_model(config.timm_model, pretrained=False, **config.create_kwargs())
    check_supported(net)
    split_qkv(net)
    return net


def split_qkv(net: nn.Module) -> nn.Module:
    for b in net.blocks:
        if isinstance(b.attn.qkv, nn.Linear):
            b.attn.qkv = SplitQKV(b.attn.qkv)
    return net


class TimmVitPreTrainedModel(PreTrainedModel):
    config_class = TimmVitConfig
    config: TimmVitConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        """timm initialises its modules when the model is built; nothing to add."""


class TimmVitForImageClassification(TimmVitPreTrainedModel):
    def __init__(self, config: TimmVitConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = build_timm(config)
        self.post_init()
        self._apply_attn_implementation()

    def set_attn_implementation(self, attn_implementation):
        """"eager" (fvcore counts, tiny tests): timm's explicit softmax(q·kᵀ)·v; "sdpa": its fused
        scaled_dot_product_attention (the same function)."""
        super().set_attn_implementation(attn_implementation)
        self._apply_attn_implementation()

    def _apply_attn_implementation(self):
        fused = self.config._attn_implementation == "sdpa"
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = fused

    def forward(self, pixel_values=None, labels=None, **kwargs):
        logits = self.vit(pixel_values)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)

    @classmethod
    def from_timm(cls, net: nn.Module, name: str, **config_kwargs) -> "TimmVitForImageClassification":
        """Wrap a timm VisionTransformer built as `timm.create_model(name, ...)` (weights included)."""
        config = config_from_timm(net, name, **config_kwargs)
        model = cls(config).eval()
        model.load_state_dict(convert_timm_state_dict(net.state_dict()), strict=True)
        return model


def timm_kwargs_of(net: nn.Module) -> dict:
    """The create_model keyword arguments beyond the widths that rebuild `net`'s layout (tokens,
    pooling, norms, LayerScale, biases); drop rates are left out (inference)."""
    b = net.blocks[0]
    qkv = b.attn.qkv
    fc = not isinstance(net.fc_norm, nn.Identity)
    return dict(class_token=net.cls_token is not None, reg_tokens=int(getattr(net, "num_reg_tokens", 0)),
                global_pool=net.global_pool, no_embed_class=bool(net.no_embed_class),
                pos_embed="learn" if net.pos_embed is not None else "none",
                qkv_bias=(qkv.q if isinstance(qkv, SplitQKV) else qkv).bias is not None,
                qk_norm=not isinstance(b.attn.q_norm, nn.Identity), proj_bias=b.attn.proj.bias is not None,
                init_values=None if isinstance(b.ls1, nn.Identity) else 1.0,
                pre_norm=not isinstance(net.norm_pre, nn.Identity),
                final_norm=fc or not isinstance(net.norm, nn.Identity), fc_norm=fc,
                pool_include_prefix=bool(getattr(net, "pool_include_prefix", False)))


def config_from_timm(net: nn.Module, name: str, **kwargs) -> TimmVitConfig:
    """A config that rebuilds `net`'s architecture from its timm name (weights: load them)."""
    check_supported(net)
    pe = net.patch_embed
    b = net.blocks[0]
    return TimmVitConfig(timm_model=name, image_size=int(pe.img_size[0]), patch_size=int(pe.patch_size[0]),
                         num_channels=int(pe.proj.in_channels), hidden_size=int(net.embed_dim),
                         num_hidden_layers=len(net.blocks), num_attention_heads=int(b.attn.num_heads),
                         intermediate_size=int(b.mlp.fc1.out_features), num_labels=int(net.num_classes),
                         timm_kwargs=timm_kwargs_of(net), **kwargs)


def convert_timm_state_dict(sd: dict, prefix: str = "vit.") -> dict:
    """A timm VisionTransformer state dict → this model's keys: every key gets `prefix`, and each
    fused `blocks.N.attn.qkv.{weight,bias}` is cut in three (`...attn.qkv.{q,k,v}.{weight,bias}`)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) == 5 and parts[0] == "blocks" and parts[2:4] == ["attn", "qkv"]:
            d = value.shape[0] // 3
            for j, n in enumerate("qkv"):
                out[f"{prefix}blocks.{parts[1]}.attn.qkv.{n}.{parts[4]}"] = value[j * d:(j + 1) * d].clone()
        else:
            out[prefix + key] = value
    return out

