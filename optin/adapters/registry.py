"""Adapters register by Hugging Face `config.model_type`; an unknown type lists the known ones."""
from __future__ import annotations

from ..errors import UnsupportedModel

ADAPTERS: dict[str, type] = {}


def register(cls):
    for t in cls.model_types:
        ADAPTERS[t] = cls
    return cls


def adapter_for(model):
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    cls = ADAPTERS.get(mtype)
    if cls is None:
        raise UnsupportedModel(f"model type {mtype!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}")
    if not type(model).__name__.endswith(cls.task_suffix):
        raise UnsupportedModel(f"{type(model).__name__} is not a {mtype} classifier; OPTIN prunes "
                               f"*{cls.task_suffix} models of type {mtype}")
    return cls(model)
