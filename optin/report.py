"""Versions and environment for every report, so a CI log can be trusted later."""
from __future__ import annotations

import importlib.metadata as md
import platform


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("optin", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "timm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        out["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
        out["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return out
