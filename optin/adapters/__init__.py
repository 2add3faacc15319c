from . import bert  # noqa: F401  (registers the BERT family)
from .base import Adapter, Dims, LayerParts
from .registry import ADAPTERS, adapter_for

__all__ = ["ADAPTERS", "Adapter", "Dims", "LayerParts", "adapter_for"]
