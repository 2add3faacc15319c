from . import bert, swin, vit  # noqa: F401  (register the BERT, Swin and ViT families)
from .base import Adapter, Dims, LayerParts
from .registry import ADAPTERS, adapter_for

__all__ = ["ADAPTERS", "Adapter", "Dims", "LayerParts", "adapter_for"]
