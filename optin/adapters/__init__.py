from . import bert, efficientnet_lite, mpnet, resnet, segment, swin, timm_vit, vit  # noqa: F401  (register the families)
from .base import Adapter, Channels, Dims, LayerParts
from .registry import ADAPTERS, adapter_for

__all__ = ["ADAPTERS", "Adapter", "Channels", "Dims", "LayerParts", "adapter_for"]
